"""Building blocks of the Granger core: statuses, guards, exact and reference paths, statistics.

Plain numpy and scipy. :mod:`udfs.granger_core` composes them into the batched solver;
``bh_qvalues`` (Benjamini-Hochberg) and ``looks_nonstationary`` (the ``transform='auto'``
screen) are used by :mod:`udfs.granger_groups`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import stats

STATUS_OK = "ok"
STATUS_TOO_SHORT = "too_short"  # T <= 3 * lag + 1 (statsmodels' own limit)
STATUS_CONSTANT = "constant"  # y_t or a lag column is constant on the lag's sample
STATUS_SINGULAR = "singular"  # a design column is (numerically) a combination of the others
STATUS_PERFECT_FIT = "perfect_fit"  # the unrestricted model leaves no residual
# Set before the core runs, from checks on the series themselves.
STATUS_MISSING_DATES = "missing_dates"
STATUS_DUPLICATE_DATES = "duplicate_dates"
STATUS_MISSING_VALUES = "missing_values"
STATUS_TOO_SPARSE = "too_sparse"

TRANSFORMS = ("none", "diff", "auto")
# A design whose QR pivot is below this fraction of its column's norm is treated as singular:
# the statistic would carry ~1/RTOL times the rounding error, which no reader should trust.
SINGULAR_RTOL = 1e-9
# Below this share of ssr_r explained by the cause, F is a difference of nearly equal sums of
# squares in statsmodels; those rows repeat its arithmetic (see _reference_ssr_many).
REFERENCE_ROUNDING_BELOW = 1e-4
# The fast path forms the orthogonalised Gram matrix as a difference (cause Gram minus its part
# along the restricted design); rows whose Cholesky pivots fall below this fraction of the
# squared norm of the lag column (cause less its series mean), where the difference would
# lose more than ~5 digits, or whose
# unrestricted residual is below FAST_RESIDUAL_RTOL of the restricted one, are recomputed by
# explicit projection.
FAST_PIVOT_RTOL = 1e-5
FAST_RESIDUAL_RTOL = 1e-4
# 5 % critical value of the Dickey-Fuller t statistic with a constant (MacKinnon, asymptotic).
DF_CRITICAL_5PCT = -2.86

RESULT_KEYS = (
    "f_stat",
    "p_value",
    "df_num",
    "df_den",
    "chi2_stat",
    "chi2_p_value",
    "n_obs",
    "status",
)

# Status codes of the hot path (small integers), turned into STATUS_* strings once at the end.
CODE_NAMES = np.array(
    [STATUS_OK, STATUS_TOO_SHORT, STATUS_CONSTANT, STATUS_SINGULAR, STATUS_PERFECT_FIT],
    dtype=object,
)
CODE_OK, CODE_TOO_SHORT, CODE_CONSTANT, CODE_SINGULAR, CODE_PERFECT_FIT = range(5)


def lag_block(x: np.ndarray, lag: int) -> np.ndarray:
    """Rows t = lag .. T-1, columns x_{t-lag} .. x_{t-1} (last axis of ``x`` is time), copied."""
    n = x.shape[-1] - lag
    return np.ascontiguousarray(sliding_window_view(x, lag, axis=-1)[..., :n, :])


class Changes:
    """Which windows [a, b) of each series (last axis) are constant, for windows that leave out
    at most ``width`` values at each end. Only a series without any change in its middle can
    have one: change counts are kept for those rows alone."""

    def __init__(self, x: np.ndarray, width: int) -> None:
        steps = x[:, 1:] != x[:, :-1]  # steps[i - 1]: x[i] != x[i - 1]
        self.n_rows, t_len = x.shape
        self.rows = np.flatnonzero(~steps[:, width : t_len - width - 1].any(axis=-1))
        counts = np.cumsum(steps[self.rows], axis=-1, dtype=np.int64)
        self.counts = np.concatenate([np.zeros((self.rows.size, 1), np.int64), counts], -1)

    def constant(self, first: np.ndarray | int, stop: np.ndarray | int) -> np.ndarray:
        """(rows,) or (rows, m): True where x[first:stop] is constant (c[stop-1] == c[first])."""
        first, stop = np.asarray(first), np.asarray(stop)
        out = np.zeros((self.n_rows,) + first.shape, dtype=bool)
        out[self.rows] = self.counts[:, stop - 1] == self.counts[:, first]
        return out

    def lags_constant(self, lag: int) -> np.ndarray:
        """True where any lag column x_{t-j}, t = lag .. T-1, j = 1..lag, is constant."""
        t_len = self.counts.shape[-1]
        j = np.arange(1, lag + 1)  # column j covers x[lag - j : T - j]
        return self.constant(lag - j, t_len - j).any(axis=-1)


def project_out(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` minus its projection on the orthonormal columns of ``q``, done twice."""
    for _ in range(2):
        z = z - q @ (q.swapaxes(-1, -2) @ z)  # broadcasts over leading batch axes
    return z


