"""A model made by the tests themselves, as a user would make theirs: a small CNN over the handwritten
digits bundled with scikit-learn (8x8 images, NCHW [N, 1, 8, 8]), written as a model package for
`fleet build`. Reproducible: same version, same weights and manifest."""
import json
from pathlib import Path

import torch
from sklearn.datasets import load_digits
from torch import nn

STEPS = {"1": 15, "2": 300}  # optimiser steps per version: v2 measurably more accurate on held-out digits
HELD_OUT = 297  # the last digits: never trained on; the golden set is their first 200
GOLDEN = 200


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)


def digits() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_digits()
    return torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0, torch.tensor(d.target)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return round(float((model(x).argmax(dim=1) == y).float().mean()), 4)


def train(version: str) -> nn.Module:
    torch.manual_seed(0)
    x, y = digits()
    x, y = x[:-HELD_OUT], y[:-HELD_OUT]
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(STEPS[version]):
        idx = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx]).backward()
        opt.step()
    return model.eval()


def write_package(out: Path, version: str, name: str = "digits-cnn") -> Path:
    """The package of `version` in `out`: model.pt (TorchScript), golden.json, manifest.json."""
    out.mkdir(parents=True, exist_ok=True)
    model = train(version)
    torch.jit.script(model).save(str(out / "model.pt"))
    x, y = digits()
    hx, hy = x[-HELD_OUT:], y[-HELD_OUT:]
    gx, gy = hx[:GOLDEN], hy[:GOLDEN]
    (out / "golden.json").write_text(json.dumps({"inputs": gx.tolist(), "labels": gy.tolist()}))
    manifest = {"name": name, "version": version, "file": "model.pt", "input_shape": [1, 8, 8],
                "input_dtype": "FP32", "input_range": [0, 1], "num_classes": 10,
                "labels": [str(i) for i in range(10)], "accuracy": accuracy(model, hx, hy),
                "golden": {"file": "golden.json", "size": GOLDEN, "accuracy": accuracy(model, gx, gy)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


class DigitsEmbedding(nn.Module):
    """A model of plain tensor outputs: each digit image to 2 numbers (a fixed random projection, scaled)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(7)
        self.register_buffer("projection", torch.randn(64, 2, generator=g) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x.flatten(1) @ self.projection)


def write_tensor_package(out: Path, version: str, scale: float = 0.25, tolerance: float = 0.001,
                         name: str = "digits-embedding") -> Path:
    """A package of a model whose output is a tensor [N, 2], not classes: its golden set holds the outputs
    expected, and a canary's must be within `tolerance` of the stable's. `scale` changes what it answers."""
    out.mkdir(parents=True, exist_ok=True)
    model = DigitsEmbedding(scale).eval()
    torch.jit.script(model).save(str(out / "model.pt"))
    x = digits()[0][-HELD_OUT:][:GOLDEN]
    with torch.no_grad():
        y = model(x)
    (out / "golden.json").write_text(json.dumps({"inputs": x.tolist(), "outputs": y.tolist()}))
    manifest = {"name": name, "version": version, "file": "model.pt", "input_shape": [1, 8, 8], "input_range": [0, 1],
                "output": "tensor", "output_shape": [2],
                "golden": {"file": "golden.json", "size": GOLDEN, "tolerance": tolerance}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


class DigitsTokens(nn.Module):
    """A model of integer inputs, as a text model takes token ids: each of a digit's 64 pixels, its raw
    intensity 0..16, is a token, embedded (nn.Embedding takes integer indices only) and classified."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(17, 4)
        self.out = nn.Linear(64 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.out(self.embed(x).flatten(1)), dim=-1)


def write_token_package(out: Path, version: str = "1", name: str = "digits-tokens", export: bool = False) -> Path:
    """The package of DigitsTokens, trained on scikit-learn's digits as integers (INT64 [N, 64]); with
    `export`, its weights a torch.export program (model.pt2, any batch size) instead of TorchScript."""
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    d = load_digits()
    x, y = torch.tensor(d.data, dtype=torch.int64), torch.tensor(d.target)
    model = DigitsTokens()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(1)
    for _ in range(150):
        idx = torch.randint(0, len(x) - HELD_OUT, (64,), generator=g)
        opt.zero_grad()
        torch.nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx]).backward()
        opt.step()
    model.eval()
    file = "model.pt2" if export else "model.pt"
    if export:
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.export.save(torch.export.export(model, (x[:2],), dynamic_shapes=({0: batch},)), str(out / file))
    else:
        torch.jit.script(model).save(str(out / file))
    hx, hy = x[-HELD_OUT:], y[-HELD_OUT:]
    gx, gy = hx[:GOLDEN], hy[:GOLDEN]
    (out / "golden.json").write_text(json.dumps({"inputs": gx.tolist(), "labels": gy.tolist()}))
    manifest = {"name": name, "version": version, "file": file, "input_shape": [64],
                "input_dtype": "INT64", "input_range": [0, 16], "num_classes": 10,
                "labels": [str(i) for i in range(10)], "accuracy": accuracy(model, hx, hy),
                "golden": {"file": "golden.json", "size": GOLDEN, "accuracy": accuracy(model, gx, gy)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


class DigitsMasked(nn.Module):
    """A model of two inputs, as a text model takes token ids and an attention mask: a digit image (FP32) and
    a mask of the pixels to look at (UINT8, 1 keeps a pixel), classified by a trained DigitsCNN."""

    def __init__(self, cnn: DigitsCNN) -> None:
        super().__init__()
        self.cnn = cnn

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.cnn(image * mask.to(image.dtype))


def write_masked_package(out: Path, version: str = "2", name: str = "digits-masked") -> Path:
    """The package of DigitsMasked over `version`'s CNN: a manifest of two `inputs`, a golden set of both
    (each golden digit with a mask that keeps every pixel)."""
    out.mkdir(parents=True, exist_ok=True)
    model = DigitsMasked(train(version)).eval()
    torch.jit.script(model).save(str(out / "model.pt"))
    x, y = digits()
    gx, gy = x[-HELD_OUT:][:GOLDEN], y[-HELD_OUT:][:GOLDEN]
    mask = torch.ones_like(gx, dtype=torch.uint8)
    (out / "golden.json").write_text(json.dumps({"inputs": {"image": gx.tolist(), "mask": mask.tolist()},
                                                 "labels": gy.tolist()}))
    with torch.no_grad():
        golden_accuracy = round(float((model(gx, mask).argmax(dim=1) == gy).float().mean()), 4)
    manifest = {"name": name, "version": version, "file": "model.pt",
                "inputs": [{"name": "image", "datatype": "FP32", "shape": [1, 8, 8], "range": [0, 1]},
                           {"name": "mask", "datatype": "UINT8", "shape": [1, 8, 8], "range": [0, 1]}],
                "num_classes": 10, "labels": [str(i) for i in range(10)], "accuracy": golden_accuracy,
                "golden": {"file": "golden.json", "size": GOLDEN, "accuracy": golden_accuracy}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out
