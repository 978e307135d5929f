"""The Open Inference Protocol (KServe v2) over HTTP, for the one model a replica serves: pure
translation between its JSON documents and the rows /predict takes, with errors that name the fix.

The model's tensors: one input `input` (the manifest's input_dtype, FP32 unless it says otherwise, shape
[-1, *its input_shape]); a classifier's two outputs, `probabilities` (FP32, [-1, classes]) and `label`
(INT64, [-1], the class with the highest probability), or a model of plain tensor outputs' one, `output`
(FP32, [-1, *output_shape]). A request may send its input in any numeric datatype (converted to the
model's, as Triton does for a compatible type, when every value fits it) and its
data flat (row-major, the protocol's form) or nested to the tensor's shape, or as raw little-endian bytes
after the JSON (the protocol's binary tensor data extension, what Triton's own clients send by default).
"""
import json
import math
import sys
from collections.abc import Iterable

import numpy as np

from .model_store import Manifest
from .validation import INTEGERS, InputError, accepted, outside, unfit

SERVER = "fleet-inference"
PLATFORM = "pytorch_torchscript"
INPUT = "input"
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
        if not header.isdigit() or int(header) > len(body):
            raise InputError(f"Inference-Header-Content-Length is {header!r}: it must be the length of the JSON "
                             f"at the start of the body (at most {len(body)})", 400)
        size = int(header)
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
    return {"name": m.name, "versions": [m.version], "platform": PLATFORM,
            "inputs": [{"name": INPUT, "datatype": m.input_dtype, "shape": [-1, *m.input_shape]}], "outputs": outputs}


def check_model(m: Manifest, name: str, version: str | None) -> None:
    """A 404 unless the path names the model this replica serves (and its version, when it names one)."""
    if name != m.name:
        raise InputError(f"no model {name!r} here: this server serves {m.name!r} (GET /v2/models/{m.name})", 404)
    if version is not None and version != m.version:
        raise InputError(f"model {m.name!r} version {version!r} is not served here: this replica serves version "
                         f"{m.version!r}; leave the version out of the path to be served by any", 404)


def parse_infer(payload: object, m: Manifest, max_rows: int,
                binary: bytes = b"") -> tuple[np.ndarray, list[str], object]:
    """The rows of an inference request as an array [rows, values of a row] (its tensor's data in the JSON,
    or in `binary`, flattened row-major), the outputs it asks for and its id; InputError (400, or 413 for
    too many rows) naming what is wrong."""
    batched = "[N, " + ", ".join(map(str, m.input_shape)) + "]"
    if not isinstance(payload, dict) or not isinstance(payload.get("inputs"), list):
        raise InputError('expected an inference request {"inputs": [{"name": "input", "shape": [N, '
                         f'{batched[4:]}, "datatype": "{m.input_dtype}", "data": [...]}}]}}', 400)
    inputs = payload["inputs"]
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f"the model takes exactly one input tensor, {INPUT!r}; the request has {len(inputs)}", 400)
    t = inputs[0]
    if t.get("name") != INPUT:
        raise InputError(f"unknown input {t.get('name')!r}: the model's input is named {INPUT!r}", 400)
    if t.get("datatype") not in NUMERIC:
        raise InputError(f"input {INPUT!r} has datatype {t.get('datatype')!r}: send {m.input_dtype} (or another "
                         f"numeric datatype, converted to {m.input_dtype})", 400)
    shape = t.get("shape")
    if (not isinstance(shape, list) or len(shape) != 1 + len(m.input_shape)
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape)):
        raise InputError(f"input {INPUT!r} has shape {shape!r}: the model takes {batched}", 400)
    rows, features = shape[0], m.features
    if tuple(shape[1:]) != m.input_shape or rows < 1:
        raise InputError(f"input {INPUT!r} has shape {shape}: the model takes {batched} with N >= 1", 400)
    if rows > max_rows:
        raise InputError(f"input {INPUT!r} has {rows} rows, over the limit of {max_rows}: split the request", 413)
    size = (t.get("parameters") or {}).get("binary_data_size") if isinstance(t.get("parameters"), dict) else None
    data = t.get("data")
    if size is not None:
        values = _binary(binary, size, t["datatype"])
    elif isinstance(data, list) and len(data) == rows * features and _numbers(data):
        values = data  # flat, the protocol's own form: no walk through nested lists
    else:
        values = list(_flat(data, rows * features, len(shape)))
    if len(values) != rows * features:
        raise InputError(f"input {INPUT!r} has {len(values)} values for shape {shape}: send "
                         f"{rows * features}, row-major", 400)
    matrix = _checked(values, m)
    if matrix is None:
        _first_wrong(values, m)
        matrix = np.asarray(values, dtype=np.float64)
    wanted = payload.get("outputs")
    names = list(output_names(m))
    if wanted is not None:
        if not isinstance(wanted, list) or not all(isinstance(o, dict) for o in wanted):
            raise InputError('"outputs" must be a list of {"name": ...}', 400)
        known, names = names, [o.get("name") for o in wanted]
        unknown = [n for n in names if n not in known]
        if unknown:
            raise InputError(f"unknown output(s) {unknown}: the model's outputs are {known}", 400)
    return matrix.reshape(rows, features), names, payload.get("id")


