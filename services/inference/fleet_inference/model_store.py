"""Loading a versioned model artifact: manifest, checksum, weights (TorchScript or a torch.export program),
shape check and warm-up."""
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or does not match its manifest."""


# The input datatypes a manifest may declare (the Open Inference Protocol's names) and the torch dtype the
# model is fed: a text model's INT64 token ids, an image model's UINT8 pixels, a half-precision model's FP16.
DTYPES = {"FP16": torch.float16, "FP32": torch.float32, "FP64": torch.float64, "UINT8": torch.uint8,
          "INT32": torch.int32, "INT64": torch.int64}
PROBABILITIES, TENSOR = "probabilities", "tensor"  # what a model's output means: classes, or plain numbers


@dataclass(frozen=True)
class Manifest:
    """A model package's manifest.json: what the weights are, what they take and what they answer."""
    name: str
    version: str
    sha256: str
    file: str
    input_shape: tuple[int, ...]  # one row's shape, without the batch dimension: [8], or [1, 8, 8] (CHW)
    num_classes: int  # 0 for a model of plain tensor outputs
    accuracy: float | None
    golden: dict | None = None  # {"file", "size", "accuracy"}, or with "tolerance" for tensor outputs
    input_range: tuple[float, float] | None = None  # the values the model answers for; None: any finite
    labels: tuple[str, ...] | None = None  # the classes' names, in the order of the model's outputs
    output: str = PROBABILITIES  # "probabilities" (one per class, [N, num_classes]) or "tensor"
    tensor_shape: tuple[int, ...] = ()  # a tensor output's shape for one row (output "tensor" only)
    input_dtype: str = "FP32"  # one of DTYPES

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.input_dtype]

    @property
    def classifies(self) -> bool:
        return self.output == PROBABILITIES

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One row's output shape: its classes' probabilities, or the declared tensor's."""
        return (self.num_classes,) if self.classifies else self.tensor_shape

    @property
    def features(self) -> int:
        """Values in one row (the product of its shape)."""
        return math.prod(self.input_shape)

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
        common = {"name": m["name"], "version": str(m["version"]), "sha256": m["sha256"],
                  "file": m.get("file", "model.pt"), "input_shape": shape, "input_dtype": dtype,
                  "input_range": tuple(map(float, m["input_range"])) if "input_range" in m else None}
        output = m.get("output", PROBABILITIES)
        if output == TENSOR:
            tensor_shape = tuple(m["output_shape"])
            if not tensor_shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0
                                           for d in tensor_shape):
                raise ValueError(f"output_shape {list(tensor_shape)} must list one row's output dimensions, "
                                 "positive integers: e.g. [3]")
            tolerance = (m.get("golden") or {}).get("tolerance")
            if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or tolerance < 0:
                raise ValueError(f"golden.tolerance {tolerance!r} must be a number >= 0: how far (absolute, per "
                                 "value) a canary's outputs may be from the stable's on the golden inputs")
            return cls(**common, num_classes=0, accuracy=None, golden=m["golden"], output=TENSOR,
                       tensor_shape=tensor_shape)
        if output != PROBABILITIES:
            raise ValueError(f"output {output!r} is unknown: {PROBABILITIES!r} (class probabilities, the default) "
                             f"or {TENSOR!r} (plain numbers, with output_shape)")
        labels = tuple(map(str, m["labels"])) if m.get("labels") is not None else None
        if labels is not None and len(labels) != int(m["num_classes"]):
            raise ValueError(f"labels names {len(labels)} classes but num_classes is {m['num_classes']}")
        return cls(**common, num_classes=int(m["num_classes"]), accuracy=float(m["accuracy"]),
                   golden=m.get("golden"), labels=labels)


