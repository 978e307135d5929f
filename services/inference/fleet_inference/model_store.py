"""Loading a versioned model artifact: manifest, checksum, TorchScript, shape check and warm-up."""
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or does not match its manifest."""


DTYPES = ("FP32",)  # the input datatypes a manifest may declare (the service feeds the model float32)


@dataclass(frozen=True)
class Manifest:
    """A model package's manifest.json: what the weights are, what they take and what they answer."""
    name: str
    version: str
    sha256: str
    file: str
    input_shape: tuple[int, ...]  # one row's shape, without the batch dimension: [8], or [1, 8, 8] (CHW)
    num_classes: int
    accuracy: float
    golden: dict | None = None  # {"file", "size", "accuracy"}: the golden set shipped with the artifact
    input_range: tuple[float, float] | None = None  # the values the model answers for; None: any finite
    labels: tuple[str, ...] | None = None  # the classes' names, in the order of the model's outputs

    @property
    def features(self) -> int:
        """Values in one row (the product of its shape)."""
        return math.prod(self.input_shape)

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.labels or tuple(str(i) for i in range(self.num_classes))

    @classmethod
    def read(cls, directory: Path) -> "Manifest":
        path = directory / "manifest.json"
        if not path.is_file():
            raise ArtifactError(f"no manifest at {path}: MODEL_PATH must name a model package (see `fleet build`)")
        try:
            return cls.parse(json.loads(path.read_text()))
        except KeyError as e:
            raise ArtifactError(f"manifest {path} lacks the field {e.args[0]!r}") from None
        except (ValueError, IndexError, TypeError) as e:
            raise ArtifactError(f"manifest {path} is malformed: {e}") from None

    @classmethod
    def parse(cls, m: dict) -> "Manifest":
        """The manifest of a parsed manifest.json; ValueError (or KeyError, TypeError) naming the field."""
        shape = tuple(m["input_shape"])
        if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
            raise ValueError(f"input_shape {list(shape)} must list one row's dimensions, positive integers "
                             "(without the batch dimension): e.g. [8] or [1, 8, 8]")
        dtype = m.get("input_dtype", "FP32")
        if dtype not in DTYPES:
            raise ValueError(f"input_dtype {dtype!r} is unknown: the service takes {', '.join(DTYPES)}")
        labels = tuple(map(str, m["labels"])) if m.get("labels") is not None else None
        if labels is not None and len(labels) != int(m["num_classes"]):
            raise ValueError(f"labels names {len(labels)} classes but num_classes is {m['num_classes']}")
        return cls(name=m["name"], version=str(m["version"]), sha256=m["sha256"], file=m.get("file", "model.pt"),
                   input_shape=shape, num_classes=int(m["num_classes"]), accuracy=float(m["accuracy"]),
                   golden=m.get("golden"), labels=labels,
                   input_range=tuple(map(float, m["input_range"])) if "input_range" in m else None)


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


def warm_up(module: torch.jit.ScriptModule, manifest: Manifest, device: torch.device,
            directory: Path | None = None) -> None:
    """Run a first inference and check the output shape against the manifest; with the package's
    directory, a dry run on its golden inputs too (the manifest against the weights)."""
    answer(module, manifest, torch.zeros(2, *manifest.input_shape, device=device))
    if directory is not None and manifest.golden:
        inputs, _ = read_golden(directory, manifest)
        answer(module, manifest, inputs.to(device))


def answer(module: torch.jit.ScriptModule, manifest: Manifest, x: torch.Tensor) -> torch.Tensor:
    """The model's output for a batch `x`, checked against the manifest's shape; ArtifactError else."""
    shape = [-1, *manifest.input_shape]
    with torch.inference_mode():
        try:
            out = module(x)
        except Exception as e:
            raise ArtifactError(f"the model rejects input of shape {list(x.shape)} (its manifest's input_shape "
                                f"{list(manifest.input_shape)}, batched {shape}): {last_line(e)}") from None
    if tuple(out.shape) != (len(x), manifest.num_classes):
        raise ArtifactError(f"the model answers shape {list(out.shape)} for {len(x)} rows; its manifest says "
                            f"[{len(x)}, {manifest.num_classes}] (num_classes)")
    return out


def last_line(e: Exception) -> str:
    """The gist of an error: TorchScript's carry the interpreter's traceback before it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def read_golden(directory: Path, manifest: Manifest) -> tuple[torch.Tensor, list[int]]:
    """The golden set's inputs (a batch of the manifest's shape) and labels; ArtifactError naming the field."""
    path = directory / manifest.golden.get("file", "golden.json")
    try:
        doc = json.loads(path.read_text())
        inputs, labels = torch.tensor(doc["inputs"], dtype=torch.float32), doc["labels"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"golden set {path} (the manifest's golden.file) is unreadable: {e!r}; it needs "
                            '{"inputs": [...], "labels": [...]}') from None
    if tuple(inputs.shape[1:]) != manifest.input_shape or len(inputs) != len(labels):
        raise ArtifactError(f"golden set {path} has inputs of shape {list(inputs.shape)} and {len(labels)} labels: "
                            f"the manifest's input_shape {list(manifest.input_shape)} needs [N, "
                            f"{', '.join(map(str, manifest.input_shape))}] and N labels")
    if not all(isinstance(y, int) and 0 <= y < manifest.num_classes for y in labels):
        raise ArtifactError(f"golden set {path} has labels outside 0..{manifest.num_classes - 1} (num_classes): "
                            "each label is the index of the right class")
    return inputs, labels
