"""fleet/core/ stays pure: its modules import only the standard library's pure modules and each other,
never an adapter, the clock, the network, a thread or a process (fleet/core/__init__.py)."""
import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "fleet" / "core"
PURE_STDLIB = {"collections", "dataclasses", "enum", "functools", "itertools", "json", "math", "re", "shlex",
               "statistics", "typing", "uuid", "__future__"}
PURE_MODULES = {"urllib.parse", "collections.abc"}  # pure modules of packages that also hold impure ones


def impure_imports(source: str, package: str = "fleet.core") -> list[str]:
    """The imports of a module's source that the core may not have."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: only within the core (level 1, from . or from .module)
                names = [f"{package}.{node.module or ''}" if node.level == 1 else f"..{node.module}"]
            else:
                names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if not (top in PURE_STDLIB or name in PURE_MODULES or name.startswith("fleet.core")):
                bad.append(name)
    return bad


@pytest.mark.parametrize("module", sorted(p.name for p in CORE.glob("*.py")))
def test_a_core_module_imports_nothing_impure(module):
    assert impure_imports((CORE / module).read_text()) == []


@pytest.mark.parametrize("source", [
    "import time", "from time import monotonic", "import socket", "import threading", "import subprocess",
    "import docker", "import consul", "import httpx", "from ..adapters.swarm import Swarm", "from .. import controller",
    "from fleet.adapters import store", "import fleet.controller"])
def test_the_check_catches_an_adapter_the_clock_or_the_network(source):
    assert impure_imports(source) != []


def test_the_check_lets_the_core_import_itself_and_pure_modules():
    assert impure_imports("from .rollout import step\nfrom . import durations\nimport json\n"
                          "from dataclasses import dataclass\nfrom fleet.core.tasks import Task") == []
