"""The image's lock (services/inference/requirements.lock) holds every pin of requirements.txt, each
with a hash: a requirements.txt changed without `scripts/lock-requirements.sh` fails here, not in a build."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found


def test_every_pin_of_requirements_txt_is_locked_at_its_version():
    wanted, locked = pins(ROOT / "services/inference/requirements.txt"), pins(ROOT / "services/inference/requirements.lock")
    assert wanted and {name: locked.get(name) for name in wanted} == wanted


def test_every_locked_wheel_has_a_sha256():
    lines = [line for line in (ROOT / "services/inference/requirements.lock").read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(re.search(r"--hash=sha256:[0-9a-f]{64}$", line) for line in lines)
