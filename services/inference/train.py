"""Train the demo's model on real data and write its versions as model packages, reproducibly and offline.

    python services/inference/train.py --out build/models

The data: the Wisconsin breast cancer records that scikit-learn ships (569 tumours; no download): each
row is 8 measurements of a tumour's cell nuclei (mean radius, texture, perimeter, area, smoothness,
compactness, concavity, concave points), as a lab reports them; the class is malignant (0) or benign (1).
200 records, drawn once with a fixed seed, are held out: never trained on, and shipped as the golden set.
The model standardises the measurements itself (the training records' mean and spread are in its
weights), so clients send them raw.

It writes build/models/v1/{model.pt,golden.json,manifest.json} and v2/...: the same network after
5 optimiser steps (v1) and after 300 (v2), so v2 is measurably better on the held-out records.
"""
import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch
from sklearn.datasets import load_breast_cancer
from torch import nn

NAME = "breast-cancer-mlp"
FEATURES = 8  # the first 8 of the dataset's 30 columns: the nuclei's mean measurements
LABELS = ("malignant", "benign")  # the dataset's targets 0 and 1
HIDDEN = 2048
SNAPSHOTS = {1: 5, 2: 300}  # version -> optimiser steps trained
BATCH, LR = 64, 1e-3
HELD_OUT = 200  # records never trained on; all of them are the golden set
INPUT_RANGE = (0.0, 10_000.0)  # measurements are non-negative; the largest (an area) is 2,501


def records() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The training and held-out records (inputs, labels): pure, the same split every time."""
    d = load_breast_cancer()
    x, y = torch.tensor(d.data[:, :FEATURES], dtype=torch.float32), torch.tensor(d.target)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    held, train = order[:HELD_OUT], order[HELD_OUT:]
    return (x[train], y[train]), (x[held], y[held])


class Classifier(nn.Module):
    """Raw measurements in, class probabilities out; `mean` and `std` standardise the inputs."""

    def __init__(self, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(FEATURES) if mean is None else mean)
        self.register_buffer("std", torch.ones(FEATURES) if std is None else std)
        self.net = nn.Sequential(
            nn.Linear(FEATURES, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, len(LABELS)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net((x - self.mean) / self.std), dim=-1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(dim=1) == y).float().mean())


def write_artifact(model: nn.Module, out: Path, version: int, acc: float, steps: int,
                   golden: tuple[torch.Tensor, torch.Tensor]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    path = out / "model.pt"
    torch.jit.script(model).save(str(path))
    manifest = {
        "name": NAME,
        "version": str(version),
        "file": "model.pt",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "input_shape": [FEATURES],
        # The inputs the model answers for: a negative measurement, or one beyond 10^4, is the client's
        # error (4xx); a non-finite output for an input inside is the model's fault (5xx).
        "input_range": list(INPUT_RANGE),
        "num_classes": len(LABELS),
        "labels": list(LABELS),
        "accuracy": round(acc, 4),
        "holdout": {"data": "scikit-learn load_breast_cancer, columns 0-7", "seed": 0, "size": HELD_OUT},
        "train_steps": steps,
        # The golden set: the held-out records, shipped with the artifact; fleet's canary check sends them
        # to the replicas and expects this accuracy (float32 values written exactly, so it is reproduced).
        "golden": {"file": "golden.json", "size": len(golden[1]), "accuracy": round(accuracy(model, *golden), 4)},
        "torch": torch.__version__,
    }
    (out / "golden.json").write_text(json.dumps({"inputs": golden[0].tolist(), "labels": golden[1].tolist()}))
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    model.train()


def main() -> None:
    if os.environ.get("PYTHONHASHSEED") != "0":
        # TorchScript writes a module's constants in set order, which follows Python's string hashing:
        # fixed, the same package comes out byte for byte.
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, "PYTHONHASHSEED": "0"})
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    (x, y), held = records()
    model = Classifier(x.mean(dim=0), x.std(dim=0))
    opt = torch.optim.SGD(model.parameters(), lr=LR)
    batches = torch.Generator().manual_seed(1)
    started = time.monotonic()
    for step in range(1, max(SNAPSHOTS.values()) + 1):
        idx = torch.randint(0, len(x), (BATCH,), generator=batches)
        opt.zero_grad()
        nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx]).backward()
        opt.step()
        for version, steps in SNAPSHOTS.items():
            if steps == step:
                acc = accuracy(model, *held)
                write_artifact(model, args.out / f"v{version}", version, acc, steps, held)
                print(f"v{version}: {steps} steps, held-out accuracy {acc:.4f}", flush=True)
    print(f"trained in {time.monotonic() - started:.1f} s", flush=True)


if __name__ == "__main__":
    main()