class EdgeSums:
    """Sums of ``left * right`` ((k, L) each) along the last axis over windows that leave out
    at most ``width`` terms at each end: the total less a short head and tail."""

    def __init__(self, left: np.ndarray, right: np.ndarray, width: int) -> None:
        zero = np.zeros((left.shape[0], 1))
        self.total = np.einsum("kt,kt->k", left, right)
        head = left[:, :width] * right[:, :width]
        tail = (left[:, -width:] * right[:, -width:])[:, ::-1]
        self.head = np.concatenate([zero, np.cumsum(head, axis=-1)], axis=-1)
        self.tail = np.concatenate([zero, np.cumsum(tail, axis=-1)], axis=-1)

    def window(self, skip_head: int, skip_tail: int) -> np.ndarray:
        """Sum without the first ``skip_head`` and the last ``skip_tail`` terms."""
        return self.total - self.head[:, skip_head] - self.tail[:, skip_tail]


def explicit_rows(
    q_r: np.ndarray,
    resid_r: np.ndarray,
    own_singular: np.ndarray,
    tss: np.ndarray,
    cross: np.ndarray,
    eff: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ssr_r - ssr_u, ssr_u, status code) of non-constant rows by explicit projection.

    ``cross`` (m, n, p) holds the rows' cause lag blocks, ``eff`` their effects. The block is
    centred, projected off the restricted design, and its Gram matrix formed from
    what is left: no cancellation, so near-singular designs and near-perfect fits are told
    apart at rounding level.
    """
    m, _, lag = cross.shape
    eps = np.finfo(np.float64).eps
    centred = cross - cross.mean(axis=-2, keepdims=True)
    q_rows = q_r[eff]
    perp = centred - q_rows @ (q_rows.swapaxes(-1, -2) @ centred)
    perp_t = perp.swapaxes(-1, -2)
    gram = perp_t @ perp
    resid_rows = resid_r[eff]
    score = (perp_t @ resid_rows[..., None])[..., 0]
    scale = np.sqrt(np.einsum("knp,knp->kp", centred, centred))
    singular = own_singular[eff] | (cholesky_pivots(gram) <= SINGULAR_RTOL * scale).any(axis=-1)
    coef = np.zeros((m, lag))
    if (~singular).any():
        coef[~singular] = np.linalg.solve(gram[~singular], score[~singular][..., None])[..., 0]
    explained = np.einsum("kp,kp->k", coef, score)
    resid_u = resid_rows - (perp @ coef[..., None])[..., 0]
    ssr_u = np.einsum("kn,kn->k", resid_u, resid_u)
    codes = np.where(singular, CODE_SINGULAR, CODE_OK).astype(np.int8)
    codes[~singular & ((ssr_u == 0) | (ssr_u < eps * tss[eff]))] = CODE_PERFECT_FIT
    return explained, ssr_u, codes


def reference_near_zero(
    own_lags: np.ndarray, targets: np.ndarray, cross: np.ndarray, eff: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(ssr_u, ssr_r - ssr_u) of the given rows as statsmodels computes them.

    Designs in statsmodels' column order: y_{t-1} .. y_{t-p}, [x_{t-1} .. x_{t-p},] 1. The
    SVDs run as one batched call (the same LAPACK routine per matrix); the pseudo-inverse
    arithmetic is repeated per row with statsmodels' own calls.
    """
    m, n_obs, _ = cross.shape
    ones = np.ones((m, n_obs, 1))
    own_rev = own_lags[eff][..., ::-1]
    joint = np.concatenate([own_rev, cross[..., ::-1], ones], axis=-1)
    ssr_u = _reference_ssr_many(joint, targets[eff])
    effects, first = np.unique(eff, return_inverse=True)
    restricted = np.concatenate(
        [own_lags[effects][..., ::-1], np.ones((effects.size, n_obs, 1))], axis=-1
    )
    ssr_r = _reference_ssr_many(restricted, targets[effects])[first]
    return ssr_u, ssr_r - ssr_u


