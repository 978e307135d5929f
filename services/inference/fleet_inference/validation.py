"""Validation of /predict bodies: pure, with messages that name the problem and the fix."""
import json
import math
import sys

JSON_TYPES = ("application/json",)


class InputError(ValueError):
    """A bad request body; status is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 422):
        super().__init__(message)
        self.status = status


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


def validate_inputs(payload: object, features: int, max_rows: int,
                    value_range: tuple[float, float] | None = None) -> list[list[float]]:
    """Return the rows of a predict request, or raise InputError naming what is wrong."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InputError('expected a JSON object {"inputs": [[...], ...]}')
    extra = sorted(set(payload) - {"inputs"})
    if extra:
        raise InputError(f"unknown field(s) {extra}: only 'inputs' is accepted")
    rows = payload["inputs"]
    if not isinstance(rows, list) or not rows:
        raise InputError("'inputs' must be a non-empty list of rows")
    if len(rows) > max_rows:
        raise InputError(f"'inputs' has {len(rows)} rows, over the limit of {max_rows}: split the request", 413)
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InputError(f"inputs[{i}] must be a list of {features} numbers")
        if len(row) != features:
            raise InputError(f"inputs[{i}] has {len(row)} values; the model takes {features}")
        for j, v in enumerate(row):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"inputs[{i}][{j}] is {type(v).__name__}, not a number")
            if isinstance(v, int) and abs(v) > sys.float_info.max:
                raise InputError(f"inputs[{i}][{j}] is an integer beyond any float: only finite numbers are accepted")
            if not math.isfinite(v):
                raise InputError(f"inputs[{i}][{j}] is {v}: only finite numbers are accepted")
            if (why := outside(v, value_range)) is not None:
                raise InputError(f"inputs[{i}][{j}] {why}")
        out.append([float(v) for v in row])
    return out
