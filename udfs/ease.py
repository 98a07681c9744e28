"""EASE (Steck, WWW 2019): a closed-form item x item model, plain numpy.

For a user x item interaction matrix ``X`` the model is the item-item weight matrix ``B`` that
minimises ``||X - X B||² + λ ||B||²`` subject to ``diag(B) = 0``. With the Gram matrix
``G = XᵀX`` and ``P = (G + λI)⁻¹`` the solution is ``B = I - P diag(1 / diag P)``, i.e.
``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and 0 on it. A user's scores are ``x_u B``.

The Gram matrix is computed wherever the interactions are (Spark in this project); only the
inverse of an items x items matrix happens here, so the catalogue size bounds the cost
(O(n³) time, two n x n float64 arrays of memory).
"""

from __future__ import annotations

import numpy as np


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` (float64, zero diagonal) from ``G = XᵀX`` and ``λ``."""
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"ease_weights: the Gram matrix must be square, got shape {gram.shape}")
    if not l2 > 0:
        raise ValueError(f"ease_weights: l2 must be > 0, got {l2}")
    regularised = gram + l2 * np.eye(gram.shape[0])
    precision = np.linalg.inv(regularised)
    weights = -precision / np.diag(precision)[np.newaxis, :]
    np.fill_diagonal(weights, 0.0)
    return weights


def ease_memory_bytes(n_items: int) -> int:
    """What :func:`ease_weights` holds at its peak for ``n_items`` (three n x n float64 arrays)."""
    return 3 * 8 * n_items * n_items
