"""Method A's convolutional tower: a fused feature matrix in, a deep feature out."""

from __future__ import annotations

import torch
from torch import nn


class ConvTower(nn.Module):
    """1-D convolutions that slide over the segment (time) axis of a fused matrix.

    Parameters
    ----------
    in_columns:
        Columns of the fused matrix (the convolution's input channels).
    channels:
        Channels of every convolution.
    depth:
        Number of convolution + batch-norm + ReLU blocks.
    kernel_size:
        Kernel width in segments (odd, so that padding keeps the length).
    embed_dim:
        Size of the deep feature.
    dropout:
        Dropout before the projection.
    passthrough:
        Input columns whose mean over the segments is appended, unlearned, to
        the deep feature, so that the head can compare them across the sides
        at full precision (see ``agreement`` in :class:`MatchHead`).

    Shapes
    ------
    ``(batch, segments, in_columns)`` -> ``(batch, embed_dim + len(passthrough))``.
    """

    def __init__(
        self,
        in_columns: int,
        channels: int,
        depth: int,
        kernel_size: int,
        embed_dim: int,
        dropout: float,
        passthrough: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.passthrough = tuple(passthrough)
        blocks: list[nn.Module] = []
        width = in_columns
        for _ in range(depth):
            blocks += [
                nn.Conv1d(width, channels, kernel_size, padding=kernel_size // 2),
                nn.BatchNorm1d(channels),
                nn.ReLU(),
            ]
            width = channels
        self.convolutions = nn.Sequential(*blocks)
        # Mean and max over time: the mean keeps the overall character, the max the peaks.
        self.project = nn.Sequential(nn.Dropout(dropout), nn.Linear(2 * channels, embed_dim))

    def forward(self, fused: torch.Tensor) -> torch.Tensor:
        hidden = self.convolutions(fused.transpose(1, 2))
        pooled = torch.cat([hidden.mean(dim=2), hidden.amax(dim=2)], dim=1)
        deep = self.project(pooled)
        if not self.passthrough:
            return deep
        return torch.cat([deep, fused[:, :, list(self.passthrough)].mean(dim=1)], dim=1)
