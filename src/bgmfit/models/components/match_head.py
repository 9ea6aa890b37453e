"""Method A's head: concatenated deep features -> fully connected -> sigmoid fit."""

from __future__ import annotations

import torch
from torch import nn

from bgmfit.config import HEAD_TERMS


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
    terms:
        ``concat``: the layer sees ``[f, b]``, as the method states it.
        ``interactions``: it also sees ``f * b`` and ``|f - b|``, so that one
        layer can test agreement between the sides (same tempo, same key)
        rather than each side alone.

    ``forward`` returns the logit; apply ``torch.sigmoid`` for the fit in (0, 1).
    The logit form lets the loss use the numerically stable
    ``binary_cross_entropy_with_logits``.
    """

    def __init__(self, embed_dim: int, fused_dim: int, dropout: float, terms: str = "concat") -> None:
        super().__init__()
        if terms not in HEAD_TERMS:
            raise ValueError(f"terms must be one of {', '.join(HEAD_TERMS)}, got {terms!r}")
        self.terms = terms
        width = (2 if terms == "concat" else 4) * embed_dim
        self.fuse = nn.Sequential(nn.Linear(width, fused_dim), nn.ReLU(), nn.Dropout(dropout))
        self.score = nn.Linear(fused_dim, 1)

    def __setstate__(self, state: dict) -> None:
        # Registered versions are pickled modules; those from before ``terms`` existed were concat heads.
        state.setdefault("terms", "concat")
        super().__setstate__(state)

    def deep_fused(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """``(batch, fused_dim)``: the fully connected layer over ``[foreground, bgm]`` (+ interactions)."""
        parts = [foreground, bgm]
        if self.terms == "interactions":
            parts += [foreground * bgm, (foreground - bgm).abs()]
        return self.fuse(torch.cat(parts, dim=1))

    def forward(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        return self.score(self.deep_fused(foreground, bgm)).squeeze(1)
