"""Method A's head: concatenated deep features -> fully connected -> sigmoid fit."""

from __future__ import annotations

import torch
from torch import nn


class MatchHead(nn.Module):
    """Fully connected layer over two concatenated deep features, then a fit logit.

    Parameters
    ----------
    embed_dim:
        Size of each tower's deep feature.
    fused_dim:
        Size of the deep fused feature (the fully connected layer's output).
    dropout:
        Dropout on the deep fused feature.

    ``forward`` returns the logit; apply ``torch.sigmoid`` for the fit in (0, 1).
    The logit form lets the loss use the numerically stable
    ``binary_cross_entropy_with_logits``.
    """

    def __init__(self, embed_dim: int, fused_dim: int, dropout: float) -> None:
        super().__init__()
        self.fuse = nn.Sequential(nn.Linear(2 * embed_dim, fused_dim), nn.ReLU(), nn.Dropout(dropout))
        self.score = nn.Linear(fused_dim, 1)

    def deep_fused(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """``(batch, fused_dim)``: the fully connected layer over ``[foreground, bgm]``."""
        return self.fuse(torch.cat([foreground, bgm], dim=1))

    def forward(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        return self.score(self.deep_fused(foreground, bgm)).squeeze(1)
