"""Method B's branch: a feed-forward network from concatenated MFCC frames to a unit vector."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


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

    Shapes
    ------
    ``(batch, ...)`` (flattened from dimension 1) -> ``(batch, embed_dim)``, L2-normalised,
    so that cosine distance is ``1 - a @ b``.
    """

    def __init__(self, in_features: int, hidden_dim: int, embed_dim: int, dropout: float) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, embed_dim),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.layers(features), dim=1)
