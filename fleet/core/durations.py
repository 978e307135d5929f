"""Go-style durations as Docker and Consul write them ("1m30s", "500ms", "2h"), and Docker's nanoseconds,
read as seconds. Pure."""
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")


def parse(text: str | int | float) -> float:
    """Seconds in a duration; a bare number is seconds. Raises ValueError naming the bad text."""
    if isinstance(text, (int, float)):
        return float(text)
    s = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        return float(s)
    parts = _PART.findall(s)
    if not s or "".join(n + u for n, u in parts) != s:
        raise ValueError(f"{text!r} is not a duration: write e.g. 30s, 1m30s or 500ms")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def from_nanos(ns: int | None) -> float | None:
    return None if ns is None else ns / 1e9
