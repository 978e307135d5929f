"""The Open Inference Protocol (KServe v2) over HTTP, for the one model a replica serves: pure
translation between its JSON documents and the rows /predict takes, with errors that name the fix.

The model's tensors: its manifest's inputs (one named `input`, of its input_dtype, FP32 unless it says
otherwise, and shape [-1, *its input_shape]; or several, named as its `inputs` say); a classifier's two
outputs, `probabilities` (FP32, [-1, classes]) and `label` (INT64, [-1], the class with the highest
probability), or a model of plain tensor outputs' one, `output` (FP32, [-1, *output_shape]). A request may send each input in any numeric datatype (converted to the
model's, as Triton does for a compatible type, when every value fits it) and its
data flat (row-major, the protocol's form) or nested to the tensor's shape, or as raw little-endian bytes
after the JSON (the protocol's binary tensor data extension, what Triton's own clients send by default).
"""
import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .model_store import Input, Manifest
from .validation import INTEGERS, InputError, accepted, byte_count, outside, same_rows, unfit

SERVER = "fleet-inference"
PLATFORMS = {".pt2": "pytorch_export"}  # the weights' format by file suffix; TorchScript otherwise
OUTPUTS = ("probabilities", "label")  # a classifier's
TENSOR_OUTPUT = "output"  # a model of plain tensor outputs has this one
NUMERIC = {"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
BINARY_HEADER = "inference-header-content-length"  # the binary extension: the JSON's length in the body
DTYPES = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8", "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8",
          "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8"}


def split_body(body: bytes, header: str | None) -> tuple[object, bytes]:
    """The request's JSON document and the binary tensor data after it (b"" without the extension)."""
    size = len(body)
    if header is not None:
        declared = byte_count(header)
        if declared is None or declared > len(body):
            raise InputError(f"Inference-Header-Content-Length is {header!r}: it must be the length of the JSON "
                             f"at the start of the body (at most {len(body)})", 400)
        size = declared
    try:
        return json.loads(body[:size]), body[size:]
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"the inference request is not valid JSON ({e})", 400) from None
    except RecursionError:
        raise InputError("the inference request is nested too deeply", 400) from None


def server_metadata(version: str) -> dict:
    return {"name": SERVER, "version": version, "extensions": []}


def output_names(m: Manifest) -> tuple[str, ...]:
    return OUTPUTS if m.classifies else (TENSOR_OUTPUT,)


def model_metadata(m: Manifest) -> dict:
    outputs = ([{"name": "probabilities", "datatype": "FP32", "shape": [-1, m.num_classes]},
                {"name": "label", "datatype": "INT64", "shape": [-1]}] if m.classifies
               else [{"name": TENSOR_OUTPUT, "datatype": "FP32", "shape": [-1, *m.output_shape]}])
    platform = PLATFORMS.get(Path(m.file).suffix, "pytorch_torchscript")
    return {"name": m.name, "versions": [m.version], "platform": platform,
            "inputs": [{"name": i.name, "datatype": i.dtype, "shape": [-1, *i.shape]} for i in m.inputs],
            "outputs": outputs}


def check_model(m: Manifest, name: str, version: str | None) -> None:
    """A 404 unless the path names the model this replica serves (and its version, when it names one)."""
    if name != m.name:
        raise InputError(f"no model {name!r} here: this server serves {m.name!r} (GET /v2/models/{m.name})", 404)
    if version is not None and version != m.version:
        raise InputError(f"model {m.name!r} version {version!r} is not served here: this replica serves version "
                         f"{m.version!r}; leave the version out of the path to be served by any", 404)


