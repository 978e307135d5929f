"""The replica's side of the probe server (fleet_inference/admin.py): starts it, feeds it snapshots of
/health and /ready from the event loop, and starts it again if it dies.

Snapshots are written from an asyncio task, so they stop when the event loop stops: that is what makes
the probe server's liveness true. The pipe is non-blocking: a snapshot the probe server cannot take
at once is dropped (the next one follows in 0.1 s), so the event loop never waits on it.
"""
import asyncio
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("fleet_inference.probes")

EVERY_S = 0.1
RESPAWN_S = 1.0  # at most one new probe server a second (one that cannot start must not spin)
PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class ProbeServer:
    def __init__(self, port: int, answers: Callable[[], dict], task: str = ""):
        self.port, self.answers, self.task = port, answers, task
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self._spawned_at = 0.0
        self._changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [PACKAGE_ROOT, os.environ.get("PYTHONPATH")]))}
        self._spawned_at = time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "fleet_inference.admin", str(self.port), self.task],
                                     stdin=subprocess.PIPE, close_fds=True, env=env)
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.starts += 1
        if self.starts > 1:
            log.warning("the probe server had exited; started it again on port %d", self.port)

    def start(self) -> None:
        self._spawn()
        self._task = asyncio.get_running_loop().create_task(self._feed())

    def changed(self) -> None:
        """The phase changed: send a snapshot now, not at the next tick."""
        self._changed.set()

    def _send(self) -> None:
        if self.proc.poll() is not None:
            if time.monotonic() - self._spawned_at < RESPAWN_S:
                return
            self._spawn()
        line = (json.dumps(self.answers()) + "\n").encode()
        try:
            os.write(self.proc.stdin.fileno(), line)
        except (BlockingIOError, BrokenPipeError):
            pass  # full (the next one follows) or just died (started again at the next tick)

    async def _feed(self) -> None:
        while True:
            try:
                self._send()
            except Exception:  # a bad snapshot must not end the feed: the probes would turn stale
                log.exception("could not send a snapshot to the probe server")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), EVERY_S)
            except TimeoutError:
                pass

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self.proc and self.proc.poll() is None:
            self.proc.stdin.close()  # the probe server exits on end of input
            try:
                await asyncio.to_thread(self.proc.wait, 2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
