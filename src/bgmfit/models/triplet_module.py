"""Method B as a LightningModule: a shared feed-forward branch trained with triplet margin loss.

The three branches of the triplet network are one module applied to the
anchor, positive and negative; mining picks the triplets inside each batch.
"""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from torch.nn import functional as F

from bgmfit.config import TrainTripletParams
from bgmfit.metrics import style_retrieval
from bgmfit.models.components import FeedForwardBranch
from bgmfit.models.mining import (
    constraint_satisfaction,
    cosine_distances,
    instance_loss,
    mine_triplets,
    triplet_margin_loss,
)

# Validation sees the whole val catalogue as one batch (TripletDataModule), so this is
# the MAP@10 that the evaluation reports on the test split, of the style part alone.
MONITOR, MODE = "val/map_at_10", "max"


class TripletModule(L.LightningModule):
    """The triplet style network.

    Parameters
    ----------
    in_features:
        Flattened input length.
    hidden_dim, embed_dim, dropout:
        See :class:`bgmfit.models.components.FeedForwardBranch`.
    margin:
        Triplet margin on cosine distance.
    mining:
        ``semi-hard`` or ``hard``.
    lr, weight_decay:
        AdamW settings.
    modulation_frames:
        See :class:`bgmfit.models.components.FeedForwardBranch`; 0 for none.
    input_kind:
        The feature store's input it reads: ``mfcc_frames`` or ``fused`` (``train_triplet.input``).
    instance_weight:
        Weight of :func:`~bgmfit.models.mining.instance_loss` on training batches that carry a
        second copy of each track (``train_triplet.instance_weight``).
    timbre_weight, timbre_columns:
        ``timbre_weight`` > 0 appends to each embedding, at that weight, the input's timbre
        statistics: each column's mean and spread over time (``timbre_columns`` of them),
        centred on the training tracks' (:meth:`fit_timbre_centre`) and made unit length.
        Unlearned, and not used by the triplet loss; see :meth:`forward`.
    """

    def __init__(
        self,
        in_features: int,
        hidden_dim: int,
        embed_dim: int,
        dropout: float,
        margin: float,
        mining: str,
        lr: float,
        weight_decay: float,
        modulation_frames: int = 0,
        input_kind: str = "mfcc_frames",
        instance_weight: float = 0.0,
        timbre_weight: float = 0.0,
        timbre_columns: int = 0,
    ) -> None:
        super().__init__()
        # Without the term, neither its arguments nor its buffer are saved: such a network has the
        # config, weights and hash (so the registry version) of the versions from before the term.
        self.save_hyperparameters(ignore=[] if timbre_weight else ["timbre_weight", "timbre_columns"])
        self.branch = FeedForwardBranch(in_features, hidden_dim, embed_dim, dropout, modulation_frames)
        if timbre_weight:
            self.register_buffer("timbre_centre", torch.zeros(2 * timbre_columns))

    @classmethod
    def from_params(cls, params: TrainTripletParams, input_shape: tuple[int, ...]) -> TripletModule:
        """The network that ``params.yaml: train_triplet`` describes, for inputs of ``input_shape``.

        ``input_shape`` is one track's ``(frames, coefficients)`` (or ``(segments, columns)``).
        """
        return cls(
            in_features=int(np.prod(input_shape)),
            hidden_dim=params.hidden_dim,
            embed_dim=params.embed_dim,
            dropout=params.dropout,
            margin=params.margin,
            mining=params.mining,
            lr=params.lr,
            weight_decay=params.weight_decay,
            modulation_frames=int(input_shape[0]) if params.front == "modulation" else 0,
            input_kind=params.input,
            instance_weight=params.instance_weight,
            timbre_weight=params.timbre_weight,
            timbre_columns=int(input_shape[-1]),
        )

    @property
    def input_kind(self) -> str:
        """The feature store's input this network reads (see ``FeatureStore.inputs``)."""
        return self.hparams.input_kind

    @staticmethod
    def _timbre(features: torch.Tensor) -> torch.Tensor:
        return torch.cat([features.mean(dim=1), features.std(dim=1, correction=0)], dim=1)

    @torch.no_grad()
    def fit_timbre_centre(self, features: np.ndarray) -> None:
        """Centre the timbre statistics on those of ``features`` (the training tracks' inputs)."""
        if self.hparams.get("timbre_weight"):
            self.timbre_centre.copy_(self._timbre(torch.from_numpy(features)).mean(dim=0))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings ``(batch, embed_dim)``, or ``(batch, embed_dim + 2 * timbre_columns)``.

        With a ``timbre_weight`` w, the embedding is ``[style, sqrt(w) * timbre] / sqrt(1 + w)``:
        its cosine similarity with another is the style's plus w times the timbre statistics',
        over 1 + w. Pieces of one style sit a median 0.001 apart in style alone, so the order
        among them was noise that a re-encode or a shift reshuffled; with w > 0 the nearer
        timbre decides it instead. Validation chose 0.05 (3 seeds, CHANGELOG); ``params.yaml``
        ships 0, off, for the reason given there.
        """
        style = self.branch(features)
        weight = self.hparams.get("timbre_weight", 0.0)
        if not weight:
            return style
        timbre = F.normalize(self._timbre(features) - self.timbre_centre, dim=1)
        return torch.cat([style, math.sqrt(weight) * timbre], dim=1) / math.sqrt(1.0 + weight)

    def _common_step(self, batch, stage: str) -> torch.Tensor:
        features, styles = batch[:2]
        embeddings = self.branch(features)
        distances = cosine_distances(embeddings)
        anchor, positive, negative = mine_triplets(
            distances, styles, self.hparams.margin, self.hparams.mining
        )
        loss = triplet_margin_loss(distances, anchor, positive, negative, self.hparams.margin)
        if len(batch) == 4:  # a second copy of each track (TripletDataModule two_views)
            instance = instance_loss(embeddings, self.branch(batch[2]), batch[3])
            self.log(
                f"{stage}/instance_loss", instance, on_step=False, on_epoch=True, batch_size=styles.numel()
            )
            loss = loss + self.hparams.instance_weight * instance
        size = styles.numel()
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=size,
            sync_dist=True,
        )
        satisfaction = constraint_satisfaction(distances.detach(), styles)
        self.log(
            f"{stage}/triplet_satisfaction",
            satisfaction,
            on_step=False,
            on_epoch=True,
            batch_size=size,
            sync_dist=True,
        )
        if stage == "val":
            retrieval = style_retrieval(distances.detach().cpu().numpy(), styles.cpu().numpy())
            self.log(
                "val/map_at_10",
                retrieval["map@10"],
                on_step=False,
                on_epoch=True,
                batch_size=size,
                sync_dist=True,
            )
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )
