"""Every package imported is declared, and every one declared is imported (deptry, a well-kept checker):
fleet and fleet_protocol against pyproject.toml ([tool.deptry] there), and the service's image
(services/inference/fleet_inference and the fleet_protocol it holds) against its requirements.txt."""
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPTRY = [sys.executable, "-m", "deptry"]
# The service's runtime needs these without importing them: uvicorn's HTTP parser and event loop.
SERVED_NOT_IMPORTED = "httptools,uvloop"


def test_fleets_imports_and_pyproject_dependencies_match():
    p = subprocess.run([*DEPTRY, "."], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_the_services_imports_and_its_requirements_match(tmp_path):
    """The image's code as the image holds it: fleet_inference and fleet_protocol side by side."""
    service = tmp_path / "service"
    shutil.copytree(ROOT / "services/inference/fleet_inference", service / "fleet_inference")
    shutil.copytree(ROOT / "fleet_protocol", service / "fleet_protocol")
    shutil.copy(ROOT / "services/inference/requirements.txt", service / "requirements.txt")
    p = subprocess.run([*DEPTRY, ".", "--requirements-files", "requirements.txt", "--known-first-party",
                        "fleet_inference,fleet_protocol", "--per-rule-ignores", f"DEP002={SERVED_NOT_IMPORTED.replace(',', '|')}"],
                       cwd=service, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