def parse_infer(payload: object, m: Manifest, max_rows: int,
                binary: bytes = b"") -> tuple[list[np.ndarray], list[str], object]:
    """The rows of an inference request, one array [rows, values of a row] per model input in the manifest's
    order (each tensor's data in the JSON, or in `binary`, flattened row-major), the outputs it asks for and
    its id; InputError (400, or 413 for too many rows) naming what is wrong."""
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        tensors = ", ".join(f'{{"name": "{i.name}", "shape": {i.batched}, "datatype": "{i.dtype}", "data": [...]}}'
                            for i in m.inputs)
        raise InputError(f'expected an inference request {{"inputs": [{tensors}]}}', 400)
    given = payload["inputs"]
    names = [i.name for i in m.inputs]
    sent = [t.get("name") if isinstance(t, dict) else None for t in given]
    if len(given) != len(names) or not all(isinstance(t, dict) for t in given):
        raise InputError(f"the model takes exactly one input tensor, {names[0]!r}; the request has {len(given)}"
                         if m.single else
                         f"the model takes {len(names)} input tensors, {names}; the request has {len(given)}", 400)
    if sorted(map(str, sent)) != sorted(names):
        unknown = next(n for n in sent if n not in names or sent.count(n) > 1)
        raise InputError(f"unknown input {unknown!r}: the model's input is named {names[0]!r}" if m.single else
                         f"input {unknown!r} is unknown or sent twice: the model's inputs are {names}", 400)
    chunks = _binary_chunks(given, binary)
    arrays = {t["name"]: _tensor(t, next(i for i in m.inputs if i.name == t["name"]), max_rows, chunk)
              for t, chunk in zip(given, chunks)}
    same_rows({n: len(a) for n, a in arrays.items()}, "input tensors", 400)
    wanted = payload.get("outputs")
    outputs = list(output_names(m))
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise InputError('"outputs" must be a list of {"name": ...}', 400)
        known, outputs = outputs, [o.get("name") for o in wanted]
        unknown = [n for n in outputs if n not in known]
        if unknown:
            raise InputError(f"unknown output(s) {unknown}: the model's outputs are {known}", 400)
    return [arrays[n] for n in names], outputs, payload.get("id")


def _binary_chunks(given: list[dict], binary: bytes) -> list[bytes | None]:
    """Each request tensor's binary data: its binary_data_size bytes of `binary`, in the tensors' order (the
    binary extension), or None for a tensor whose data is in the JSON."""
    chunks, offset = [], 0
    for t in given:
        size = t["parameters"].get("binary_data_size") if isinstance(t.get("parameters"), dict) else None
        if size is None:
            chunks.append(None)
            continue
        if not isinstance(size, int) or isinstance(size, bool) or size < 0 or offset + size > len(binary):
            raise InputError(f"input {t['name']!r} declares binary_data_size {size!r}, but {len(binary) - offset} "
                             "bytes follow the JSON" + (" after the tensors before it" if offset else ""), 400)
        chunks.append(binary[offset:offset + size])
        offset += size
    if offset != len(binary):
        raise InputError(f"{len(binary)} bytes follow the JSON but the inputs' binary_data_size add up to {offset}: "
                         "each tensor sent as binary data declares its size", 400)
    return chunks


