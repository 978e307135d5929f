"""Train the model and write versioned TorchScript artifacts with manifests, reproducibly and offline.

    python services/inference/train.py --out build/models

writes build/models/v1/{model.pt,manifest.json} and build/models/v2/...: the same network after
25 optimiser steps (v1) and after 300 (v2), so v2 is measurably better on the held-out set.
"""
import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet_inference.modeldef import CLASSES, FEATURES, Classifier, make_data  # noqa: E402

SNAPSHOTS = {1: 25, 2: 300}  # version -> optimiser steps trained
BATCH = 128
TRAIN_SEED, HOLDOUT_SEED = 1, 2
GOLDEN = 512  # held-out rows shipped as the golden set


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


INPUT_LIMIT = 10_000.0


def write_artifact(model: torch.nn.Module, out: Path, version: int, acc: float, steps: int,
                   golden: tuple[torch.Tensor, torch.Tensor]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    scripted = torch.jit.script(model)
    path = out / "model.pt"
    scripted.save(str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {
        "name": "quadrant-mlp",
        "version": str(version),
        "file": "model.pt",
        "sha256": digest,
        "input_shape": [FEATURES],
        # The inputs the model answers for: its data are standard normal, so beyond 10^4 (10^4 sigma) an
        # answer means nothing. A request outside is the client's error (4xx); a non-finite output for an
        # input inside is the model's fault (5xx).
        "input_range": [-INPUT_LIMIT, INPUT_LIMIT],
        "num_classes": CLASSES,
        "accuracy": round(acc, 4),
        "holdout": {"seed": HOLDOUT_SEED, "size": 4000},
        "train_steps": steps,
        # The golden set: held-out rows shipped with the artifact; fleet's canary check sends them to
        # /predict and expects this accuracy (float32 values written exactly, so it is reproduced).
        "golden": {"file": "golden.json", "size": len(golden[1]), "accuracy": round(accuracy(model, *golden), 4)},
        "torch": torch.__version__,
    }
    (out / "golden.json").write_text(json.dumps({"inputs": golden[0].tolist(), "labels": golden[1].tolist()}))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    model.train()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    x, y = make_data(16000, TRAIN_SEED)
    xh, yh = make_data(4000, HOLDOUT_SEED)
    model = Classifier()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.NLLLoss()
    started = time.monotonic()
    step = 0
    while step < max(SNAPSHOTS.values()):
        perm = torch.randperm(len(x))
        for i in range(0, len(x) - BATCH + 1, BATCH):
            idx = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(torch.log(model(x[idx]) + 1e-9), y[idx])
            loss.backward()
            opt.step()
            step += 1
            for version, steps in SNAPSHOTS.items():
                if steps == step:
                    acc = accuracy(model, xh, yh)
                    write_artifact(model, args.out / f"v{version}", version, acc, steps, (xh[:GOLDEN], yh[:GOLDEN]))
                    print(f"v{version}: {steps} steps, held-out accuracy {acc:.4f}", flush=True)
            if step >= max(SNAPSHOTS.values()):
                break
    print(f"trained in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
