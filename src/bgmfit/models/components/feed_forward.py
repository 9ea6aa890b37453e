"""Method B's branch: a feed-forward network from concatenated MFCC frames to a unit vector."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class ModulationSpectrum(nn.Module):
    """A fixed (unlearned) first layer: each coefficient's modulation spectrum over the frames.

    Row 0 is the coefficient's mean over the frames; row ``k`` is the magnitude
    of the ``k``-th DFT bin of its centred series, divided by ``sqrt(frames)``
    so that z-scored inputs give values near 1. The magnitude does not depend
    on where in the clip a pattern starts; it says how fast and how regularly
    the timbre changes (note rate, beat, bar), which the frame-by-frame
    input only shows at fixed positions.

    Shapes
    ------
    ``(batch, frames, coefficients)`` -> ``(batch, frames // 2 + 1, coefficients)``.
    """

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        mean = frames.mean(dim=1, keepdim=True)
        spectrum = torch.fft.rfft(frames - mean, dim=1).abs() / math.sqrt(frames.shape[1])
        return torch.cat([mean, spectrum[:, 1:]], dim=1)


class FeedForwardBranch(nn.Module):
    """One branch of the triplet network; the three branches share this module's weights.

    Parameters
    ----------
    in_features:
        Length of the flattened input (``frames_n * frames_n_mfcc`` for MFCC frames).
    hidden_dim:
        Width of the two hidden layers.
    embed_dim:
        Size of the output vector.
    dropout:
        Dropout after each hidden layer.
    modulation_frames:
        0: the hidden layers see the frames as they are. ``N > 0``: the input is
        ``N`` frames, and a :class:`ModulationSpectrum` layer comes first.

    Shapes
    ------
    ``(batch, ...)`` (flattened from dimension 1) -> ``(batch, embed_dim)``, L2-normalised,
    so that cosine distance is ``1 - a @ b``.
    """

    def __init__(
        self, in_features: int, hidden_dim: int, embed_dim: int, dropout: float, modulation_frames: int = 0
    ) -> None:
        super().__init__()
        self.in_features = in_features
        if modulation_frames:
            self.front: nn.Module = ModulationSpectrum()
            width = (modulation_frames // 2 + 1) * (in_features // modulation_frames)
        else:
            self.front = nn.Identity()
            width = in_features
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(width, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, embed_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(self.front(features)), dim=1)