def _tensor(t: dict, spec: Input, max_rows: int, binary: bytes | None) -> np.ndarray:
    """One input tensor's rows as an array [rows, values of a row], checked against its spec."""
    name, batched = spec.name, spec.batched
    if t.get("datatype") not in NUMERIC:
        raise InputError(f"input {name!r} has datatype {t.get('datatype')!r}: send {spec.dtype} (or another "
                         f"numeric datatype, converted to {spec.dtype})", 400)
    shape = t.get("shape")
    if (not isinstance(shape, list) or len(shape) != 1 + len(spec.shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        raise InputError(f"input {name!r} has shape {shape!r}: the model takes {batched}", 400)
    rows, features = shape[0], spec.features
    if tuple(shape[1:]) != spec.shape or rows < 1:
        raise InputError(f"input {name!r} has shape {shape}: the model takes {batched} with N >= 1", 400)
    if rows > max_rows:
        raise InputError(f"input {name!r} has {rows} rows, over the limit of {max_rows}: split the request", 413)
    data = t.get("data")
    if binary is not None:
        values = _binary(binary, name, t["datatype"])
    elif isinstance(data, list) and len(data) == rows * features and _numbers(data):
        values = data  # flat, the protocol's own form: no walk through nested lists
    else:
        values = list(_flat(data, rows * features, len(shape), name))
    if len(values) != rows * features:
        raise InputError(f"input {name!r} has {len(values)} values for shape {shape}: send "
                         f"{rows * features}, row-major", 400)
    matrix = _checked(values, spec)
    if matrix is None:
        _first_wrong(values, spec)
        matrix = np.asarray(values, dtype=np.float64)
    return matrix.reshape(rows, features)


def _numbers(values: list) -> bool:
    """Whether every value is a plain int or float (not a bool, a string, a list...)."""
    return set(map(type, values)) <= {int, float}


def _checked(values: list, m: Input) -> np.ndarray | None:
    """The values as an array when every one is a finite number that the model's input datatype holds, inside
    its input range, checked at once (a request's values in C, not one by one in Python); None when any is
    not."""
    if not _numbers(values):
        return None
    try:
        a = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        return None
    lo, hi = accepted(m.dtype, m.range)
    if not (np.isfinite(a).all() and lo <= a.min() and a.max() <= hi):
        return None
    if m.dtype in INTEGERS and not (a == np.trunc(a)).all():
        return None
    return a


def _first_wrong(values: list, m: Input) -> None:
    """InputError naming the first value that is not a finite number that the model's input datatype holds,
    inside its input range."""
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"input {m.name!r} value {i} is {type(v).__name__}, not a number", 400)
        if (isinstance(v, int) and abs(v) > sys.float_info.max) or not math.isfinite(v):
            raise InputError(f"input {m.name!r} value {i} is {v if isinstance(v, float) else 'an integer'} "
                             f"beyond {m.dtype}: only finite {m.dtype} values are accepted", 400)
        if (why := unfit(v, m.dtype) or outside(v, m.range)) is not None:
            raise InputError(f"input {m.name!r} value {i} {why}", 400)


def _binary(binary: bytes, name: str, datatype: str) -> list:
    """A tensor's values from its binary data."""
    width = np.dtype(DTYPES[datatype]).itemsize
    if len(binary) % width:
        raise InputError(f"input {name!r} has {len(binary)} bytes of {datatype}: not a whole number of values", 400)
    return np.frombuffer(binary, dtype=DTYPES[datatype]).tolist()


def _flat(data: object, limit: int, depth: int, name: str) -> Iterable:
    """The values of flat or nested `data` (at most `depth` lists deep), row-major; stops after limit + 1
    (enough to say it is too many)."""
    if not isinstance(data, list):
        raise InputError(f"input {name!r} needs \"data\": a list of numbers, row-major", 400)
    stack, n = [iter(data)], 0
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                if len(stack) >= depth:
                    raise InputError(f"input {name!r} data is nested deeper than its shape", 400)
                stack.append(iter(v))
                break
            n += 1
            if n > limit:
                yield v
                return
            yield v
        else:
            stack.pop()


def infer_response(m: Manifest, values: list[float], rows: int, labels: list[int] | None, names: list[str],
                   request_id: object) -> dict:
    """The answer to an inference request: the model's output `values` (flat, row-major) for `rows` rows
    and, for a classifier, each row's class."""
    tensors = {TENSOR_OUTPUT: {"name": TENSOR_OUTPUT, "datatype": "FP32", "shape": [rows, *m.output_shape],
                               "data": values}}
    if m.classifies:
        tensors = {"probabilities": {**tensors[TENSOR_OUTPUT], "name": "probabilities"},
                   "label": {"name": "label", "datatype": "INT64", "shape": [rows], "data": labels}}
    doc = {"model_name": m.name, "model_version": m.version, "outputs": [tensors[n] for n in names]}
    if request_id is not None:
        doc["id"] = request_id
    return doc
