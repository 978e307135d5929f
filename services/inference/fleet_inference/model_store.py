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


def _dimensions(shape: object) -> bool:
    return isinstance(shape, list) and bool(shape) and all(
        isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)


@dataclass(frozen=True)
class Input:
    """One input tensor of a model: its name, one row's shape (without the batch dimension), its datatype and
    the values it answers for (None: any finite value of the datatype)."""
    name: str
    shape: tuple[int, ...]
    dtype: str = "FP32"
    range: tuple[float, float] | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    @property
    def features(self) -> int:
        """Values in one row (the product of its shape)."""
        return math.prod(self.shape)

    @property
    def batched(self) -> str:
        """Its shape with the batch dimension, for messages: [N, 1, 8, 8]."""
        return "[N, " + ", ".join(map(str, self.shape)) + "]"

    @classmethod
    def parse(cls, doc: object, where: str) -> "Input":
        """One entry of a manifest's `inputs`; ValueError naming the field."""
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not doc["name"]:
            raise ValueError(f"{where} must be an object with a name: "
                             '{"name": "tokens", "datatype": "INT64", "shape": [16]}')
        if not _dimensions(doc.get("shape")):
            raise ValueError(f"{where}.shape {doc.get('shape')!r} must list one row's dimensions, positive "
                             "integers (without the batch dimension): e.g. [8] or [1, 8, 8]")
        dtype = doc.get("datatype", "FP32")
        if dtype not in DTYPES:
            raise ValueError(f"{where}.datatype {dtype!r} is unknown: the service takes {', '.join(DTYPES)}")
        value_range = tuple(map(float, doc["range"])) if doc.get("range") is not None else None
        if value_range is not None and (len(value_range) != 2 or value_range[0] > value_range[1]):
            raise ValueError(f"{where}.range {doc['range']!r} must be [lowest, highest]")
        return cls(doc["name"], tuple(doc["shape"]), dtype, value_range)


SINGLE = "input"  # the name of a model's one input when its manifest gives input_shape rather than inputs


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
    # The model's input tensors in the order its forward() takes them: from the manifest's `inputs`, or the
    # one named "input" that input_shape, input_dtype and input_range describe (then the first's fields).
    inputs: tuple[Input, ...] = ()

    def __post_init__(self):
        if len(self.inputs) <= 1:  # one input: the fields describe it (dataclasses.replace of them included)
            name = self.inputs[0].name if self.inputs else SINGLE
            object.__setattr__(self, "inputs", (Input(name, self.input_shape, self.input_dtype, self.input_range),))

    @property
    def torch_dtype(self) -> torch.dtype:
        return self.inputs[0].torch_dtype

    @property
    def single(self) -> bool:
        """Whether the model takes one input tensor (a /predict body's "inputs" is then its rows)."""
        return len(self.inputs) == 1

    @property
    def classifies(self) -> bool:
        return self.output == PROBABILITIES

    @property
    def output_shape(self) -> tuple[int, ...]:
        """One row's output shape: its classes' probabilities, or the declared tensor's."""
        return (self.num_classes,) if self.classifies else self.tensor_shape

    @property
    def features(self) -> int:
        """Values in one row of its first (or only) input."""
        return self.inputs[0].features

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

    @staticmethod
    def _inputs(m: dict) -> dict:
        """The input fields of a manifest: several named tensors (`inputs`), or one (`input_shape`, with
        `input_dtype` and `input_range`)."""
        if "inputs" in m:
            if any(k in m for k in ("input_shape", "input_dtype", "input_range")):
                raise ValueError("the manifest gives both inputs and input_shape/input_dtype/input_range: "
                                 "declare the model's tensors in inputs only")
            if not isinstance(m["inputs"], list) or not m["inputs"]:
                raise ValueError("inputs must list the model's input tensors in the order its forward() takes "
                                 'them: [{"name": ..., "datatype": ..., "shape": [...]}, ...]')
            inputs = tuple(Input.parse(doc, f"inputs[{i}]") for i, doc in enumerate(m["inputs"]))
            names = [i.name for i in inputs]
            if len(set(names)) != len(names):
                raise ValueError(f"inputs names {names}: each input needs a name of its own")
            first = inputs[0]
            return {"input_shape": first.shape, "input_dtype": first.dtype, "input_range": first.range,
                    "inputs": inputs}
        shape = m["input_shape"]
        if not _dimensions(shape):
            raise ValueError(f"input_shape {shape!r} must list one row's dimensions, positive integers "
                             "(without the batch dimension): e.g. [8] or [1, 8, 8]")
        dtype = m.get("input_dtype", "FP32")
        if dtype not in DTYPES:
            raise ValueError(f"input_dtype {dtype!r} is unknown: the service takes {', '.join(DTYPES)}")
        return {"input_shape": tuple(shape), "input_dtype": dtype,
                "input_range": tuple(map(float, m["input_range"])) if "input_range" in m else None}

    @classmethod
    def parse(cls, m: dict) -> "Manifest":
        """The manifest of a parsed manifest.json; ValueError (or KeyError, TypeError) naming the field."""
        common = {"name": m["name"], "version": str(m["version"]), "sha256": m["sha256"],
                  "file": m.get("file", "model.pt"), **cls._inputs(m)}
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


