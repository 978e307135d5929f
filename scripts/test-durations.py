"""The test run's time by group (tests/kit/groups.py), from build/test-times/*.jsonl (tests/conftest.py writes a
line a test): wall seconds, the CPU seconds of the test's own process and commands (the stacks' containers
not counted), the share spent waiting, the machine's CPU seconds meanwhile (containers and engine included; with
several workers each test counts the others' too) and how busy that kept its cores, the slowest test; then each
worker's span and the whole run's machine CPU. Run after `make test`:
    .venv/bin/python scripts/test-durations.py [build/test-times]"""
import json
import os
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.kit.groups import group  # noqa: E402


def main(folder: Path) -> None:
    rows, workers = [], {}
    for path in sorted(folder.glob("*.jsonl")):
        lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        rows += lines
        if lines:
            workers[path.stem] = (min(r["start"] for r in lines), max(r["end"] for r in lines), len(lines))
    by = defaultdict(list)
    for r in rows:
        by[group(r["test"]) or r["test"].split("/")[1]].append(r)  # unit, process: their folder
    cores = os.cpu_count() or 1
    print(f"| group | tests | wall s | CPU s | waiting | machine CPU s | cores busy | slowest test (s) |\n"
          f"|---|---:|---:|---:|---:|---:|---:|---|")
    for name, rs in sorted(by.items(), key=lambda kv: -sum(r["end"] - r["start"] for r in kv[1])):
        wall = sum(r["end"] - r["start"] for r in rs)
        cpu = sum(r["cpu"] for r in rs)
        machine = sum(r.get("machine", 0) for r in rs)
        slow = max(rs, key=lambda r: r["end"] - r["start"])
        print(f"| {name} | {len(rs)} | {wall:,.0f} | {cpu:,.0f} | {1 - cpu / wall if wall else 0:.0%} "
              f"| {machine:,.0f} | {machine / wall / cores if wall else 0:.0%} "
              f"| {slow['test'].split('::', 1)[-1][:60]} ({slow['end'] - slow['start']:.0f}) |")
    total = sum(r["end"] - r["start"] for r in rows)
    if workers:
        t0 = min(s for s, _, _ in workers.values())
        span = max(e for _, e, _ in workers.values()) - t0
        print(f"\n{len(rows)} tests, {total:,.0f} s of tests in {span:,.0f} s ({total / span:.2f}x overlapped)")
        for name, (s, e, n) in sorted(workers.items()):
            print(f"  {name}: {n} tests, from {s - t0:,.0f} s to {e - t0:,.0f} s")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "build/test-times"))
