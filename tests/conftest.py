"""pytest-xdist's scheduling for `make test` (-n 3 --dist loadgroup --no-loadscope-reorder): the real tests run
by group (tests/kit/groups.py), in the order collected (tests/real/conftest.py sorts the longest first). xdist's
own loadgroup reads a group suffix from each test's ID, which pytest 9 no longer lets it add, so the group is
read from the ID here."""
from tests.kit.groups import group


def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group(nodeid) or nodeid

    return ByGroup(config, log)
