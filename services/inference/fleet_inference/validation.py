"""Validation of /predict bodies: pure, with messages that name the problem and the fix."""
import json
import math
import sys
from collections.abc import Sequence

JSON_TYPES = ("application/json",)
FP32_MAX = 3.4028234663852886e38
EXACT = 2 ** 53 - 1  # the largest of the integers a float carries exactly: an integer input travels as one
FLOATS = {"FP16": 65504.0, "FP32": FP32_MAX, "FP64": sys.float_info.max}  # each one's largest magnitude
INTEGERS = {"UINT8": (0, 255), "INT32": (-2 ** 31, 2 ** 31 - 1), "INT64": (-EXACT, EXACT)}


class InputError(ValueError):
    """A bad request body; status is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


def byte_count(text: str) -> int | None:
    """`text` as a count of bytes when it is ASCII decimal digits only, else None. Pure. (`str.isdigit()` alone
    takes '²' and other Unicode digits, which `int()` then refuses: a 500 from one header byte.)"""
    return int(text) if text.isascii() and text.isdigit() else None


def parse_body(body: bytes, max_bytes: int) -> object:
    if len(body) > max_bytes:
        raise InputError(f"body is {len(body)} bytes, over the limit of {max_bytes}: send fewer rows", 413)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(f"body is not valid JSON ({e}); send {{\"inputs\": [[...], ...]}}", 400) from None
    except RecursionError:
        raise InputError("body is nested too deeply; send {\"inputs\": [[8 numbers], ...]}, two levels deep", 400) from None


def check_content_type(header: str | None) -> None:
    """JSON, or no content type at all (curl -d without -H); anything else is a 415 naming the fix. Pure."""
    kind = (header or "").split(";", 1)[0].strip().lower()
    if kind and kind not in JSON_TYPES and not kind.endswith("+json"):
        raise InputError(f"content type {kind!r} is not JSON: send Content-Type: application/json", 415)


def outside(v: float, value_range: tuple[float, float] | None) -> str | None:
    """Why a finite value is outside the model's declared input range, or None. Pure."""
    if value_range is None or value_range[0] <= v <= value_range[1]:
        return None
    return f"is {v:g}, outside the model's input range [{value_range[0]:g}, {value_range[1]:g}] (its manifest's input_range)"


def limits(dtype: str) -> tuple[float, float]:
    """The values the model's input datatype holds (an integer type's as floats carry them). Pure."""
    return INTEGERS[dtype] if dtype in INTEGERS else (-FLOATS[dtype], FLOATS[dtype])


def accepted(dtype: str, value_range: tuple[float, float] | None) -> tuple[float, float]:
    """The values a request may send: those the datatype holds, inside the model's input range. Pure."""
    lo, hi = limits(dtype)
    return (max(value_range[0], lo), min(value_range[1], hi)) if value_range else (lo, hi)


def unfit(v: float, dtype: str) -> str | None:
    """Why a finite number is not a value of the model's input datatype `dtype` (beyond it, or not whole for
    an integer type), or None; judged on the float it travels as, as the check of a whole tensor does. Pure."""
    lo, hi, v = *limits(dtype), float(v)
    if dtype not in INTEGERS:
        return None if lo <= v <= hi else f"is {v:g} beyond {dtype}: only finite {dtype} values are accepted"
    if not v.is_integer():
        return f"is {v:g}, not a whole number: the model takes {dtype} (its manifest's input_dtype)"
    if not lo <= v <= hi:
        return f"is {v:g}, outside {dtype}'s values [{lo:g}, {hi:g}] (the model takes {dtype})"
    return None


def validate_inputs(payload: object, shape: tuple[int, ...] | int, max_rows: int,
                    value_range: tuple[float, float] | None = None, dtype: str = "FP32") -> list[list[float]]:
    """Return the rows of a predict request, each flat (row-major), or raise InputError naming what is wrong.
    `shape`: one row's shape from the manifest ([8] for 8 numbers, [1, 8, 8] for a one-channel image);
    `dtype`: the model's input datatype, whose values each number must be."""
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    nested = "[" * len(shape) + "..." + "]" * len(shape)
    rows = _only_inputs(payload, f"[{nested}, ...]")
    return _rows(rows, "inputs", shape, max_rows, value_range, dtype)


