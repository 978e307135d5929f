"""Loading a versioned model artifact: manifest, checksum, TorchScript, shape check and warm-up."""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or does not match its manifest."""


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    sha256: str
    file: str
    features: int
    num_classes: int
    accuracy: float
    golden: dict | None = None  # {"file", "size", "accuracy"}: the golden set shipped with the artifact
    input_range: tuple[float, float] | None = None  # the values the model answers for; None: any finite

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = directory / "manifest.json"
        if not path.is_file():
            raise ArtifactError(f"no manifest at {path}: MODEL_PATH must name a directory made by train.py")
        try:
            m = json.loads(path.read_text())
            return cls(name=m["name"], version=str(m["version"]), sha256=m["sha256"], file=m.get("file", "model.pt"),
                       features=int(m["input_shape"][-1]), num_classes=int(m["num_classes"]),
                       accuracy=float(m["accuracy"]), golden=m.get("golden"),
                       input_range=tuple(map(float, m["input_range"])) if "input_range" in m else None)
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise ArtifactError(f"manifest {path} is malformed: {e!r}") from None


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def select_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ArtifactError("FLEET_DEVICE=cuda but torch sees no CUDA device: use auto or cpu, or give the task a GPU")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def load_artifact(model_path: str, device: torch.device) -> tuple[torch.jit.ScriptModule, Manifest]:
    """Read the manifest, verify the checksum and load the TorchScript module onto the device."""
    directory = Path(model_path)
    manifest = Manifest.read(directory)
    file = directory / manifest.file
    if not file.is_file():
        raise ArtifactError(f"model file {file} is missing")
    digest = sha256_of(file)
    if digest != manifest.sha256:
        raise ArtifactError(f"model file {file} is corrupt: sha256 {digest[:12]}… does not match the manifest's "
                            f"{manifest.sha256[:12]}…; rebuild the artifact with train.py")
    try:
        module = torch.jit.load(str(file), map_location=device)
    except Exception as e:  # torch raises several types for a bad archive
        raise ArtifactError(f"torch could not load {file}: {e}") from None
    module.eval()
    return module, manifest


def warm_up(module: torch.jit.ScriptModule, manifest: Manifest, device: torch.device) -> None:
    """Run a first inference and check the output shape against the manifest."""
    with torch.inference_mode():
        try:
            out = module(torch.zeros(2, manifest.features, device=device))
        except Exception as e:
            raise ArtifactError(f"the model rejects input of shape [2, {manifest.features}] "
                                f"named in its manifest: {e}") from None
    if tuple(out.shape) != (2, manifest.num_classes):
        raise ArtifactError(f"the model answers shape {list(out.shape)}; its manifest says "
                            f"[2, {manifest.num_classes}]")
