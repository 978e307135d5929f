"""Benchmark of the relative error judgement (issue 39) against the absolute one it replaced, side by side in
one run, on one stack, under the same traffic:
- the stable runs fleet/inference-test:nan (v2 answering 500 to rows whose first measurement is 17 or more:
  inputs that make the model return NaN), and a second client sends such rows: ~10 % of the requests fail on
  every model, stable and canary alike;
- a good canary (the same build under another tag) and a bad one (fleet/inference-test:flaky: 30 % errors of
  its own) are rolled out in turn, each judged by fleet as it is ("after": the canary's errors beyond the
  stable's on the same window) and by fleet with the old judgement put back ("before": every canary error
  counts against 1 %), alternating, so that both meet the same machine;
- for each: the outcome, and the seconds from the canary's first share to its cut (rollbacks) or to the
  promotion (fleet's own timeline), and the rollout's whole time.

    .venv/bin/python -m bench.judgement_bench [--rounds 2]

Uses its own stack (fleetbench-judge, ports 39600/39180/39190) and removes it after.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from fleet.adapters.swarm import Swarm
from tests.kit.helpers import SAMPLE, LoadLoop
from tests.kit.stacks import remove_stack as sweep

ROOT = Path(__file__).resolve().parents[1]
STACK = "fleetbench-judge"
STABLE = "fleet/inference-test:nan"
GOOD, BAD = "fleet/inference-test:nan-again", "fleet/inference-test:flaky"
ENV = {**os.environ, "FLEET_CONSUL_PORT": "39600", "FLEET_GATEWAY_PORT": "39180", "FLEET_GATEWAY_OPS_PORT": "39181",
       "FLEET_PROMETHEUS_PORT": "39190", "CONSUL_HTTP_ADDR": "https://127.0.0.1:39600",
       "CONSUL_CACERT": str(ROOT / "build/consul/secrets/ca.pem"),
       "CONSUL_HTTP_TOKEN_FILE": str(ROOT / "build/consul/secrets/fleet.token"), "FLEET_IMAGE": STABLE}
GATEWAY = "http://127.0.0.1:39180/predict"
BENIGN, POISON = [SAMPLE[0]], [SAMPLE[1]]  # SAMPLE's malignant row: first measurement 20.92, NaN on this model
# fleet as it was before the relative judgement: every canary error counts, whatever the stable's
BEFORE = ("import sys\nimport fleet.core.analysis as a\n"
          "a.errors_beyond = lambda canary, stable, t: (canary.error_rate, 'every error counts')\n"
          "from fleet.cli import app\nsys.argv[0] = 'fleet'\napp()\n")


def fleet(judgement: str, *args: str) -> dict:
    start = ["-c", BEFORE] if judgement == "before" else ["-m", "fleet.cli"]
    p = subprocess.run([sys.executable, *start, *args, "--stack", STACK, "--json"], capture_output=True, text=True,
                       env=ENV, cwd=ROOT, timeout=900)
    doc = json.loads(p.stdout) if p.stdout.strip() else {"error": p.stderr[-500:]}
    doc["exit"] = p.returncode
    return doc


def at(doc: dict, event: str) -> float | None:
    return next((e["at"] for e in doc.get("timeline", []) if e["event"] == event), None)


def golden() -> Path:
    """v2's golden set without the rows this stable answers 500 to (as test_rollout's NaN canary has it): the
    golden gate compares answers, and gets none from the stable on those."""
    rows = json.loads((ROOT / "build/models/v2/golden.json").read_text())
    keep = [i for i, row in enumerate(rows["inputs"]) if row[0] < 17.0]
    path = ROOT / "build/bench/judgement-golden.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"inputs": [rows["inputs"][i] for i in keep], "labels": [rows["labels"][i] for i in keep]}))
    return path


def rollout(judgement: str, image: str, gold: Path) -> tuple[str, float | None, float, str, int, int]:
    """One rollout under benign and poison traffic: outcome, seconds from the first share to the decision,
    the rollout's seconds, its reason, and the users' requests that failed and were sent."""
    with LoadLoop(GATEWAY, max_requests=30_000, max_seconds=300, inputs=BENIGN) as benign, \
            LoadLoop(GATEWAY, max_requests=3_000, max_seconds=300, inputs=POISON, pause=0.1):
        doc = fleet(judgement, "rollout", "--canary", "--image", image, "--steps", "25,50", "--step-duration", "15s",
                    "--golden", str(gold))
    first, decided = at(doc, "share"), at(doc, "cut") or at(doc, "promote")
    outcome = doc.get("outcome") or f"exit {doc['exit']}: {doc.get('error', '')[:200]}"
    if outcome == "promoted":
        back = fleet("after", "rollback")
        assert back["exit"] == 0, back
    return (outcome, decided - first if first and decided else None, doc.get("seconds", 0.0), doc.get("reason", ""),
            len(benign.failures), benign.total)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    subprocess.run(["docker", "tag", STABLE, GOOD], check=True)
    sweep(Swarm(), STACK)
    deployed = fleet("after", "deploy")
    assert deployed["exit"] == 0, deployed
    runs: dict[tuple[str, str], list] = {}
    gold = golden()
    try:
        for i in range(args.rounds):
            for image in (GOOD, BAD):
                for judgement in (("before", "after") if i % 2 == 0 else ("after", "before")):
                    r = rollout(judgement, image, gold)
                    runs.setdefault((image, judgement), []).append(r)
                    decided = f"{r[1]:.1f} s" if r[1] is not None else "-"
                    print(f"round {i + 1} {judgement:6} {image}: {r[0]} after {decided} from its first share "
                          f"({r[2]:.1f} s in all; {r[4]}/{r[5]} benign requests failed): {r[3][:160]}", flush=True)
    finally:
        sweep(Swarm(), STACK)
    print("\n| canary | judgement | outcomes | first share -> decision, median | rollout, median | ratio after/before |")
    print("|---|---|---|---|---|---|")
    for image in (GOOD, BAD):
        medians = {}
        for judgement in ("before", "after"):
            rs = runs[(image, judgement)]
            times = [r[1] for r in rs if r[1] is not None]
            medians[judgement] = statistics.median(times) if times else None
            outcomes = ", ".join(sorted({r[0] for r in rs}))
            ratio = (f"{medians['after'] / medians['before']:.2f}" if judgement == "after" and medians["before"]
                     and medians["after"] else "")
            print(f"| {image} | {judgement} | {outcomes} | "
                  f"{f'{medians[judgement]:.1f} s' if medians[judgement] is not None else '-'} | "
                  f"{statistics.median(r[2] for r in rs):.1f} s | {ratio} |")


if __name__ == "__main__":
    main()
