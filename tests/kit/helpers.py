"""Test helpers: waiting on a condition with a deadline, a bounded load loop, an HTTP receiver on
127.0.0.1 (webhooks, gates), and a sample rollout record for the report."""
import json
import threading
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from fleet.core.records import Revision

# the tests' plain HTTP client, made once: httpx.get/post make a client a call, and each loads the CA bundle into a
# new TLS context (about 50 ms of CPU, every half second in a wait_until). No connection is kept: each request
# opens its own, as before, so a gateway restarted between two requests is never met on a stale connection.
HTTP = httpx.Client(timeout=10, limits=httpx.Limits(max_keepalive_connections=0))

# Two held-out tumours the demo's model v1 and v2 both classify right (train.py: 8 measurements each): benign
# (mean radius 11.94) and malignant (20.92).
SAMPLE = [[11.94, 18.24, 75.71, 437.6, 0.0826, 0.0475, 0.0197, 0.0135],
          [20.92, 25.09, 143.0, 1347.0, 0.1099, 0.2236, 0.3174, 0.1474]]


def wait_until(condition, timeout: float, what: str, interval: float = 0.5, while_running=None):
    """Call condition() until it returns something truthy; fail naming `what` and the last value.
    With `while_running` (a Popen), fail at once with its output when that process ends first."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as e:  # a transient error is a value to report, not a reason to stop waiting
            last = e
        else:
            if last:
                return last
        if while_running is not None and while_running.poll() is not None:
            out, err = while_running.communicate()
            raise AssertionError(f"{while_running.args[3:5]} ended (exit {while_running.returncode}) before {what}; "
                                 f"stdout: {out}; stderr: {(err or '')[-2000:]}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class _OnAThread:
    """A loop (`_run`) on a thread of its own while a `with` block runs; `_stop` ends it."""

    def __post_init__(self):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=30)


@dataclass
class LoadLoop(_OnAThread):
    """POST /predict in a loop on one thread, bounded in count and time; counts outcomes."""
    url: str
    max_requests: int = 5000
    max_seconds: float = 120.0
    statuses: Counter = field(default_factory=Counter)
    failures: list = field(default_factory=list)
    # (time sent, status or "error", model version or None) per request
    served: list = field(default_factory=list)
    inputs: list = field(default_factory=lambda: SAMPLE)  # the rows each request sends
    pause: float = 0.01  # seconds between requests

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(timeout=10) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set() or time.monotonic() > deadline:
                    return
                sent = time.time()
                try:
                    r = client.post(self.url, json={"inputs": self.inputs})
                    self.statuses[r.status_code] += 1
                    version = r.json().get("version") if r.status_code == 200 else None
                    self.served.append((sent, r.status_code, version))
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code}: {r.text[:200]}")
                except httpx.HTTPError as e:
                    self.statuses["error"] += 1
                    self.served.append((sent, "error", None))
                    self.failures.append(repr(e))
                time.sleep(self.pause)

    def share(self, version: str, start: float, end: float) -> float:
        """Percent of the successful responses between start and end that came from `version`."""
        window = self.answered(start, end)
        return 100.0 * sum(v == version for v in window) / len(window) if window else float("nan")

    def answered(self, start: float, end: float) -> list:
        """The model version of each successful response sent between start and end."""
        return [v for t, status, v in self.served if start <= t <= end and status == 200]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())


INFER = "/v2/models/breast-cancer-mlp/infer"
# Requests any client can send to the public port, each malformed in its own way: the binary extension's
# length spelled with the byte 0xb2 ('²', which str.isdigit() takes and int() refuses: every replica answered
# 500), a length past the body, a body that is no JSON, a tensor of the wrong shape.
_BODY = json.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8], "data": [1.0] * 8}]}).encode()
BAD_REQUESTS = [
    (INFER, b"Content-Type: application/json\r\nInference-Header-Content-Length: \xb2", _BODY),
    (INFER, b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 99999", _BODY),
    ("/predict", b"Content-Type: application/json", b'{"inputs": [[1, 2, 3'),
    (INFER, b"Content-Type: application/json", _BODY.replace(b"[1, 8]", b"[2, 8]")),
]


@dataclass
class BadFlood(_OnAThread):
    """BAD_REQUESTS in turn to a public port on 127.0.0.1, over plain sockets (no client library sends
    them), on one thread, bounded in count and time; the status of each answer counted."""
    port: int
    max_requests: int = 3000
    max_seconds: float = 120.0
    pause: float = 0.1  # seconds between requests: ~10 a second, enough to sway a verdict, not the CPU
    statuses: Counter = field(default_factory=Counter)

    def _run(self):
        import socket
        deadline = time.monotonic() + self.max_seconds
        for i in range(self.max_requests):
            if self._stop.is_set() or time.monotonic() > deadline:
                return
            path, headers, body = BAD_REQUESTS[i % len(BAD_REQUESTS)]
            head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                    f"Content-Length: {len(body)}\r\n").encode() + headers + b"\r\n\r\n"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
                    s.sendall(head + body)
                    got = b""
                    while chunk := s.recv(65536):
                        got += chunk
                line = got.split(b"\r\n", 1)[0].split()
                self.statuses[int(line[1]) if len(line) > 1 and line[1].isdigit() else "no answer"] += 1
            except OSError as e:
                self.statuses[type(e).__name__] += 1
            time.sleep(self.pause)


def trickle(every: float, count: int) -> type[BaseHTTPRequestHandler]:
    """A handler (a gate or a receiver) that answers 200 with its headers at once, then one byte every
    `every` seconds, `count` in all: what an HTTP client's per-read timeout never ends."""
    class Trickle(Quiet):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", str(count))
            self.end_headers()
            try:
                for _ in range(count):
                    self.wfile.write(b"y")
                    self.wfile.flush()
                    time.sleep(every)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up: what a test wants
                pass
        do_GET = do_POST  # a registry's manifest, a Prometheus query
    return Trickle


