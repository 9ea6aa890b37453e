"""In-batch triplet mining on cosine distance (method B's loss)."""

from __future__ import annotations

import torch

MINING_STRATEGIES = ("semi-hard", "hard")


def cosine_distances(embeddings: torch.Tensor) -> torch.Tensor:
    """``(batch, batch)`` cosine distances ``1 - cos`` between L2-normalised rows."""
    return (1.0 - embeddings @ embeddings.T).clamp(min=0.0, max=2.0)


def mine_triplets(
    distances: torch.Tensor, labels: torch.Tensor, margin: float, strategy: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pick one negative for every (anchor, positive) pair in a batch.

    Every ordered pair of distinct items with the same label is an (anchor,
    positive). Its negative (an item with another label) is:

    - ``hard``: the nearest negative to the anchor;
    - ``semi-hard``: the nearest negative that is still farther than the
      positive, ``d(a,p) < d(a,n)``, preferring those inside the margin
      (Schroff et al., 2015); when none is farther, the farthest negative.

    Returns
    -------
    tuple
        ``(anchor, positive, negative)`` index tensors of equal length; empty when
        the batch has no positive pair or no negative.
    """
    if strategy not in MINING_STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; expected one of {MINING_STRATEGIES}")
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)
    anchor, positive = torch.nonzero(same & ~eye, as_tuple=True)
    if anchor.numel() == 0 or same.all():
        empty = anchor.new_empty(0)
        return empty, empty, empty
    d_ap = distances[anchor, positive]
    d_an = distances[anchor]  # (pairs, batch)
    negative_mask = ~same[anchor]
    inf = torch.finfo(distances.dtype).max
    if strategy == "hard":
        negative = d_an.masked_fill(~negative_mask, inf).argmin(dim=1)
    else:
        farther = negative_mask & (d_an > d_ap[:, None])
        semi_hard = d_an.masked_fill(~farther, inf).argmin(dim=1)
        easiest = d_an.masked_fill(~negative_mask, -inf).argmax(dim=1)
        negative = torch.where(farther.any(dim=1), semi_hard, easiest)
    return anchor, positive, negative


def triplet_margin_loss(
    distances: torch.Tensor,
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """Mean of ``max(0, d(a,p) - d(a,n) + margin)`` over the mined triplets."""
    if anchor.numel() == 0:
        return distances.sum() * 0.0  # keeps the graph, contributes nothing
    return torch.relu(distances[anchor, positive] - distances[anchor, negative] + margin).mean()


def constraint_satisfaction(distances: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Share of all in-batch triplets (a, p, n) for which ``d(a,p) < d(a,n)`` holds."""
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)
    positive_pairs = same & ~eye
    # triplet (a, p, n) valid when (a,p) positive and (a,n) negative
    valid = positive_pairs[:, :, None] & ~same[:, None, :]
    holds = distances[:, :, None] < distances[:, None, :]
    count = valid.sum()
    return (holds & valid).sum() / count if count > 0 else distances.new_tensor(float("nan"))


#: Softmax temperature of :func:`instance_loss` on cosine similarity (SimCLR's usual 0.1).
INSTANCE_TEMPERATURE = 0.1


def instance_loss(views: torch.Tensor, others: torch.Tensor, tracks: torch.Tensor) -> torch.Tensor:
    """InfoNCE: each row of ``views`` must be nearer its own row of ``others`` than any other track's.

    ``views`` and ``others`` are two copies of the same tracks, row by row (a track and its
    augmented copy), of any embedding; ``tracks`` names each row's track, so that a track
    drawn twice into a batch is never its own negative. Rows whose two copies are the same
    input (a track without copies) are left out. Symmetric in the two copies.
    """
    a = torch.nn.functional.normalize(views, dim=1)
    b = torch.nn.functional.normalize(others, dim=1)
    logits = a @ b.T / INSTANCE_TEMPERATURE
    same = tracks[:, None] == tracks[None, :]
    logits = logits.masked_fill(same & ~torch.eye(len(tracks), dtype=torch.bool, device=logits.device), -1e4)
    target = torch.arange(len(tracks), device=logits.device)
    cross_entropy = torch.nn.functional.cross_entropy
    return 0.5 * (cross_entropy(logits, target) + cross_entropy(logits.T, target))