def _numbers(values: list) -> bool:
    """Whether every value is a plain int or float (not a bool, a string, a list...)."""
    return set(map(type, values)) <= {int, float}


def _checked(values: list, m: Manifest) -> np.ndarray | None:
    """The values as an array when every one is a finite number that the model's input datatype holds, inside
    its input range, checked at once (a request's values in C, not one by one in Python); None when any is
    not."""
    if not _numbers(values):
        return None
    try:
        a = np.asarray(values, dtype=np.float64)
    except OverflowError:  # an integer beyond any float
        return None
    lo, hi = accepted(m.input_dtype, m.input_range)
    if not (np.isfinite(a).all() and lo <= a.min() and a.max() <= hi):
        return None
    if m.input_dtype in INTEGERS and not (a == np.trunc(a)).all():
        return None
    return a


def _first_wrong(values: list, m: Manifest) -> None:
    """InputError naming the first value that is not a finite number that the model's input datatype holds,
    inside its input range."""
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise InputError(f"input {INPUT!r} value {i} is {type(v).__name__}, not a number", 400)
        if (isinstance(v, int) and abs(v) > sys.float_info.max) or not math.isfinite(v):
            raise InputError(f"input {INPUT!r} value {i} is {v if isinstance(v, float) else 'an integer'} "
                             f"beyond {m.input_dtype}: only finite {m.input_dtype} values are accepted", 400)
        if (why := unfit(v, m.input_dtype) or outside(v, m.input_range)) is not None:
            raise InputError(f"input {INPUT!r} value {i} {why}", 400)


def _binary(binary: bytes, size: object, datatype: str) -> list:
    """A tensor's values from the binary data after the JSON (the request's only tensor: all of it)."""
    if not isinstance(size, int) or isinstance(size, bool) or size != len(binary):
        raise InputError(f"input {INPUT!r} declares binary_data_size {size!r}, but {len(binary)} bytes follow the "
                         "JSON", 400)
    width = np.dtype(DTYPES[datatype]).itemsize
    if size % width:
        raise InputError(f"input {INPUT!r} has {size} bytes of {datatype}: not a whole number of values", 400)
    return np.frombuffer(binary, dtype=DTYPES[datatype]).tolist()


def _flat(data: object, limit: int, depth: int) -> Iterable:
    """The values of flat or nested `data` (at most `depth` lists deep), row-major; stops after limit + 1
    (enough to say it is too many)."""
    if not isinstance(data, list):
        raise InputError(f"input {INPUT!r} needs \"data\": a list of numbers, row-major", 400)
    stack, n = [iter(data)], 0
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                if len(stack) >= depth:
                    raise InputError(f"input {INPUT!r} data is nested deeper than its shape", 400)
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
