"""The image's locks hold every pin of requirements.txt, each with a hash: requirements.lock (torch's CPU
build) and requirements-cuda.lock (its CUDA build, for scripts/images.sh cuda). A requirements.txt changed
without `scripts/lock-requirements.sh` (and `--cuda`) fails here, not in a build."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKS = ["requirements.lock", "requirements-cuda.lock"]


def pins(path: Path) -> dict[str, str]:
    found = {}
    for line in path.read_text().splitlines():
        m = re.match(r"([A-Za-z0-9_.\-]+)==([^\s;]+)", line.strip())
        if m:
            found[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(2)
    return found


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_of_requirements_txt_is_locked_at_its_version(lock):
    wanted, locked = pins(ROOT / "services/inference/requirements.txt"), pins(ROOT / "services/inference" / lock)
    assert wanted and {name: locked.get(name) for name in wanted} == wanted


@pytest.mark.parametrize("lock", LOCKS)
def test_every_locked_wheel_has_a_sha256(lock):
    lines = [line for line in (ROOT / "services/inference" / lock).read_text().splitlines()
             if line and not line.startswith("#")]
    assert lines and all(re.search(r"--hash=sha256:[0-9a-f]{64}$", line) for line in lines)


def test_the_cuda_lock_is_torch_with_cuda_and_the_cpu_lock_is_not():
    """Same torch version, another wheel: the CUDA build's, with the NVIDIA libraries it needs."""
    cpu, cuda = (pins(ROOT / "services/inference" / lock) for lock in LOCKS)
    hashes = [re.search(r"^torch==\S+ --hash=sha256:(\w+)", (ROOT / "services/inference" / lock).read_text(), re.M)[1]
              for lock in LOCKS]
    assert cpu["torch"] == cuda["torch"] and hashes[0] != hashes[1]
    assert all(any(n.startswith(lib) for n in cuda) for lib in ("nvidia-cuda-runtime", "nvidia-cudnn", "nvidia-cublas"))
    assert not any(n.startswith("nvidia") for n in cpu)
