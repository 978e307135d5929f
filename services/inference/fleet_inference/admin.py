"""The probe server: /health and /ready answered by a process of its own, never behind /predict.

`python -m fleet_inference.admin PORT` is started by the replica (fleet_inference/probes.py), which
writes it a snapshot of its two answers, one JSON line `{"/health": [status, body], "/ready": [status,
body]}` on its standard input, at once on a change of phase and every 0.1 s otherwise (queue depth
and GPU memory move readiness). This process answers from the last snapshot, so a probe waits neither
on the replica's event loop nor on its GIL, however hard /predict saturates it.

`python -m fleet_inference.admin PORT TASK` also knows its Swarm task: a probe that names another task
(`/ready?task=ID`, as the replica's Consul check does) answers 410. Overlay addresses are reused, and a node's
agent that comes back restores the registrations of its replicas that died with it: without this, such a
registration's check would pass against whichever replica holds the dead one's address now, and count and
route it twice, under the dead replica's role and version.

Liveness keeps its meaning: the snapshots come from the replica's event loop, so when none has
arrived for STALE_S seconds the replica's Python no longer runs, and both probes answer 503
`unresponsive`. The process exits when its standard input closes (the replica is gone).

Standard library only, and no import of torch: it starts in a fraction of a second.
"""
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

STALE_S = 5.0


def encode(body: dict) -> bytes:
    """Compact JSON, as the service's own port writes it (what Docker's health log then shows)."""
    return json.dumps(body, separators=(",", ":")).encode()


class Snapshot:
    def __init__(self):
        self.lock = threading.Lock()
        self.answers: dict[str, tuple[int, bytes]] = {}
        self.at: float | None = None

    def update(self, line: bytes) -> None:
        doc = json.loads(line)
        answers = {path: (int(status), encode(body)) for path, (status, body) in doc.items()}
        with self.lock:
            self.answers, self.at = answers, time.monotonic()

    def answer(self, path: str, now: float) -> tuple[int, bytes]:
        with self.lock:
            answers, at = self.answers, self.at
        if at is None:
            return 503, encode({"phase": "loading", "reason": "the replica has not reported yet", "version": None})
        if now - at > STALE_S:
            return 503, encode({"phase": "unresponsive", "version": None,
                                "reason": f"the replica has not reported for {now - at:.1f} s: its event loop is stuck"})
        return answers.get(path, (404, encode({"error": "only /health and /ready here"})))


def follow(snapshot: Snapshot, stream) -> None:
    """Read snapshots until the replica closes the pipe, then exit the process."""
    for line in stream:
        try:
            snapshot.update(line)
        except (ValueError, TypeError, KeyError):
            pass  # a torn or odd line: keep the last good snapshot
    os._exit(0)


def answer(snapshot: Snapshot, target: str, task: str, now: float) -> tuple[int, bytes]:
    """The answer to GET `target` (a path and query) by the probe server of Swarm task `task` ('' unknown)."""
    url = urlsplit(target)
    asked = parse_qs(url.query).get("task", [""])[0]
    if asked and task and asked != task:
        return 410, encode({"error": f"this address serves task {task}, not {asked}: a registration left by a "
                                     "replica that is gone"})
    return snapshot.answer(url.path, now)


def serve(port: int, snapshot: Snapshot, task: str = "") -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            status, body = answer(snapshot, self.path, task, time.monotonic())
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # probes every second would flood the log
            pass

    class Server(ThreadingHTTPServer):
        allow_reuse_address = True
        daemon_threads = True

        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], ConnectionError):  # a checker that hung up early: routine
                super().handle_error(request, client_address)

    return Server(("0.0.0.0", port), Handler)


def main() -> None:
    port, task = int(sys.argv[1]), (sys.argv[2:] or [""])[0]
    snapshot = Snapshot()
    server = serve(port, snapshot, task)
    threading.Thread(target=follow, args=(snapshot, sys.stdin.buffer), name="snapshots", daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
