"""Evaluation plots as PNG (for people and MLflow) and CSV (for ``dvc plots``)."""

from __future__ import annotations

import csv
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers or CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.metrics import precision_recall_curve, roc_curve  # noqa: E402


def write_csv(path: Path, rows: list[dict]) -> None:
    """Write dict rows with a header; the columns are the first row's keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def curves(out_dir: Path, fits: np.ndarray, scored: dict[str, np.ndarray]) -> list[Path]:
    """ROC and PR curves of every scorer (model and baselines); CSVs of the first scorer.

    Parameters
    ----------
    fits:
        Binary truth (grade > 0).
    scored:
        ``name -> scores``; the first entry is the model.
    """
    figure, (roc_axis, pr_axis) = plt.subplots(1, 2, figsize=(10, 4.5))
    for index, (name, scores) in enumerate(scored.items()):
        fpr, tpr, _ = roc_curve(fits, scores)
        precision, recall, _ = precision_recall_curve(fits, scores)
        roc_axis.plot(fpr, tpr, label=name)
        pr_axis.plot(recall, precision, label=name)
        if index == 0:
            write_csv(
                out_dir / "match_roc.csv",
                [{"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr, strict=True)],
            )
            write_csv(
                out_dir / "match_pr.csv",
                [{"recall": float(a), "precision": float(b)} for a, b in zip(recall, precision, strict=True)],
            )
    roc_axis.plot([0, 1], [0, 1], color="grey", linestyle=":")
    roc_axis.set(
        title="ROC: fits (grade > 0) vs not", xlabel="false positive rate", ylabel="true positive rate"
    )
    pr_axis.set(title="Precision-recall", xlabel="recall", ylabel="precision")
    for axis in (roc_axis, pr_axis):
        axis.legend(loc="lower right")
    return [_save(figure, out_dir / "match_roc_pr.png")]


def reliability(out_dir: Path, curve: list[dict[str, float]]) -> list[Path]:
    """Reliability diagram: mean predicted fit against mean true grade per bin."""
    write_csv(out_dir / "match_reliability.csv", curve)
    figure, axis = plt.subplots(figsize=(5, 5))
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfect")
    axis.plot([c["predicted"] for c in curve], [c["observed"] for c in curve], marker="o", label="model")
    axis.set(title="Reliability (graded fit)", xlabel="mean predicted fit", ylabel="mean true grade")
    axis.legend()
    return [_save(figure, out_dir / "match_reliability.png")]


def projection(out_dir: Path, name: str, embeddings: np.ndarray, styles: np.ndarray) -> list[Path]:
    """2-D PCA projection of embeddings, coloured by style."""
    points = PCA(n_components=2, random_state=0).fit_transform(embeddings)
    figure, axis = plt.subplots(figsize=(7, 6))
    for style in sorted(set(styles)):
        members = styles == style
        axis.scatter(points[members, 0], points[members, 1], s=12, label=style, alpha=0.8)
    axis.set(title=f"{name}: test embeddings (PCA)", xlabel="PC 1", ylabel="PC 2")
    axis.legend(fontsize=8, markerscale=1.5, loc="best")
    return [_save(figure, out_dir / f"{name}_projection.png")]


def per_style_bars(out_dir: Path, name: str, metric: str, values: dict[str, dict[str, float]]) -> list[Path]:
    """Grouped bars of one metric per style, one bar per scorer (model and baselines)."""
    scorers = list(values)
    styles = sorted(next(iter(values.values())))
    width = 0.8 / len(scorers)
    figure, axis = plt.subplots(figsize=(max(6, len(styles) * 0.9), 4.5))
    for i, scorer in enumerate(scorers):
        axis.bar(
            np.arange(len(styles)) + i * width,
            [values[scorer].get(s, np.nan) for s in styles],
            width,
            label=scorer,
        )
    axis.set_xticks(np.arange(len(styles)) + 0.4 - width / 2, styles, rotation=30, ha="right")
    axis.set(title=f"{name}: {metric} per style", ylabel=metric, ylim=(0, 1))
    axis.legend()
    write_csv(
        out_dir / f"{name}_per_style.csv",
        [{"style": s, **{k: values[k].get(s) for k in scorers}} for s in styles],
    )
    return [_save(figure, out_dir / f"{name}_per_style.png")]


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
