"""Wrap the image's model (MODEL_PATH) so that rows with x[0] >= 1.0 come out NaN; rewrite its checksum."""
import hashlib
import json
import os
from pathlib import Path

import torch


class NaNAboveOne(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.inner(x)
        return torch.where(x[:, 0:1] >= 1.0, torch.full_like(out, float("nan")), out)


d = Path(os.environ["MODEL_PATH"])
manifest = json.loads((d / "manifest.json").read_text())
torch.jit.script(NaNAboveOne(torch.jit.load(str(d / manifest["file"])))).save(str(d / manifest["file"]))
manifest["sha256"] = hashlib.sha256((d / manifest["file"]).read_bytes()).hexdigest()
(d / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
