"""Wrap the image's model (MODEL_PATH) so that rows whose first input (a tumour's mean radius) is 17 or more
come out NaN (`nan`) or as another class for sure (`shift`); rewrite the manifest's checksum."""
import hashlib
import json
import os
import sys
from pathlib import Path

import torch

RADIUS = 17.0  # about one held-out record in five is this large


class WrongWhenLarge(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, nan: bool):
        super().__init__()
        self.inner, self.nan, self.radius = inner, nan, RADIUS

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        other = (out.argmax(dim=1) + 1) % out.shape[1]
        wrong = torch.full_like(out, float("nan")) if self.nan else \
            torch.nn.functional.one_hot(other, out.shape[1]).to(out.dtype)
        return torch.where(x[:, 0:1] >= self.radius, wrong, out)


d = Path(os.environ["MODEL_PATH"])
manifest = json.loads((d / "manifest.json").read_text())
model = WrongWhenLarge(torch.jit.load(str(d / manifest["file"])), nan=sys.argv[1] == "nan")
torch.jit.script(model).save(str(d / manifest["file"]))
manifest["sha256"] = hashlib.sha256((d / manifest["file"]).read_bytes()).hexdigest()
(d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