Batch = tuple[torch.Tensor, ...]  # a batch of rows: one tensor per input, in the manifest's order


def zeros(manifest: Manifest, rows: int, device: torch.device | None = None) -> Batch:
    return tuple(torch.zeros(rows, *i.shape, dtype=i.torch_dtype, device=device) for i in manifest.inputs)


def warm_up(module: torch.nn.Module, manifest: Manifest, device: torch.device,
            directory: Path | None = None) -> None:
    """Run a first inference and check the output shape against the manifest; with the package's
    directory, a dry run on its golden inputs too (the manifest against the weights)."""
    answer(module, manifest, zeros(manifest, 2, device))
    if directory is not None and manifest.golden:
        inputs, _ = read_golden(directory, manifest)
        answer(module, manifest, tuple(x.to(device) for x in inputs))


def answer(module: torch.nn.Module, manifest: Manifest, xs: Batch) -> torch.Tensor:
    """The model's output for a batch (one tensor per input), checked against the manifest's shape;
    ArtifactError else."""
    rows = len(xs[0])
    with torch.inference_mode():
        try:
            out = module(*xs)
        except Exception as e:
            if manifest.single:
                x, m = xs[0], manifest
                raise ArtifactError(f"the model rejects input of shape {list(x.shape)} and datatype {m.input_dtype} "
                                    f"(its manifest's input_shape {list(m.input_shape)}, batched "
                                    f"{[-1, *m.input_shape]}, and input_dtype): {last_line(e)}") from None
            given = ", ".join(f"{i.name} {list(x.shape)} {i.dtype}" for x, i in zip(xs, manifest.inputs))
            raise ArtifactError(f"the model rejects inputs of shape and datatype {given} (its manifest's inputs): "
                                f"{last_line(e)}") from None
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (rows, *manifest.output_shape):
        field = "num_classes" if manifest.classifies else "output_shape"
        got = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else f"a {type(out).__name__}, not a tensor,"
        raise ArtifactError(f"the model answers {got} for {rows} rows; its manifest says "
                            f"{[rows, *manifest.output_shape]} ({field})")
    return out


def last_line(e: Exception) -> str:
    """The gist of an error: TorchScript's carry the interpreter's traceback before it."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[-1][:300] if lines else type(e).__name__


def read_golden(directory: Path, manifest: Manifest) -> tuple[Batch, list[int] | torch.Tensor]:
    """The golden set's inputs (a batch of the manifest's inputs: for several, "inputs" maps each name to
    its rows) and labels (class indices), or for a model of tensor outputs the outputs expected;
    ArtifactError naming the field."""
    path = directory / manifest.golden.get("file", "golden.json")
    expected = "labels" if manifest.classifies else "outputs"
    form = "[...]" if manifest.single else "{" + ", ".join(f'"{i.name}": [...]' for i in manifest.inputs) + "}"
    try:
        doc = json.loads(path.read_text())
        raw = doc["inputs"]
        given = [raw] if manifest.single else [raw[i.name] for i in manifest.inputs]
        inputs, answers = tuple(torch.tensor(v, dtype=i.torch_dtype) for v, i in zip(given, manifest.inputs)), doc[expected]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ArtifactError(f"golden set {path} (the manifest's golden.file) is unreadable: {e!r}; it needs "
                            f'{{"inputs": {form}, "{expected}": [...]}}') from None
    for x, i in zip(inputs, manifest.inputs):
        if tuple(x.shape[1:]) != i.shape or len(x) != len(answers):
            what = "inputs" if manifest.single else f"inputs {i.name!r}"
            field = "input_shape" if manifest.single else f"inputs {i.name!r}"
            raise ArtifactError(f"golden set {path} has {what} of shape {list(x.shape)} and {len(answers)} "
                                f"{expected}: the manifest's {field} {list(i.shape)} needs [N, "
                                f"{', '.join(map(str, i.shape))}] and N {expected}")
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
