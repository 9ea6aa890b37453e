"""Method A as a LightningModule: two conv towers, a fully connected fusion, a sigmoid fit.

The module owns the loss (BCE on graded fit labels), the metrics and the
optimiser; the layers live in :mod:`bgmfit.models.components`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC
from torchmetrics.retrieval import RetrievalMRR, RetrievalNormalizedDCG

from bgmfit.data.pairs import SAME_WORK
from bgmfit.models.components import ConvTower, MatchHead

# Checkpoints are chosen by the ranking /recommend returns: each val foreground ranks every val
# BGM, scored by nDCG@10 with the graded fit (own work 1.0, same style 0.5). val/auroc (fits vs
# not) picks epochs that rank own partners worse; val/mrr alone, epochs that no longer tell styles apart.
MONITOR, MODE = "val/ndcg_at_10", "max"


class MatchModule(L.LightningModule):
    """The pair-fit network.

    Parameters
    ----------
    in_columns:
        Columns of the fused matrix.
    tower_channels, tower_depth, kernel_size, embed_dim:
        See :class:`bgmfit.models.components.ConvTower`.
    fused_dim:
        Size of the deep fused feature.
    share_towers:
        One tower for both sides when true.
    dropout, lr, weight_decay:
        Regularisation and AdamW settings.
    head:
        What the head's fully connected layer sees; see :class:`bgmfit.models.components.MatchHead`.
    agreement_columns:
        Indices of fused columns the head compares across the sides through
        agreement kernels; each tower passes their segment means through.
    agreement_sizes:
        How ``agreement_columns`` group, in order: 1 for a single column, more
        for a profile compared by cosine (see :class:`MatchHead`). ``None``:
        every column alone.
    """

    def __init__(
        self,
        in_columns: int,
        tower_channels: int,
        tower_depth: int,
        kernel_size: int,
        embed_dim: int,
        fused_dim: int,
        share_towers: bool,
        dropout: float,
        lr: float,
        weight_decay: float,
        head: str = "concat",
        agreement_columns: tuple[int, ...] = (),
        agreement_sizes: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        if agreement_sizes is None:
            agreement_sizes = (1,) * len(agreement_columns)
        if sum(agreement_sizes) != len(agreement_columns):
            raise ValueError(
                f"agreement_sizes {tuple(agreement_sizes)} must add up to the "
                f"{len(agreement_columns)} agreement_columns"
            )
        self.save_hyperparameters()
        tower = dict(
            in_columns=in_columns,
            channels=tower_channels,
            depth=tower_depth,
            kernel_size=kernel_size,
            embed_dim=embed_dim,
            dropout=dropout,
            passthrough=tuple(agreement_columns),
        )
        self.foreground_tower = ConvTower(**tower)
        self.bgm_tower = self.foreground_tower if share_towers else ConvTower(**tower)
        self.head = MatchHead(embed_dim, fused_dim, dropout, head, tuple(agreement_sizes))
        self.val_auroc = BinaryAUROC()
        # Each val foreground ranks every val BGM, as in the evaluation: MRR of its own work's
        # BGM, and nDCG@10 with the graded fit as relevance.
        self.val_mrr = RetrievalMRR(empty_target_action="skip")
        self.val_ndcg = RetrievalNormalizedDCG(top_k=10, empty_target_action="skip")

    def embed(self, fused: torch.Tensor, side: str = "bgm") -> torch.Tensor:
        """Deep features of fused matrices ``(batch, segments, columns)`` through one side's tower.

        ``(batch, embed_dim + len(agreement_columns))``: the learned feature, then those columns' means.
        """
        if side not in ("foreground", "bgm"):
            raise ValueError(f"side must be 'foreground' or 'bgm', got {side!r}")
        return (self.foreground_tower if side == "foreground" else self.bgm_tower)(fused)

    def forward(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """Predicted fit in (0, 1) for each (foreground, BGM) pair of fused matrices."""
        return torch.sigmoid(self.logit(foreground, bgm))

    def logit(self, foreground: torch.Tensor, bgm: torch.Tensor) -> torch.Tensor:
        """The fit before the sigmoid."""
        return self.head(self.embed(foreground, "foreground"), self.embed(bgm, "bgm"))

    def _common_step(self, batch, stage: str) -> torch.Tensor:
        foreground, bgm, grade, foreground_row = batch
        logit = self.logit(foreground, bgm)
        loss = F.binary_cross_entropy_with_logits(logit, grade)
        self.log(
            f"{stage}/loss",
            loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            batch_size=grade.numel(),
            sync_dist=True,
        )
        if stage == "val":
            # Probabilities, not logits: torchmetrics' retrieval metrics count a pred <= 0 as not retrieved.
            fit = torch.sigmoid(logit)
            self.val_auroc.update(fit, (grade > 0).long())
            self.log("val/auroc", self.val_auroc, on_step=False, on_epoch=True, prog_bar=True)
            self.val_mrr.update(fit, grade >= SAME_WORK, indexes=foreground_row)
            self.val_ndcg.update(fit, grade, indexes=foreground_row)
            self.log("val/mrr", self.val_mrr, on_step=False, on_epoch=True, prog_bar=True)
            self.log("val/ndcg_at_10", self.val_ndcg, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._common_step(batch, "val")

    def configure_optimizers(self):
        return torch.optim.AdamW(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay
        )


class PairScorer(nn.Module):
    """Method A behind one tensor, for MLflow's pyfunc: ``(batch, 2, segments, columns)`` -> fit ``(batch,)``.

    Index 0 of the second axis is the foreground, index 1 the BGM.
    """

    def __init__(self, match: MatchModule) -> None:
        super().__init__()
        self.match = match

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        return self.match(pairs[:, 0], pairs[:, 1])
