"""``train_match`` stage: method A, the pair-fit network, tracked in MLflow.

Outputs under ``models/match/``: ``model.ckpt`` (the best checkpoint),
``training.json`` (run id, best score, epochs), and ``checkpoints/`` (kept
between runs, so that ``resume: true`` can continue a killed run).
"""

from __future__ import annotations

from pathlib import Path

import lightning as L

from bgmfit.config import TrainMatchParams
from bgmfit.data.datamodules import PairDataModule
from bgmfit.data.store import FEATURES_DIR, FeatureStore
from bgmfit.errors import ConfigError
from bgmfit.models.match_module import MODE, MONITOR, MatchModule, PairScorer
from bgmfit.models.training import train_and_log
from bgmfit.stages.common import write_json

OUT_DIR = Path("models/match")
METRICS = Path("metrics/train_match.json")
EXPERIMENT = "train_match"


def run(
    params: TrainMatchParams,
    features_dir: Path = FEATURES_DIR,
    out_dir: Path = OUT_DIR,
    metrics_path: Path = METRICS,
) -> dict:
    """Train, keep the best checkpoint, log it to MLflow; return the summary written to ``metrics_path``."""
    # Seed before the network is built, so that its initial weights are reproducible too.
    L.seed_everything(params.seed, workers=True, verbose=False)
    store = FeatureStore.load(features_dir)
    datamodule = PairDataModule(store, params.batch_size, params.seed)
    agreement_columns, agreement_sizes = agreement_layout(params.agreement, store.columns)
    module = MatchModule(
        in_columns=store.fused.shape[2],
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
    )
    result = train_and_log(
        EXPERIMENT,
        module,
        datamodule,
        params,
        out_dir,
        MONITOR,
        MODE,
        dataset=(store.fused, features_dir / "fused.npy"),
        servable=PairScorer,
        example=store.fused[:2, None].repeat(2, axis=1),  # (pairs, 2, segments, columns)
    )
    summary = {"best_val_ndcg_at_10": result.best_score, "epochs": result.epochs, "steps": result.global_step}
    write_json(metrics_path, summary)
    return summary


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
