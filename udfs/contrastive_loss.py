"""The contrastive loss of the encoder's fine-tuning (:mod:`udfs.finetune`), plain torch.

Symmetric multiple-negatives ranking loss over a batch of item pairs: cross-entropy of
``scale x cos`` of every a against every b of the batch (the right b is the label, the others
negatives) and of every b against every a, averaged. An in-batch candidate that is the row's own
item, or one of its partners in this batch, is masked (it is no negative); mined hard negatives
(:mod:`udfs.hard_negatives`) join as extra candidates with their own masks.
"""

from __future__ import annotations

from typing import Any


def candidate_masks(a: Any, b: Any) -> tuple[Any, Any]:
    """(forward, backward) boolean masks of the in-batch candidates that are no negatives.

    ``a``, ``b``: item numbers of the batch's pairs. forward[i, j] masks b_j for anchor a_i
    when b_j is a_i or one of a_i's partners in the batch (pairs are unordered); backward[i, j]
    masks a_j for b_i alike. The diagonal (the label) is never masked.
    """
    import torch

    eq = lambda x, y: (x[:, None] == y[None, :]).float()  # noqa: E731
    # P(x, y): items x and y form a pair of the batch, in either order, or are the same item
    def partners(x: Any, y: Any) -> Any:
        linked = (eq(x, a) @ eq(b, y)) + (eq(x, b) @ eq(a, y))
        return (linked > 0) | (x[:, None] == y[None, :])

    off = ~torch.eye(len(a), dtype=torch.bool, device=a.device)
    return partners(a, b) & off, partners(b, a) & off


def symmetric_mnrl(
    emb_a: Any, emb_b: Any, *, scale: float, ids_a: Any = None, ids_b: Any = None,
    neg_a: Any = None, neg_b: Any = None, neg_mask_a: Any = None, neg_mask_b: Any = None,
) -> Any:
    """Symmetric multiple-negatives ranking loss of unit vectors ``emb_a``, ``emb_b`` (n, d):
    mean of the cross-entropies a->b and b->a of ``scale x cos``; with item numbers, the
    candidates :func:`candidate_masks` names are left out. ``neg_a`` (m, d): extra negatives
    for every a (mined hard negatives), ``neg_mask_a`` (n, m) True where one is no negative for
    that a; ``neg_b``, ``neg_mask_b`` alike for every b."""
    import torch
    import torch.nn.functional as F

    sim = scale * emb_a @ emb_b.T
    sim_back = sim.T
    if ids_a is not None:
        forward, backward = candidate_masks(ids_a, ids_b)
        sim = sim.masked_fill(forward, float("-inf"))
        sim_back = sim_back.masked_fill(backward, float("-inf"))
    if neg_a is not None:
        sim = torch.cat([sim, (scale * emb_a @ neg_a.T).masked_fill(neg_mask_a, float("-inf"))], dim=1)
    if neg_b is not None:
        sim_back = torch.cat(
            [sim_back, (scale * emb_b @ neg_b.T).masked_fill(neg_mask_b, float("-inf"))], dim=1
        )
    labels = torch.arange(sim.shape[0], device=sim.device)
    return (F.cross_entropy(sim, labels) + F.cross_entropy(sim_back, labels)) / 2
