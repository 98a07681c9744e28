"""EASE (Steck, WWW 2019): a closed-form item x item model, plain numpy (and scipy's sparse
product for the Gram matrix).

For a user x item interaction matrix ``X`` the model is the item-item weight matrix ``B`` that
minimises ``||X - X B||² + λ ||B||²`` subject to ``diag(B) = 0``. With the Gram matrix
``G = XᵀX`` and ``P = (G + λI)⁻¹`` the solution is ``B = I - P diag(1 / diag P)``, i.e.
``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and 0 on it. A user's scores are ``x_u B``.

The Gram matrix is computed wherever the interactions are (Spark in this project: each task
counts its users' share with :func:`gram_triples`, a sparse product); only the inverse of an
items x items matrix happens on one machine, so the catalogue size bounds the cost (O(n³) time,
two n x n float64 arrays of memory).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

# rows per frame that :func:`gram_triples` yields (bounds one Arrow batch of a Spark task)
TRIPLES_PER_FRAME = 1_000_000


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


def gram_triples(bought: pd.DataFrame, users: Sequence[str], n_items: int) -> Iterator[pd.DataFrame]:
    """The upper triangle (i <= j) of ``XᵀX`` for the users in ``bought`` as (i, j, n) frames.

    ``bought`` holds distinct (``users`` columns..., idx) rows, ``idx`` an item number below
    ``n_items``, and every row of each user it names (a user split between two calls would
    lose the pairs across them: partition by the user columns). ``n`` is the number of those
    users who bought both items; pairs nobody bought are left out. Sums over disjoint sets of
    users add up to the whole Gram matrix.
    """
    if not len(bought):
        return
    keys = bought[list(users)]
    user = (pd.MultiIndex.from_frame(keys) if len(users) > 1 else keys.iloc[:, 0]).factorize()[0]
    x = sp.csr_matrix(
        (np.ones(len(bought), dtype=np.int64), (user, bought["idx"].to_numpy())),
        shape=(int(user.max()) + 1, n_items),
    )
    upper = sp.triu(x.T @ x).tocoo()
    for start in range(0, upper.nnz, TRIPLES_PER_FRAME):
        part = slice(start, start + TRIPLES_PER_FRAME)
        yield pd.DataFrame({"i": upper.row[part].astype(np.int32), "j": upper.col[part].astype(np.int32),
                            "n": upper.data[part].astype(np.int64)})