def sha256_of(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def select_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ArtifactError("FLEET_DEVICE=cuda but torch sees no CUDA device: use auto or cpu, or give the task a GPU")
    if wanted == "auto":
        wanted = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(wanted)


def load_artifact(model_path: str, device: torch.device) -> tuple[torch.nn.Module, Manifest]:
    """Read the manifest, verify the checksum and load the weights (TorchScript or torch.export) onto the
    device."""
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
        return load_module(file, device), manifest
    except Exception as e:  # torch raises several types for a bad archive
        raise ArtifactError(f"torch could not load {file}: {e}") from None


def load_module(file: Path, device: torch.device) -> torch.nn.Module:
    """The weights as a module ready for inference: a torch.export program (a `.pt2` file, from
    torch.export.save; its graph was captured in eval mode) or TorchScript (any other name)."""
    if file.suffix == ".pt2":
        return torch.export.load(str(file)).module().to(device)
    module = torch.jit.load(str(file), map_location=device)
    module.eval()
    return module


def warm_up(module: torch.nn.Module, manifest: Manifest, device: torch.device,
            directory: Path | None = None) -> None:
    """Run a first inference and check the output shape against the manifest; with the package's
    directory, a dry run on its golden inputs too (the manifest against the weights)."""
    answer(module, manifest, torch.zeros(2, *manifest.input_shape, dtype=manifest.torch_dtype, device=device))
    if directory is not None and manifest.golden:
        inputs, _ = read_golden(directory, manifest)
        answer(module, manifest, inputs.to(device))


def answer(module: torch.nn.Module, manifest: Manifest, x: torch.Tensor) -> torch.Tensor:
    """The model's output for a batch `x`, checked against the manifest's shape; ArtifactError else."""
    shape = [-1, *manifest.input_shape]
    with torch.inference_mode():
        try:
            out = module(x)
        except Exception as e:
            raise ArtifactError(f"the model rejects input of shape {list(x.shape)} and datatype {manifest.input_dtype} "
                                f"(its manifest's input_shape {list(manifest.input_shape)}, batched {shape}, and "
                                f"input_dtype): {last_line(e)}") from None
    if tuple(out.shape) != (len(x), *manifest.output_shape):
        field = "num_classes" if manifest.classifies else "output_shape"
        raise ArtifactError(f"the model answers shape {list(out.shape)} for {len(x)} rows; its manifest says "
                            f"{[len(x), *manifest.output_shape]} ({field})")
    return out


def last_line(e: Exception) -> str:
    """The gist of an error: TorchScript's carry the interpreter's traceback before it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def read_golden(directory: Path, manifest: Manifest) -> tuple[torch.Tensor, list[int] | torch.Tensor]:
    """The golden set's inputs (a batch of the manifest's shape) and labels (class indices), or for a model
    of tensor outputs the outputs expected; ArtifactError naming the field."""
    path = directory / manifest.golden.get("file", "golden.json")
    expected = "labels" if manifest.classifies else "outputs"
    try:
        doc = json.loads(path.read_text())
        inputs, answers = torch.tensor(doc["inputs"], dtype=manifest.torch_dtype), doc[expected]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"golden set {path} (the manifest's golden.file) is unreadable: {e!r}; it needs "
                            f'{{"inputs": [...], "{expected}": [...]}}') from None
    if tuple(inputs.shape[1:]) != manifest.input_shape or len(inputs) != len(answers):
        raise ArtifactError(f"golden set {path} has inputs of shape {list(inputs.shape)} and {len(answers)} "
                            f"{expected}: the manifest's input_shape {list(manifest.input_shape)} needs [N, "
                            f"{', '.join(map(str, manifest.input_shape))}] and N {expected}")
    if not manifest.classifies:
        try:
            outputs = torch.tensor(answers, dtype=torch.float32)
        except (ValueError, TypeError) as e:
            raise ArtifactError(f"golden set {path}: outputs are not numbers of one shape ({e})") from None
        if tuple(outputs.shape[1:]) != manifest.output_shape:
            raise ArtifactError(f"golden set {path} has outputs of shape {list(outputs.shape)}: the manifest's "
                                f"output_shape {list(manifest.output_shape)} needs [N, "
                                f"{', '.join(map(str, manifest.output_shape))}]")
        return inputs, outputs
    if not all(isinstance(y, int) and 0 <= y < manifest.num_classes for y in answers):
        raise ArtifactError(f"golden set {path} has labels outside 0..{manifest.num_classes - 1} (num_classes): "
                            "each label is the index of the right class")
    return inputs, answers
