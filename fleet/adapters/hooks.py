"""Gates asked and webhooks posted (fleet/core/gates.py says what they mean): over HTTP with httpx, commands
with subprocess, retries with tenacity; every ask and POST has a total deadline (within.py), never one per
read. A webhook's URL gets a thread of its own, so a slow or dead
receiver never holds up the evidence loop or another receiver; its failure is reported, never a verdict.
"""
import json
import logging
import os
import queue
import shlex
import signal
import subprocess
import threading
import time

import httpx
import tenacity

from ..core.gates import Answer, answer_of, chat_payload, is_url, webhook_of
from ..core.secrets import redact, redact_text
from .within import request_within

log = logging.getLogger("fleet.hooks")
ASK_TIMEOUT = 10.0  # seconds one ask of a gate may take
ASK_EVERY = 2.0  # seconds between asks of a gate that gave no answer yet
HOOK_TIMEOUT = 5.0  # seconds one webhook POST may take
HOOK_ATTEMPTS = 3
FLUSH_WAIT = 15.0  # seconds the end of a rollout waits for its webhooks to be delivered


def ask(spec: str, payload: dict, timeout: float = ASK_TIMEOUT, env_names: tuple[str, ...] = ()) -> Answer:
    """Ask a gate once, within `timeout` seconds in all, whatever the gate does (trickles, never answers)."""
    if is_url(spec):
        try:
            status, text = post_within(spec, json.dumps(payload).encode(), timeout)
        except httpx.HTTPError as e:  # a deadline passed is httpx.TimeoutException (within.py)
            return Answer(None, f"no answer from {redact(spec)} within {timeout:g}s: {type(e).__name__}"
                                + (f": {redact_text(str(e))}" if str(e) else ""))
        return answer_of(status, text)
    return _run(spec, json.dumps(payload), timeout, env_names)


def post_within(url: str, body: bytes, seconds: float) -> tuple[int, str]:
    """POST a JSON body and read the whole answer within `seconds` in all (within.py); httpx.TimeoutException
    past them."""
    r = request_within("POST", url, seconds, content=body, headers={"content-type": "application/json"})
    return r.status_code, r.text


def gate_env(event: str, names: tuple[str, ...] = ()) -> dict[str, str]:
    """A command gate's whole environment: PATH, HOME, the event, and the variables the operator named
    (--gate-env); never fleet's own (CONSUL_HTTP_TOKEN, DOCKER_* and the rest)."""
    keep = {name: os.environ[name] for name in ("PATH", "HOME", *names) if name in os.environ}
    return {**keep, "FLEET_EVENT": event}


def _run(spec: str, data: str, timeout: float, env_names: tuple[str, ...]) -> Answer:
    """A command gate in a session of its own, so that at the timeout it and every process it started are
    killed (a child left holding its output would otherwise keep the ask waiting)."""
    try:
        p = subprocess.Popen(shlex.split(spec), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=gate_env(data, env_names), start_new_session=True)
    except OSError as e:
        return Answer(False, f"`{spec}` could not run: {e}")
    try:
        out, err = p.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.communicate()
        return Answer(None, f"`{spec}` still running after {timeout:g}s")
    said = (out.strip() or err.strip())[-300:]
    return Answer(p.returncode == 0, f"exit {p.returncode}" + (f": {said}" if said else ""))


def answers(spec: str, payload: dict, stopped: threading.Event, timeout=lambda: ASK_TIMEOUT,
            env_names: tuple[str, ...] = ()):
    """Ask a gate every ASK_EVERY seconds, yielding each answer, until one approves or refuses (the last
    yielded) or `stopped` is set; `timeout()` bounds each ask."""
    while not stopped.is_set():
        answer = ask(spec, payload, timeout(), env_names)
        yield answer
        if answer.approved is not None or stopped.wait(ASK_EVERY):
            return


def wait_for(spec: str, payload: dict, deadline: float, on_pending=lambda answer: None,
             env_names: tuple[str, ...] = ()) -> Answer:
    """`answers` until one approves or refuses, or `deadline` (monotonic) passes: then Answer(None, ...)
    with the last word. It returns within a second of the deadline."""
    left = lambda: min(ASK_TIMEOUT, max(1.0, deadline - time.monotonic()))  # noqa: E731
    for answer in answers(spec, payload, threading.Event(), left, env_names):  # never set: it ends on a yes or a no
        if answer.approved is None:
            on_pending(answer)
        if answer.approved is not None or time.monotonic() + ASK_EVERY > deadline:
            return answer


class Webhooks:
    """Posts events to URLs, each URL on a thread of its own (a slow one holds up no other), in order,
    each with retries; never raises."""

    def __init__(self, urls: tuple[str, ...] | list[str], on_failure=lambda message: None):
        self.on_failure = on_failure
        self.failures: list[str] = []
        self.delivered: list[tuple[str, str]] = []  # (url, the event's kind and phase)
        self._queues = {url: queue.Queue() for url in urls}
        self._threads = [threading.Thread(target=self._run, args=(url, q), name=f"fleet-webhook-{i}", daemon=True)
                         for i, (url, q) in enumerate(self._queues.items())]
        for t in self._threads:
            t.start()

    def post(self, payload: dict) -> None:
        for q in self._queues.values():
            q.put(payload)

    def close(self, wait: float = FLUSH_WAIT) -> None:
        """Deliver what is queued, for at most `wait` seconds in all; what is left is reported as failed."""
        deadline = time.monotonic() + wait
        for q in self._queues.values():
            q.put(None)
        for t, (url, q) in zip(self._threads, self._queues.items()):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self._fail(f"webhook {redact(url)}: events left undelivered after {wait:g}s")

    def _run(self, url: str, q: queue.Queue) -> None:
        chat, target = webhook_of(url)  # slack:URL and the like: that service's format, POSTed to URL
        while (payload := q.get()) is not None:
            what = f"{payload.get('kind')} {payload.get('phase')}"
            # no receiver reads another's secret
            body = redact_text(json.dumps(chat_payload(chat, payload) if chat else payload)).encode()
            try:
                for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(HOOK_ATTEMPTS),
                                                 wait=tenacity.wait_exponential(multiplier=0.5, max=2),
                                                 reraise=True):
                    with attempt:
                        status, _ = post_within(target, body, HOOK_TIMEOUT)
                        if not 200 <= status < 300:
                            raise httpx.HTTPError(f"answered {status}")
                self.delivered.append((url, what))
            except httpx.HTTPError as e:
                self._fail(f"webhook {redact(url)} failed for {what} after {HOOK_ATTEMPTS} tries: "
                           f"{type(e).__name__}: {redact_text(str(e))}"[:400])

    def _fail(self, message: str) -> None:
        self.failures.append(message)
        log.warning(message)
        try:
            self.on_failure(message)
        except Exception:  # a reporter's error must not stop the deliveries
            log.exception("webhook failure reporter failed")