def validate_named(payload: object, inputs: Sequence, max_rows: int) -> list[list[list[float]]]:
    """The rows of a predict request for a model of several inputs, {"inputs": {name: rows, ...}}: for each
    of `inputs` (the manifest's, each with name, shape, dtype and range), its rows each flat; InputError
    naming what is wrong."""
    names = [i.name for i in inputs]
    form = "{" + ", ".join(f'"{n}": [...]' for n in names) + "}"
    given = _only_inputs(payload, form)
    if not isinstance(given, dict):
        raise InputError(f"'inputs' must map each of the model's inputs to its rows: {form}")
    unknown, missing = sorted(set(given) - set(names)), [n for n in names if n not in given]
    if unknown or missing:
        raise InputError(f"'inputs' names {sorted(given)}: the model's inputs are {names}"
                         + (f"; unknown {unknown}" if unknown else "") + (f"; missing {missing}" if missing else ""))
    out = [_rows(given[i.name], f"inputs[{i.name!r}]", tuple(i.shape), max_rows, i.range, i.dtype) for i in inputs]
    same_rows({n: len(rows) for n, rows in zip(names, out)}, "inputs")
    return out


def same_rows(counts: dict[str, int], what: str, status: int = 422) -> None:
    """InputError unless every input of a request has as many rows (`counts`: rows by input name). Pure."""
    if len(set(counts.values())) > 1:
        raise InputError(f"the {what} have different numbers of rows {counts}: each row needs a value of every "
                         "input", status)


def _only_inputs(payload: object, form: str) -> object:
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InputError(f'expected a JSON object {{"inputs": {form}}}')
    extra = sorted(set(payload) - {"inputs"})
    if extra:
        raise InputError(f"unknown field(s) {extra}: only 'inputs' is accepted")
    return payload["inputs"]


def _rows(rows: object, field: str, shape: tuple[int, ...], max_rows: int,
          value_range: tuple[float, float] | None, dtype: str) -> list[list[float]]:
    """The rows of `field` ("inputs", or inputs['name']), each flat; InputError naming what is wrong."""
    label = f"'{field}'" if field == "inputs" else field
    if not isinstance(rows, list) or not rows:
        raise InputError(f"{label} must be a non-empty list of rows")
    if len(rows) > max_rows:
        raise InputError(f"{label} has {len(rows)} rows, over the limit of {max_rows}: split the request", 413)
    out = []
    for i, row in enumerate(rows):
        flat: list[float] = []
        _values(row, shape, f"{field}[{i}]", shape, flat, value_range, dtype)
        out.append(flat)
    return out


def _values(v: object, dims: tuple[int, ...], where: str, shape: tuple[int, ...], out: list[float],
            value_range: tuple[float, float] | None, dtype: str) -> None:
    """Append the numbers of `v` (nested as `dims`) to `out`, or raise InputError naming where it is wrong."""
    if not isinstance(v, list):
        raise InputError(f"{where} must be a list of {dims[0]} " + ("numbers" if len(dims) == 1 else "lists")
                         + f": each row has shape {list(shape)}")
    if len(v) != dims[0]:
        raise InputError(f"{where} has {len(v)} values; the model takes {dims[0]} there (each row has shape "
                         f"{list(shape)})" if len(shape) > 1 else f"{where} has {len(v)} values; the model takes {dims[0]}")
    if len(dims) > 1:
        for j, item in enumerate(v):
            _values(item, dims[1:], f"{where}[{j}]", shape, out, value_range, dtype)
        return
    lo, hi = accepted(dtype, value_range)
    floats = dtype not in INTEGERS
    for j, x in enumerate(v):  # the innermost dimension: the hot loop, no call a value
        if floats and type(x) is float and lo <= x <= hi:  # finite and in range (NaN fails the comparison)
            out.append(x)
            continue
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise InputError(f"{where}[{j}] is {type(x).__name__}, not a number")
        if isinstance(x, int) and abs(x) > sys.float_info.max:
            raise InputError(f"{where}[{j}] is an integer beyond any float: only finite numbers are accepted")
        if not math.isfinite(x):
            raise InputError(f"{where}[{j}] is {x}: only finite numbers are accepted")
        if (why := unfit(x, dtype)) is not None:
            raise InputError(f"{where}[{j}] {why}")
        if (why := outside(x, value_range)) is not None:
            raise InputError(f"{where}[{j}] {why}")
        out.append(float(x))