class Quiet(BaseHTTPRequestHandler):
    """A test server's handler that logs nothing."""

    def log_message(self, *args):
        pass

    def reply(self, code: int, body: bytes, **headers: str) -> None:
        """Answer `code` with `body` (and these headers, `_` in their names written `-`)."""
        self.send_response(code)
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def local_server(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """`handler` served on a free port of 127.0.0.1 from a daemon thread; shut it down when done."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]):
    """`handler` served on 127.0.0.1 for the block; yields its port."""
    server = local_server(handler)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


class Receiver:
    """An HTTP server on 127.0.0.1 that records each POST (monotonic time, JSON body) and answers as
    `answers` says (status, body, delay in seconds), the last answer repeating."""

    def __init__(self, answers):
        self.answers, self.got = list(answers), []
        receiver = self

        class Handler(Quiet):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.got.append((time.monotonic(), json.loads(body)))
                status, text, delay = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(text.encode())
                except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (a slow receiver)
                    pass
        self.server = local_server(Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


# a promoted rollout's history record and series, for the report's tests
REPORT_T0 = T0 = 1_700_000_000.0
REPORT_RECORD = Revision.from_dict({
    "revision": 5, "image": "fleet/inference:3", "previous_image": "fleet/inference:2", "outcome": "promoted",
    "reason": "all steps passed", "cause": "fleet rollout", "started_at": T0, "ended_at": T0 + 100,
    "plan": {"steps": [10, 50], "step_duration": 30, "golden_tolerance": 0.01,
             "thresholds": {"max_error_rate": 0.01, "max_latency_ratio": 1.5}},
    "golden": {"passed": True, "detail": "accuracy 0.97 vs 0.97 <script>"},
    "timeline": [{"at": T0 + 10, "event": "share", "detail": "10% (weights stable 9, canary 1)"},
                 {"at": T0 + 40, "event": "share", "detail": "50% (weights stable 1, canary 1)"},
                 {"at": T0 + 70, "event": "promote", "detail": "updating the stable service"},
                 {"at": T0 + 90, "event": "cut", "detail": "promoted"}]})
REPORT_DATA = {role: {"requests": [(T0 + i, 10.0 + i % 3) for i in range(0, 100, 2)],
                      "synthetic": [(T0 + i, 1.0) for i in range(10, 60, 2)],
                      "error_rate": [(T0 + i, 0.0) for i in range(0, 100, 2)],
                      "p50": [(T0 + i, 0.004) for i in range(0, 100, 2)],
                      "p99": [(T0 + i, 0.012) for i in range(0, 100, 2)]} for role in ("stable", "canary")}


def seconds(s: float) -> int:
    """Seconds as Docker's API takes a duration: nanoseconds."""
    return int(s * 1_000_000_000)
