"""EASE (Steck, WWW 2019): a closed-form item x item model, plain numpy (and scipy's sparse
product for the Gram matrix).

For a user x item interaction matrix ``X`` the model is the item-item weight matrix ``B`` that
minimises ``||X - X B||² + λ ||B||²`` subject to ``diag(B) = 0``. With the Gram matrix
``G = XᵀX`` and ``P = (G + λI)⁻¹`` the solution is ``B = I - P diag(1 / diag P)``, i.e.
``B[i, j] = -P[i, j] / P[j, j]`` off the diagonal and 0 on it. A user's scores are ``x_u B``.

The Gram matrix is computed wherever the interactions are (Spark in this project: each task
counts its users' share with :func:`gram_triples`, a sparse product); only the inverse of an
items x items matrix happens on one machine, so the catalogue size bounds the cost (O(n³) time,
two n x n float64 arrays of memory: the Gram matrix and the result). ``G + λI`` is symmetric
positive definite, so it is inverted through its Cholesky factor (LAPACK ``potrf``/``potri``, in
place), half the arithmetic of numpy's general inverse.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.linalg import lapack

# rows per frame that :func:`gram_triples` yields (bounds one Arrow batch of a Spark task)
TRIPLES_PER_FRAME = 1_000_000
# rows per block when the inverse's lower triangle is copied into its upper one
MIRROR_ROWS = 1024


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """The EASE item-item matrix ``B`` (float64, zero diagonal) from ``G = XᵀX`` and ``λ``."""
    gram = np.asarray(gram, dtype=np.float64)
    if gram.ndim != 2 or gram.shape[0] != gram.shape[1]:
        raise ValueError(f"ease_weights: the Gram matrix must be square, got shape {gram.shape}")
    if not l2 > 0:
        raise ValueError(f"ease_weights: l2 must be > 0, got {l2}")
    regularised = gram.copy(order="C")  # G + λI without an identity matrix of its own
    regularised[np.diag_indices_from(regularised)] += l2
    precision = spd_inverse(regularised)
    if precision is None:  # not numerically positive definite: numpy's general inverse
        precision = np.linalg.inv(gram + l2 * np.eye(gram.shape[0]))
    diagonal = np.diag(precision).copy()
    precision /= -diagonal[np.newaxis, :]  # in place: the inverse becomes the weights
    np.fill_diagonal(precision, 0.0)
    return precision


def spd_inverse(a: np.ndarray, *, block: int = MIRROR_ROWS) -> np.ndarray | None:
    """The inverse of the symmetric positive definite float64 matrix ``a`` (C order), computed
    in ``a``'s memory (``a`` is overwritten), or None when its Cholesky factorisation fails
    (a matrix that is not numerically positive definite)."""
    # a symmetric C-order matrix is its own transpose, the Fortran-order view LAPACK works on:
    # no copy, and "upper" there is the lower triangle here
    factor, info = lapack.dpotrf(a.T, lower=False, clean=False, overwrite_a=True)
    if info != 0:
        return None
    inverse, info = lapack.dpotri(factor, lower=False, overwrite_c=True)
    if info != 0:
        return None
    out = inverse.T  # C order again; only its lower triangle (i >= j) is set
    n = out.shape[0]
    for start in range(0, n, block):  # copy the lower triangle into the upper, a block of rows at a time
        stop = min(n, start + block)
        out[start:stop, stop:] = out[stop:, start:stop].T
        corner = out[start:stop, start:stop]
        out[start:stop, start:stop] = np.tril(corner) + np.tril(corner, -1).T
    return out


def ease_memory_bytes(n_items: int) -> int:
    """What :func:`ease_weights` holds at its peak for ``n_items``: the Gram matrix and the
    weights, two n x n float64 arrays."""
    return 2 * 8 * n_items * n_items


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
