"""Score both networks and their baselines on the held-out (test) works."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bgmfit.data.pairs import fit_grade
from bgmfit.data.store import FeatureStore
from bgmfit.metrics import (
    calibrated,
    cosine_distance_matrix,
    expected_calibration_error,
    fit_calibration,
    pair_classification,
    partner_retrieval,
    reliability_curve,
    style_retrieval,
)
from bgmfit.models.match_module import MatchModule
from bgmfit.models.mining import constraint_satisfaction
from bgmfit.models.triplet_module import TripletModule

KIND_OF_ROLE = {"foreground": "melody", "narration": "narration"}


@dataclass(frozen=True)
class MatchEvaluation:
    """Method A on the test split: every foreground against every BGM."""

    scores: dict[str, np.ndarray]  # scorer -> (foregrounds, bgms) predicted fit
    relevance: np.ndarray  # (foregrounds, bgms) graded fit
    styles: np.ndarray  # style of each foreground
    kinds: np.ndarray  # melody | narration of each foreground


@torch.no_grad()
def score_match(store: FeatureStore, model: MatchModule, seed: int, split: str = "test") -> MatchEvaluation:
    """Predicted fit of every (foreground, BGM) pair of a split, for the model and two baselines.

    Baselines: ``cosine`` rescales the cosine similarity of the untrained fused
    features to [0, 1]; ``random`` draws uniform scores.
    """
    foregrounds, bgms = store.foregrounds(split), store.bgms(split)
    if foregrounds.size == 0 or bgms.size == 0:
        raise ValueError(f"the {split} split has no foreground or no BGM tracks")
    model.eval()
    fg_deep = model.embed(torch.from_numpy(store.fused[foregrounds]), "foreground")
    bg_deep = model.embed(torch.from_numpy(store.fused[bgms]), "bgm")
    n_fg, n_bg = len(foregrounds), len(bgms)
    flat = lambda rows: store.fused[rows].reshape(len(rows), -1)  # noqa: E731
    scores = {
        "model": model.fit_matrix(fg_deep, bg_deep).numpy(),
        "baseline_cosine": 1.0 - cosine_distance_matrix(flat(foregrounds), flat(bgms)) / 2.0,
        "baseline_random": np.random.default_rng(seed).uniform(size=(n_fg, n_bg)),
    }
    relevance = np.array([[fit_grade(store, f, b) for b in bgms] for f in foregrounds], dtype=np.float64)
    return MatchEvaluation(
        scores=scores,
        relevance=relevance,
        styles=np.array([store.tracks[f].style for f in foregrounds]),
        kinds=np.array([KIND_OF_ROLE[store.tracks[f].role] for f in foregrounds]),
    )


def match_metrics(evaluation: MatchEvaluation) -> tuple[dict, dict[str, dict[str, dict[str, float]]]]:
    """Metrics of every scorer over all test foregrounds, and the model's per style and per kind.

    Returns
    -------
    tuple
        ``(metrics, per_style)``: ``per_style`` maps scorer -> style -> metrics,
        for the per-style bar plot that sets the model beside its baselines.
    """

    def block(scores: np.ndarray, rows: np.ndarray) -> dict[str, float]:
        predicted, relevance = scores[rows], evaluation.relevance[rows]
        return (
            pair_classification(predicted.ravel(), relevance.ravel())
            | partner_retrieval(predicted, relevance)
            | {"ece": expected_calibration_error(predicted.ravel(), relevance.ravel())}
        )

    everyone = np.ones(len(evaluation.styles), dtype=bool)
    styles = sorted(set(evaluation.styles))
    result: dict = {name: block(scores, everyone) for name, scores in evaluation.scores.items()}
    per_style = {
        name: {s: block(scores, evaluation.styles == s) for s in styles}
        for name, scores in evaluation.scores.items()
    }
    model = evaluation.scores["model"]
    result["per_style"] = per_style["model"]
    result["per_kind"] = {k: block(model, evaluation.kinds == k) for k in sorted(set(evaluation.kinds))}
    result["test"] = {"foregrounds": int(model.shape[0]), "bgms": int(model.shape[1])}
    return result, per_style


def match_calibration(test: MatchEvaluation, val: MatchEvaluation) -> dict:
    """Isotonic calibration of the model's fits, fitted on ``val``; the test ECE before and after."""
    calibration = fit_calibration(val.scores["model"].ravel(), val.relevance.ravel())
    predicted, grades = test.scores["model"].ravel(), test.relevance.ravel()
    return {
        "method": "isotonic",
        "knots": len(calibration["x"]),
        "ece_before": expected_calibration_error(predicted, grades),
        "ece_after": expected_calibration_error(calibrated(predicted, calibration), grades),
        "val_pairs": int(val.relevance.size),
    }


def match_reliability(evaluation: MatchEvaluation) -> list[dict[str, float]]:
    """The model's reliability-diagram points over all test pairs."""
    return reliability_curve(evaluation.scores["model"].ravel(), evaluation.relevance.ravel())


@dataclass(frozen=True)
class TripletEvaluation:
    """Method B on the test split's catalogue music."""

    distances: dict[str, np.ndarray]  # scorer -> (n, n) cosine distances
    embeddings: np.ndarray  # the model's test embeddings
    styles: np.ndarray


@torch.no_grad()
def score_triplet(store: FeatureStore, model: TripletModule, seed: int) -> TripletEvaluation:
    """Cosine distances among test music tracks (BGM and music), for the model and two baselines.

    The model reads its own input (``model.input_kind``). Baselines: ``cosine`` on that input, untrained
    and flattened; ``random``
    symmetric uniform distances.
    """
    rows = store.music("test")
    if rows.size < 2:
        raise ValueError("the test split has fewer than two catalogue tracks")
    inputs = store.inputs(model.input_kind)[rows]
    model.eval()
    embeddings = model(torch.from_numpy(inputs)).numpy()
    noise = np.random.default_rng(seed).uniform(size=(rows.size, rows.size))
    return TripletEvaluation(
        distances={
            "model": cosine_distance_matrix(embeddings, embeddings),
            "baseline_cosine": cosine_distance_matrix(
                inputs.reshape(rows.size, -1), inputs.reshape(rows.size, -1)
            ),
            "baseline_random": (noise + noise.T) / 2.0,
        },
        embeddings=embeddings,
        styles=np.array([store.tracks[i].style for i in rows]),
    )


def triplet_metrics(evaluation: TripletEvaluation) -> tuple[dict, dict[str, dict[str, dict[str, float]]]]:
    """Style precision@10, MAP@10 and triplet-constraint satisfaction per scorer; per style for the model.

    Returns
    -------
    tuple
        ``(metrics, per_style)`` as for :func:`match_metrics`.
    """
    labels = torch.from_numpy(np.unique(evaluation.styles, return_inverse=True)[1])
    result: dict = {}
    per_style = {}
    for name, distances in evaluation.distances.items():
        retrieval = style_retrieval(distances, evaluation.styles)
        per_style[name] = retrieval.pop("per_style")
        satisfaction = constraint_satisfaction(torch.from_numpy(distances), labels)
        result[name] = retrieval | {"triplet_satisfaction": float(satisfaction)}
    result["per_style"] = per_style["model"]
    result["test"] = {"tracks": int(len(evaluation.styles)), "styles": int(len(set(evaluation.styles)))}
    return result, per_style
