"""The model's architecture and its data, made in code so training needs no download.

The task: 8 features drawn from a standard normal, 4 classes given by a nonlinear rule
(the sign of x0*x1 and whether (x2, x3) lies outside a circle). A linear model cannot
learn it; the MLP below can, better the longer it trains.
"""
import torch
from torch import nn

FEATURES = 8
CLASSES = 4
HIDDEN = 2048


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic inputs and labels for the task (pure: same n and seed, same tensors)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, FEATURES, generator=g)
    quadrant = (x[:, 0] * x[:, 1] > 0).long()
    outside = (x[:, 2] ** 2 + x[:, 3] ** 2 > 1.4).long()
    return x, quadrant * 2 + outside


class Classifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(FEATURES, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, HIDDEN), nn.ReLU(),
            nn.Linear(HIDDEN, CLASSES),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=-1)
