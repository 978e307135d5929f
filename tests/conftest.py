"""pytest-xdist's scheduling for `make test` (-n N --dist loadgroup --no-loadscope-reorder): the real tests run
by group (tests/kit/groups.py), in the order collected (tests/real/conftest.py sorts the longest first). xdist's
own loadgroup reads a group suffix from each test's ID, which pytest 9 no longer lets it add, so the group is
read from the ID here."""
import json
import os
import time
from pathlib import Path

import pytest

from tests.kit.groups import group

TIMES = Path(__file__).resolve().parents[1] / "build/test-times"


@pytest.hookimpl(optionalhook=True)  # a run without xdist (-p no:xdist) knows no such hook
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group(nodeid) or nodeid

    return ByGroup(config, log)


def pytest_sessionstart(session):
    if not hasattr(session.config, "workerinput"):  # the run's first process: last run's times go
        for old in TIMES.glob("*.jsonl"):
            old.unlink()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    """Each test's wall time (its setup and teardown included), the CPU time this process and the commands it
    ran spent meanwhile, and the machine's, a line of build/test-times/<worker>.jsonl: scripts/test-durations.py groups them."""
    started, cpu, machine = time.time(), os.times(), machine_busy()
    try:
        return (yield)
    finally:
        now = os.times()
        spent = sum(getattr(now, f) - getattr(cpu, f) for f in ("user", "system", "children_user", "children_system"))
        TIMES.mkdir(parents=True, exist_ok=True)
        with open(TIMES / f"{os.environ.get('PYTEST_XDIST_WORKER', 'main')}.jsonl", "a") as f:
            f.write(json.dumps({"test": item.nodeid, "start": started, "end": time.time(), "cpu": round(spent, 3),
                                "machine": round(machine_busy() - machine, 3)}) + "\n")


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy since boot (/proc/stat: every state but idle and iowait): what
    a test cost with its stacks' containers and the engine, and whatever else ran meanwhile (another worker)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")
