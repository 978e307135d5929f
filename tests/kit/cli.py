"""fleet's command line as the real tests and the benchmarks run it: a subprocess with the stack's
environment (its Consul over HTTPS with fleet's token), from the repository's root."""
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.kit.stacks import ROOT, StackUnderTest, stable_image


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fleet.cli", *args]


def fleet(stack: StackUnderTest, *args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run `fleet ARGS` to its end; the result has `seconds` too (how long it took)."""
    env = {**stack.env(), **(env or {})}
    started = time.monotonic()
    proc = subprocess.run(command(*args), capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    proc.seconds = time.monotonic() - started
    return proc


def fleet_background(stack: StackUnderTest, *args: str, env: dict | None = None,
                     stderr: int = subprocess.PIPE) -> subprocess.Popen:
    """Start `fleet ARGS` and return at once (stdout piped, text)."""
    return subprocess.Popen(command(*args), cwd=ROOT, env={**stack.env(), **(env or {})}, stdout=subprocess.PIPE,
                            stderr=stderr, text=True)


@contextmanager
def running_rollout(stack: StackUnderTest, image: str, *args: str, env: dict | None = None,
                    stderr: int = subprocess.PIPE) -> Iterator[subprocess.Popen]:
    """`fleet rollout --canary --image IMAGE ARGS --json` on the stack, running while the block runs. A
    rollout still running when the block ends (a failed assertion) is interrupted as Ctrl-C would (fleet
    aborts it safely: canary removed, stable untouched), and killed if it has not ended within 120 s."""
    p = fleet_background(stack, "rollout", "--canary", "--image", image, "--stack", stack.name, "--json", *args,
                         env=env, stderr=stderr)
    try:
        yield p
    finally:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


def deploy_stable(stack: StackUnderTest, image: str) -> None:
    """`fleet deploy` of the stack with `image` as its stable (a promoted one replaced): a test's known start."""
    p = fleet(stack, "deploy", "--stack", stack.name, "--replace-promoted", env={"FLEET_IMAGE": image}, timeout=400)
    assert p.returncode == 0, p.stderr
    assert stable_image(stack) == image