def _reference_ssr_many(designs: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Sums of squared residuals as statsmodels' OLS(...).fit() computes them (SVD pinv).

    Used only where the F statistic is a difference of two nearly equal sums of squares:
    there statsmodels' own rounding (up to ~1e-8 relative in F) exceeds the 1e-9 agreement
    the table promises, so those rows repeat its arithmetic step for step. The SVDs run as
    one batched call (the same LAPACK routine per matrix), the rest with its own calls.
    """
    u_all, s_all, vt_all = np.linalg.svd(designs, full_matrices=False)
    # element-wise steps are the same numbers batched; the products run per row as in statsmodels
    cutoff = 1e-15 * np.maximum.reduce(s_all, axis=-1, keepdims=True)
    s_all = np.where(s_all > cutoff, 1.0 / np.where(s_all > cutoff, s_all, 1.0), 0.0)
    scaled = np.multiply(s_all[:, :, np.newaxis], u_all.swapaxes(-1, -2))
    out = np.empty(designs.shape[0])
    for i in range(designs.shape[0]):
        pinv = np.dot(np.transpose(vt_all[i]), scaled[i])
        resid = targets[i] - np.dot(designs[i], np.dot(pinv, targets[i]))
        out[i] = np.dot(resid, resid)
    return out


def cholesky_pivots(gram: np.ndarray) -> np.ndarray:
    """|R_jj| of the QR of the block behind each (k, p, p) Gram matrix: the diagonal of its
    Cholesky factor, vectorised over k; 0 from the first non-positive pivot on."""
    k, p, _ = gram.shape
    lower = np.zeros_like(gram)
    pivots = np.zeros((k, p))
    definite = np.ones(k, dtype=bool)
    for j in range(p):
        row = lower[:, j, :j]
        d = gram[:, j, j] - np.einsum("kj,kj->k", row, row)
        definite &= d > 0
        pivot = np.sqrt(np.where(definite, d, 1.0))
        pivots[:, j] = np.where(definite, pivot, 0.0)
        lower[:, j, j] = pivot
        if j + 1 < p:
            below = gram[:, j + 1 :, j] - (lower[:, j + 1 :, :j] @ row[..., None])[..., 0]
            lower[:, j + 1 :, j] = below / pivot[:, None]
    return pivots


def statistics(
    explained: np.ndarray, ssr_u: np.ndarray, status: np.ndarray, t_len: int
) -> dict[str, np.ndarray]:
    """F, chi-square and their p-values from ssr_r - ssr_u and ssr_u, in statsmodels' order."""
    k, max_lag = status.shape
    lag = np.broadcast_to(np.arange(1, max_lag + 1, dtype=np.float64), (k, max_lag))
    ok = status == STATUS_OK
    n_obs = np.where(ok, t_len - lag, np.nan)
    df_den = n_obs - 2 * lag - 1
    with np.errstate(divide="ignore", invalid="ignore"):
        f_stat = explained / ssr_u / lag * df_den
        chi2 = n_obs * explained / ssr_u
    out = {
        "f_stat": f_stat,
        "p_value": np.full((k, max_lag), np.nan),
        "df_num": np.where(ok, lag, np.nan),
        "df_den": df_den,
        "chi2_stat": chi2,
        "chi2_p_value": np.full((k, max_lag), np.nan),
        "n_obs": n_obs,
        "status": status,
    }
    if ok.any():
        out["p_value"][ok] = stats.f.sf(f_stat[ok], lag[ok], df_den[ok])
        out["chi2_p_value"][ok] = stats.chi2.sf(chi2[ok], lag[ok])
    return out


def bh_qvalues(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values); NaN p-values stay NaN, outside the family.

    q_(i) = min over j >= i of p_(j) m / j, capped at 1, for the m finite p-values sorted
    ascending (as statsmodels' ``multipletests(method='fdr_bh')``).
    """
    p = np.asarray(p_values, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    m = int(finite.sum())
    if m == 0:
        return q
    family = p[finite]
    order = np.argsort(family, kind="stable")
    scaled = family[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    values = np.empty(m)
    values[order] = adjusted
    q[finite] = values
    return q


def looks_nonstationary(x: np.ndarray, *, critical: float = DF_CRITICAL_5PCT) -> bool:
    """Augmented Dickey-Fuller (constant, one lagged difference) fails to reject a unit root.

    A screening rule for ``transform='auto'``, not a full ADF test: too-short or constant
    series are left alone (False).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size < 10 or x.max() == x.min():
        return False
    dx = np.diff(x)
    target = dx[1:]
    design = np.column_stack([np.ones(target.size), x[1:-1], dx[:-1]])
    coef, _, rank, _ = np.linalg.lstsq(design, target, rcond=None)
    if rank < design.shape[1]:
        return False
    resid = target - design @ coef
    dof = target.size - design.shape[1]
    sigma2 = resid @ resid / dof
    if sigma2 == 0:
        return False
    cov = sigma2 * np.linalg.inv(design.T @ design)
    t_stat = coef[1] / np.sqrt(cov[1, 1])
    return bool(t_stat > critical)
