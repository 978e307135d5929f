"""A model of two inputs, as a text model takes token ids and an attention mask: its manifest, two rows
of each input, and the TorchScript-able module (tests/unit/test_several_inputs.py, test_hostile_input.py)."""
import torch
from torch import nn

DOC = {"name": "masked", "version": "1", "sha256": "0" * 64, "num_classes": 3, "accuracy": 0.9,
       "inputs": [{"name": "tokens", "datatype": "INT64", "shape": [4], "range": [0, 9]},
                  {"name": "mask", "datatype": "FP32", "shape": [4]}]}
TOKENS, MASK = [[1, 2, 3, 4], [5, 6, 7, 8]], [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]


class Masked(nn.Module):
    """Three classes from token ids and a mask: sum of the kept tokens, one-hot of its value mod 3."""

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        kept = (tokens.float() * mask).sum(dim=1).long() % 3
        return nn.functional.one_hot(kept, 3).float()
