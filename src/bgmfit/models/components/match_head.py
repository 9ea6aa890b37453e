"""Method A's head: concatenated deep features -> fully connected -> sigmoid fit."""

from __future__ import annotations

import math

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
    agreement:
        How many unlearned columns end each deep feature (the towers'
        ``passthrough``). For each, the layer also sees
        ``exp(-((f - b) / width) ** 2)``: 1 when the two sides agree, falling
        to 0 as they part. ``width`` is learned, per column, from
        ``agreement_width``. Method A's ranking needs this for a column like
        the tempo, where a 1 % gap separates a foreground's own accompaniment
        from other pieces of its style: as a plain input beside 256 learned
        ones, such a gap is too small for the layer to pick up.
    agreement_width:
        The kernel's starting width, in the normalised units of the fused matrix.

    ``foreground`` and ``bgm`` are ``(batch, embed_dim + agreement)``.

    ``forward`` returns the logit; apply ``torch.sigmoid`` for the fit in (0, 1).
    The logit form lets the loss use the numerically stable
    ``binary_cross_entropy_with_logits``.
    """

    def __init__(
        self,
        embed_dim: int,
        fused_dim: int,
        dropout: float,
        terms: str = "concat",
        agreement: int = 0,
        agreement_width: float = 0.01,
    ) -> None:
        super().__init__()
        if terms not in HEAD_TERMS:
            raise ValueError(f"terms must be one of {', '.join(HEAD_TERMS)}, got {terms!r}")
        self.terms = terms
        self.agreement = agreement
        self.log_width = nn.Parameter(torch.full((agreement,), math.log(agreement_width)))
        width = (2 if terms == "concat" else 4) * embed_dim + agreement
        self.fuse = nn.Sequential(nn.Linear(width, fused_dim), nn.ReLU(), nn.Dropout(dropout))
        self.score = nn.Linear(fused_dim, 1)

    def __setstate__(self, state: dict) -> None:
        # Registered versions are pickled modules; those from before ``terms`` existed were
        # concat heads, and those from before ``agreement`` had none.
        state.setdefault("terms", "concat")
        state.setdefault("agreement", 0)
        super().__setstate__(state)

    def deep_fused(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """``(batch, fused_dim)``: the fully connected layer over ``[foreground, bgm]``
        (+ interactions, + agreement kernels)."""
        learned = foreground.shape[1] - self.agreement
        f, b = foreground[:, :learned], bgm[:, :learned]
        parts = [f, b]
        if self.terms == "interactions":
            parts += [f * b, (f - b).abs()]
        if self.agreement:
            gap = (foreground[:, learned:] - bgm[:, learned:]) / self.log_width.exp()
            parts.append(torch.exp(-gap.square()))
        return self.fuse(torch.cat(parts, dim=1))

    def forward(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        return self.score(self.deep_fused(foreground, bgm)).squeeze(1)
