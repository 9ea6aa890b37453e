"""Method A as a LightningModule: two conv towers, a fully connected fusion, a sigmoid fit.

The module owns the loss (BCE on graded fit labels), the metrics and the
optimiser; the layers live in :mod:`bgmfit.models.components`.
"""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.classification import BinaryAUROC
from torchmetrics.retrieval import RetrievalMRR, RetrievalNormalizedDCG

from bgmfit.config import TrainMatchParams
from bgmfit.data.pairs import SAME_WORK
from bgmfit.errors import ConfigError
from bgmfit.models.components import ConvTower, MatchHead
from bgmfit.models.mining import instance_loss

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
    instance_weight:
        Weight of :func:`~bgmfit.models.mining.instance_loss` on each tower's learned feature,
        on training batches that carry a second copy of each track (``train_match.instance_weight``).
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
        instance_weight: float = 0.0,
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

    @classmethod
    def from_params(cls, params: TrainMatchParams, columns: list[str]) -> MatchModule:
        """The network that ``params.yaml: train_match`` describes, over fused ``columns`` (by name)."""
        agreement_columns, agreement_sizes = agreement_layout(params.agreement, columns)
        return cls(
            in_columns=len(columns),
            tower_channels=params.tower_channels,
            tower_depth=params.tower_depth,
            kernel_size=params.kernel_size,
            embed_dim=params.embed_dim,
            fused_dim=params.fused_dim,
            share_towers=params.share_towers,
            dropout=params.dropout,
            lr=params.lr,
            weight_decay=params.weight_decay,
            head=params.head,
            agreement_columns=agreement_columns,
            agreement_sizes=agreement_sizes,
            instance_weight=params.instance_weight,
        )

    #: The feature store's input this network reads (see ``FeatureStore.inputs``).
    # A class attribute, not a param: method A reads the fused matrix by definition, while
    # method B's input is chosen in params.yaml and saved with it (``TripletModule.input_kind``).
    input_kind = "fused"

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

    @torch.no_grad()
    def fit_matrix(self, foreground_deep: torch.Tensor, bgm_deep: torch.Tensor) -> torch.Tensor:
        """Predicted fit ``(foregrounds, bgms)`` of every foreground with every BGM, from deep features.

        The one way both the evaluation and the service score pairs: towers once per track,
        the head once per pair.
        """
        n_fg, n_bg = len(foreground_deep), len(bgm_deep)
        logits = self.head(foreground_deep.repeat_interleave(n_bg, dim=0), bgm_deep.repeat(n_fg, 1))
        return torch.sigmoid(logits).reshape(n_fg, n_bg)

    def query_fit(self, query_deep: torch.Tensor, bgm_deep: torch.Tensor) -> torch.Tensor:
        """Fit ``(bgms,)`` of one query, given the deep features of its windows, with each BGM window.

        The rule for a query of many windows: its mean fit over them. The query is heard whole,
        one odd window (an intro, a pause) moves it little, and a shift of a second, which
        changes each window a little, changes the mean less.
        """
        return self.fit_matrix(query_deep, bgm_deep).mean(dim=0)

    def _common_step(self, batch, stage: str) -> torch.Tensor:
        foreground, bgm, grade, foreground_row = batch[:4]
        fg_deep, bgm_deep = self.embed(foreground, "foreground"), self.embed(bgm, "bgm")
        logit = self.head(fg_deep, bgm_deep)
        loss = F.binary_cross_entropy_with_logits(logit, grade)
        if len(batch) == 8:  # a second copy of each track (PairDataModule two_views)
            learned = self.hparams.embed_dim  # the passthrough columns after it are not learned
            fg_view, bgm_view, fg_track, bgm_track = batch[4:]
            instance = instance_loss(
                fg_deep[:, :learned], self.embed(fg_view, "foreground")[:, :learned], fg_track
            ) + instance_loss(bgm_deep[:, :learned], self.embed(bgm_view, "bgm")[:, :learned], bgm_track)
            self.log(
                f"{stage}/instance_loss", instance, on_step=False, on_epoch=True, batch_size=grade.numel()
            )
            loss = loss + self.hparams.instance_weight * instance
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


def agreement_layout(
    names: tuple[str, ...] | list[str], columns: list[str]
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Where ``train_match.agreement``'s entries sit among the fused columns.

    A plain name is one column. A name ending in ``*`` is a profile: every
    column it prefixes, in order, compared as one vector (``key_corr_*``, the
    24 key correlations).

    Returns
    -------
    tuple
        The column indices, in order, and the size of each entry's group.

    Raises
    ------
    ConfigError
        For a name that is not a fused column, listing the ones there are, and
        for a profile that matches fewer than two.
    """
    indices: list[int] = []
    sizes: list[int] = []
    for name in names:
        if name.endswith("*"):
            group = [i for i, c in enumerate(columns) if c.startswith(name[:-1])]
            if not group:
                raise ConfigError(
                    f"params.yaml: train_match.agreement: {name!r} matches no fused feature column"
                )
            if len(group) == 1:
                raise ConfigError(
                    f"params.yaml: train_match.agreement: {name!r} matches 1 column ({columns[group[0]]}); "
                    "a profile needs 2 or more, or name the column without '*'"
                )
        elif name in columns:
            group = [columns.index(name)]
        else:
            raise ConfigError(
                f"params.yaml: train_match.agreement: {name!r} is not a fused feature column; "
                f"the columns are: {', '.join(columns)}"
            )
        indices += group
        sizes.append(len(group))
    return tuple(indices), tuple(sizes)
