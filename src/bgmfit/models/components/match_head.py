"""Method A's head: concatenated deep features -> fully connected -> sigmoid fit."""

from __future__ import annotations

from typing import get_args

import torch
from torch import nn
from torch.nn import functional as F

from bgmfit.config import HeadTerms


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
        The unlearned columns that end each deep feature (the towers'
        ``passthrough``), as the sizes of consecutive groups. For each group the
        layer also sees a kernel ``exp(-(gap / width) ** 2)``: 1 when the two
        sides agree, falling to 0 as they part. A group of one column (the
        tempo) has the gap ``f - b``; a longer group is a profile (the 24 key
        correlations), whose gap is ``1 - cos(f, b)``, so that only its shape
        counts. ``width`` is learned, per group. Method A's ranking needs this
        for a column like the tempo, where a 1 % gap separates a foreground's
        own accompaniment from other pieces of its style: as a plain input
        beside 256 learned ones, such a gap is too small for the layer to pick up.
    agreement_width, profile_width:
        The kernels' starting widths: for single columns in the normalised
        units of the fused matrix, for profiles in units of cosine gap.

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
        agreement: tuple[int, ...] = (),
        agreement_width: float = 0.01,
        profile_width: float = 0.5,
    ) -> None:
        super().__init__()
        if terms not in get_args(HeadTerms):
            raise ValueError(f"terms must be one of {', '.join(get_args(HeadTerms))}, got {terms!r}")
        if any(n < 1 for n in agreement):
            raise ValueError(f"agreement group sizes must be >= 1, got {tuple(agreement)}")
        self.terms = terms
        self.agreement_sizes = tuple(int(n) for n in agreement)
        self.agreement = sum(self.agreement_sizes)  # columns passed through
        widths = [agreement_width if n == 1 else profile_width for n in self.agreement_sizes]
        self.log_width = nn.Parameter(torch.tensor(widths, dtype=torch.float32).log())
        width = (2 if terms == "concat" else 4) * embed_dim + len(self.agreement_sizes)
        self.fuse = nn.Sequential(nn.Linear(width, fused_dim), nn.ReLU(), nn.Dropout(dropout))
        self.score = nn.Linear(fused_dim, 1)

    def agreement_kernels(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """``(batch, len(agreement_sizes))``: each group's kernel, 1 where the sides agree."""
        start = foreground.shape[1] - self.agreement
        gaps = []
        for size in self.agreement_sizes:
            f, b = foreground[:, start : start + size], bgm[:, start : start + size]
            gaps.append(f[:, 0] - b[:, 0] if size == 1 else 1.0 - F.cosine_similarity(f, b, dim=1))
            start += size
        return torch.exp(-(torch.stack(gaps, dim=1) / self.log_width.exp()).square())

    def deep_fused(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """``(batch, fused_dim)``: the fully connected layer over ``[foreground, bgm]``
        (+ interactions, + agreement kernels)."""
        learned = foreground.shape[1] - self.agreement
        f, b = foreground[:, :learned], bgm[:, :learned]
        parts = [f, b]
        if self.terms == "interactions":
            parts += [f * b, (f - b).abs()]
        if self.agreement:
            parts.append(self.agreement_kernels(foreground, bgm))
        return self.fuse(torch.cat(parts, dim=1))

    def forward(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        return self.score(self.deep_fused(foreground, bgm)).squeeze(1)
