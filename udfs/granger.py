"""Granger-causality ssr F and chi-square tests for many pairs and lags at once.

The numbers are those of statsmodels' ``grangercausalitytests(x[:, [effect, cause]], lag)``
(``addconst=True``): for lag p the sample is t = p .. T-1 (n_obs = T - p), the restricted OLS
regresses y_t on a constant and y_{t-1..t-p}, the unrestricted one adds x_{t-1..t-p};
``df_den = n_obs - 2p - 1``, ``F = ((ssr_r - ssr_u) / p) / (ssr_u / df_den)`` and
``chi2 = n_obs (ssr_r - ssr_u) / ssr_u`` with p degrees of freedom.

How it stays exact and fast: the restricted model depends only on the effect series, so it
is fitted once per effect and lag (Householder QR, all effects in one batched call). What a
cause adds is measured in the orthogonal complement of that design: the Gram matrix G of the
cause's lag block after projection and the score (block' restricted residual) give
``ssr_r - ssr_u = score' G^-1 score`` directly, with no subtraction of two nearly equal sums
of squares (the cancellation that made a naive normal-equations prototype drift to 5.6e-9
relative error). G is formed as the cause's own lag Gram matrix (from lagged-product sums of
the series) less its part along the restricted design (products with Q, one matrix product
per lag column for all pairs); rows where that difference would cancel, and near-perfect fits
or singular designs, are recomputed by explicit projection. Where the cause explains almost
nothing (``ssr_r - ssr_u < 1e-4 ssr_r``, F close to 0) statsmodels' own value carries that
cancellation, up to ~2e-8 relative on real series; those few rows repeat its arithmetic
(SVD pseudo-inverse OLS, same column order) so the table agrees with the reference to ~1e-10
everywhere instead of being "more exact" than it.

``granger_tests_many`` (all pairs of many effect series at once), ``granger_tests`` (one
effect) and ``bh_qvalues`` are plain numpy; ``granger_group`` is the pandas function that
``apply_granger`` runs in a grouped pandas UDF (one group per hash bucket of effect series).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
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


def _lag_block(x: np.ndarray, lag: int) -> np.ndarray:
    """Rows t = lag .. T-1, columns x_{t-lag} .. x_{t-1} (last axis of ``x`` is time), copied."""
    n = x.shape[-1] - lag
    return np.ascontiguousarray(sliding_window_view(x, lag, axis=-1)[..., :n, :])


class _Changes:
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


def _project_out(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` minus its projection on the orthonormal columns of ``q``, done twice."""
    for _ in range(2):
        z = z - q @ (q.swapaxes(-1, -2) @ z)  # broadcasts over leading batch axes
    return z


def granger_tests(effect: np.ndarray, causes: np.ndarray, max_lag: int) -> dict[str, np.ndarray]:
    """Ssr F and chi-square Granger tests of every cause -> ``effect`` for lags 1..max_lag.

    ``effect`` has shape (T,), ``causes`` (k, T) (or (T,) for one cause), both finite and on the
    same daily grid. Returns arrays of shape (k, max_lag): ``f_stat``, ``p_value``, ``df_num``,
    ``df_den``, ``chi2_stat``, ``chi2_p_value``, ``n_obs`` (float; NaN where the status is not
    ok) and ``status`` (str). Column j is lag j + 1. One effect of ``granger_tests_many``.
    """
    y = np.asarray(effect, dtype=np.float64)
    xs = np.asarray(causes, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs[None, :]
    if y.ndim != 1 or xs.ndim != 2 or xs.shape[1] != y.shape[0]:
        raise ValueError(f"effect (T,) and causes (k, T) expected, got {y.shape} and {xs.shape}")
    return granger_tests_many(y[None, :], xs, np.zeros(xs.shape[0], dtype=np.int64), max_lag)


# Status codes of the hot path (small integers), turned into STATUS_* strings once at the end.
_CODE_NAMES = np.array(
    [STATUS_OK, STATUS_TOO_SHORT, STATUS_CONSTANT, STATUS_SINGULAR, STATUS_PERFECT_FIT],
    dtype=object,
)
_OK, _TOO_SHORT, _CONSTANT, _SINGULAR, _PERFECT_FIT = range(5)


def granger_tests_many(
    effects: np.ndarray, causes: np.ndarray, effect_index: np.ndarray, max_lag: int
) -> dict[str, np.ndarray]:
    """Granger tests of ``causes[i] -> effects[effect_index[i]]`` for all i and lags 1..max_lag.

    ``effects`` (E, T) and ``causes`` (k, T) are finite series on the same daily grid;
    ``effect_index`` (k,) says which effect each cause is tested against. Returns what
    ``granger_tests`` returns, one row per cause, in the order given.

    Per lag, for all pairs at once: the restricted fit of every effect (one batched QR); the
    products of [Q, restricted residual] with the cause's lag columns (one matrix product per
    lag column over the effects with equal numbers of causes, straight from the series, no
    lag-block copies); the cause's own lag Gram matrix from sums of lagged products;
    the Gram matrix of the cause block orthogonalised against the restricted design as their
    difference. Rows where that difference cancels (a cause block nearly in the span of the
    effect's own lags, pivots below ``FAST_PIVOT_RTOL``), where the unrestricted fit is nearly
    perfect, or where the restricted design is singular take the explicit projection
    (``_explicit_rows``), so the guard statuses are decided as precisely as before.
    """
    ys = np.asarray(effects, dtype=np.float64)
    xs = np.asarray(causes, dtype=np.float64)
    idx = np.asarray(effect_index)
    if ys.ndim != 2 or xs.ndim != 2 or xs.shape[1] != ys.shape[1] or idx.shape != xs.shape[:1]:
        raise ValueError(
            f"effects (E, T), causes (k, T) and effect_index (k,) expected, got {ys.shape}, "
            f"{xs.shape} and {idx.shape}"
        )
    if max_lag < 1:
        raise ValueError(f"max_lag must be at least 1, got {max_lag}")
    if not (np.isfinite(ys).all() and np.isfinite(xs).all()):
        raise ValueError("effect and causes must be finite")
    n_effects, t_len = ys.shape
    k = xs.shape[0]
    if k and (not np.issubdtype(idx.dtype, np.integer) or idx.min() < 0 or idx.max() >= n_effects):
        raise ValueError(f"effect_index must hold integers in [0, {n_effects})")
    idx = idx.astype(np.int64, copy=False)
    # Rows sorted by (number of causes of their effect, effect, position): the causes of one
    # effect are contiguous and effects with equal counts form one dense (E_g, c, T) block.
    counts = np.bincount(idx, minlength=n_effects)
    effect_order = np.lexsort((np.arange(n_effects), counts))
    rank = np.empty(n_effects, dtype=np.int64)
    rank[effect_order] = np.arange(n_effects)
    perm = np.argsort(rank[idx], kind="stable")
    xs, eff = xs[perm], idx[perm]
    groups = []  # (first row, last row + 1, effect ids, causes per effect)
    row = 0
    used = effect_order[counts[effect_order] > 0]
    for c in np.unique(counts[used]):
        ids = used[counts[used] == c]
        groups.append((row, row + ids.size * int(c), ids, int(c)))
        row += ids.size * int(c)

    shape = (k, max_lag)
    explained_all, ssr_u_all = np.full(shape, np.nan), np.full(shape, np.nan)
    codes = np.zeros(shape, dtype=np.int8)
    y_changes, x_changes = _Changes(ys, max_lag), _Changes(xs, max_lag)
    # Causes less their own mean: the constant is in every design, so the tests are unchanged,
    # and the products below no longer carry the level (no cancellation far from 0).
    x0 = xs - xs.mean(axis=-1, keepdims=True)
    width = min(max_lag, t_len)
    lagged = [_EdgeSums(x0[:, : t_len - d], x0[:, d:], width) for d in range(min(max_lag, t_len))]
    eps = np.finfo(np.float64).eps
    for lag in range(1, max_lag + 1):
        col = lag - 1
        if t_len <= 3 * lag + 1:
            codes[:, col] = _TOO_SHORT
            continue
        if k == 0:
            continue
        n_obs = t_len - lag
        targets = ys[:, lag:]  # (E, n)
        own_lags = _lag_block(ys, lag)  # (E, n, p)
        own = np.concatenate([own_lags, np.ones((n_effects, n_obs, 1))], axis=-1)
        q_r, r_r = np.linalg.qr(own)
        own_singular = (
            np.abs(np.diagonal(r_r, axis1=-2, axis2=-1))
            <= SINGULAR_RTOL * np.sqrt(np.einsum("enq,enq->eq", own, own))
        ).any(axis=-1)
        resid_r = _project_out(q_r, targets[..., None])[..., 0]  # (E, n)
        ssr_r = np.einsum("en,en->e", resid_r, resid_r)
        y_constant = y_changes.lags_constant(lag) | y_changes.constant(lag, t_len)
        centred_t = targets - targets.mean(axis=-1, keepdims=True)
        tss = np.einsum("en,en->e", centred_t, centred_t)

        # [Q, resid_r]' times the cause's lag columns x0[j : j + n], j = 0 .. p-1.
        basis = np.concatenate([q_r, resid_r[..., None]], axis=-1)  # (E, n, p + 2)
        products = np.empty((k, lag + 2, lag))
        for first, last, ids, c in groups:
            series = x0[first:last].reshape(ids.size, c, t_len)
            basis_g = basis[ids]
            for j in range(lag):
                products[first:last, :, j] = (series[:, :, j : j + n_obs] @ basis_g).reshape(
                    -1, lag + 2
                )
        along_q, score = products[:, : lag + 1, :], products[:, lag + 1, :]
        cross_gram = np.empty((k, lag, lag))  # x0-block' x0-block from prefix sums
        for i in range(lag):
            for j in range(i, lag):
                d = j - i
                # sum of x0[u] x0[u + d] for u = i .. i + n - 1 (lag - d - i terms after it)
                cross_gram[:, i, j] = cross_gram[:, j, i] = lagged[d].window(i, lag - d - i)
        gram = cross_gram - along_q.swapaxes(-1, -2) @ along_q
        pivots = _cholesky_pivots(gram)
        constant = x_changes.lags_constant(lag) | y_constant[eff]
        # the difference carries rounding of the size of the cross_gram diagonal, so pivots
        # are compared with that (not with what is left after the subtraction)
        before = np.diagonal(cross_gram, axis1=-2, axis2=-1)
        explicit = ~constant & (
            own_singular[eff] | (pivots**2 < FAST_PIVOT_RTOL * before).any(axis=-1)
        )
        fast = ~(constant | explicit)
        explained = np.zeros(k)
        if fast.all():
            coef = np.linalg.solve(gram, score[..., None])[..., 0]
            explained = np.einsum("kp,kp->k", coef, score)
        elif fast.any():
            coef = np.linalg.solve(gram[fast], score[fast][..., None])[..., 0]
            explained[fast] = np.einsum("kp,kp->k", coef, score[fast])
        ssr_u = ssr_r[eff] - explained
        explicit |= fast & (ssr_u < FAST_RESIDUAL_RTOL * ssr_r[eff])
        fast &= ~explicit
        codes[constant, col] = _CONSTANT
        rows = np.flatnonzero(explicit)
        if rows.size:
            cross = _lag_block(xs[rows], lag)
            explained[rows], ssr_u[rows], codes[rows, col] = _explicit_rows(
                q_r, resid_r, own_singular, tss, cross, eff[rows]
            )
        perfect = fast & ((ssr_u == 0) | (ssr_u < eps * tss[eff]))
        codes[perfect, col] = _PERFECT_FIT
        ok = codes[:, col] == _OK
        near_zero = np.flatnonzero(ok & (explained < REFERENCE_ROUNDING_BELOW * ssr_r[eff]))
        if near_zero.size:
            ssr_u[near_zero], explained[near_zero] = _reference_near_zero(
                own_lags, targets, _lag_block(xs[near_zero], lag), eff[near_zero]
            )
        explained_all[ok, col] = explained[ok]
        ssr_u_all[ok, col] = ssr_u[ok]
    unsorted = np.empty_like(perm)
    unsorted[perm] = np.arange(k)
    return _statistics(
        explained_all[unsorted], ssr_u_all[unsorted], _CODE_NAMES[codes[unsorted]], t_len
    )


class _EdgeSums:
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


def _explicit_rows(
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
    singular = own_singular[eff] | (_cholesky_pivots(gram) <= SINGULAR_RTOL * scale).any(axis=-1)
    coef = np.zeros((m, lag))
    if (~singular).any():
        coef[~singular] = np.linalg.solve(gram[~singular], score[~singular][..., None])[..., 0]
    explained = np.einsum("kp,kp->k", coef, score)
    resid_u = resid_rows - (perp @ coef[..., None])[..., 0]
    ssr_u = np.einsum("kn,kn->k", resid_u, resid_u)
    codes = np.where(singular, _SINGULAR, _OK).astype(np.int8)
    codes[~singular & ((ssr_u == 0) | (ssr_u < eps * tss[eff]))] = _PERFECT_FIT
    return explained, ssr_u, codes


def _reference_near_zero(
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


def _cholesky_pivots(gram: np.ndarray) -> np.ndarray:
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


def _statistics(
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


def finish_family(tests: pd.DataFrame, *, alpha: float) -> pd.DataFrame:
    """Add ``q_value``, ``significant`` and ``best_lag`` to all tests of one run (one BH family).

    Only 'ok' rows enter the family; other rows get a null q-value and False flags. The best
    lag of a pair is its 'ok' row with the smallest p-value, ties going to the smaller lag.
    """
    ok = (tests["status"] == STATUS_OK).to_numpy()
    p = np.where(ok, pd.to_numeric(tests["p_value"]).to_numpy(dtype=np.float64, na_value=np.nan),
                 np.nan)
    q = bh_qvalues(p)
    ranked = pd.DataFrame(
        {"cause": tests["cause_series"].to_numpy(), "effect": tests["effect_series"].to_numpy(),
         "p": np.where(ok, p, np.inf), "lag": tests["lag"].to_numpy(), "ok": ok}
    ).sort_values(["cause", "effect", "p", "lag"], kind="stable")
    first = ~ranked.duplicated(["cause", "effect"], keep="first").to_numpy() & ranked["ok"].to_numpy()
    best = np.zeros(len(tests), dtype=bool)
    best[ranked.index.to_numpy()[first]] = True
    return tests.assign(
        q_value=q, significant=ok & (np.nan_to_num(q, nan=np.inf) <= alpha), best_lag=best
    )


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


# ----- grouped pandas UDF ---------------------------------------------------------------

OUTPUT_COLUMNS = [
    "cause_series",
    "effect_series",
    "pair_kind",
    "lag",
    "f_stat",
    "p_value",
    "df_num",
    "df_den",
    "chi2_stat",
    "chi2_p_value",
    "n_obs",
    "transform",
    "status",
]
OUTPUT_DDL = (
    "cause_series string, effect_series string, pair_kind string, lag int, f_stat double, "
    "p_value double, df_num int, df_den int, chi2_stat double, chi2_p_value double, "
    "n_obs int, transform string, status string"
)
INPUT_COLUMNS = [
    "cause_series",
    "effect_series",
    "pair_kind",
    "cause_values",
    "effect_values",
    "cause_status",
    "effect_status",
]


def _series_statuses(
    values: list[np.ndarray], given: np.ndarray, min_nonzero_days: int
) -> np.ndarray:
    """Per series: the given status unless 'ok', else 'missing_values' (a non-finite value),
    'too_sparse' (fewer non-zero days than ``min_nonzero_days``) or 'ok'. Vectorised over the
    series of equal length."""
    out = np.asarray(given, dtype=object).copy()
    sizes = np.fromiter((v.size for v in values), dtype=np.int64, count=len(values))
    for size in np.unique(sizes):
        rows = np.flatnonzero((sizes == size) & (out == STATUS_OK))
        if rows.size == 0:
            continue
        block = np.stack([values[i] for i in rows]) if size else np.zeros((rows.size, 0))
        finite = np.isfinite(block).all(axis=1)
        sparse = np.count_nonzero(block, axis=1) < min_nonzero_days
        out[rows[~finite]] = STATUS_MISSING_VALUES
        out[rows[finite & sparse]] = STATUS_TOO_SPARSE
    return out


def granger_group(
    pairs: pd.DataFrame, *, max_lag: int, transform: str = "none", min_nonzero_days: int = 0
) -> pd.DataFrame:
    """All tests of the given pairs (any number of effect series): one row per (pair, lag),
    OUTPUT_COLUMNS, sorted by effect, cause and lag.

    ``pairs`` has INPUT_COLUMNS: the value arrays in date order, and per-series status
    ('ok' or a reason found upstream, such as 'missing_dates'). Pairs with a bad series get
    that status and null statistics on every lag; ``transform`` 'diff' differences both
    series, 'auto' differences a pair when either series looks non-stationary. The usable
    pairs of all effects with the same length (and transform) are solved in one
    ``granger_tests_many`` call.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    if pairs.empty:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    pairs = pairs.sort_values(["effect_series", "cause_series", "pair_kind"], kind="stable")
    k = len(pairs)
    names = pairs["effect_series"].to_numpy()
    starts = np.r_[True, names[1:] != names[:-1]]
    effect_of_row = np.cumsum(starts) - 1
    first_rows = np.flatnonzero(starts)
    effect_values = pairs["effect_values"].to_numpy()
    effects = [np.asarray(effect_values[i], dtype=np.float64) for i in first_rows]
    effect_status = _series_statuses(
        effects, pairs["effect_status"].to_numpy()[first_rows], min_nonzero_days
    )[effect_of_row]
    causes = [np.asarray(v, dtype=np.float64) for v in pairs["cause_values"].to_numpy()]
    statuses = _series_statuses(causes, pairs["cause_status"].to_numpy(), min_nonzero_days)
    effect_bad = effect_status != STATUS_OK
    statuses[effect_bad] = effect_status[effect_bad]
    effect_sizes = np.array([e.size for e in effects])[effect_of_row]
    cause_sizes = np.fromiter((c.size for c in causes), dtype=np.int64, count=k)
    statuses[(statuses == STATUS_OK) & (cause_sizes != effect_sizes)] = STATUS_MISSING_DATES
    good = np.flatnonzero(statuses == STATUS_OK)
    use_diff = np.full(k, transform == "diff")
    if transform == "auto":
        effect_diff: dict[int, bool] = {}
        cause_diff: dict[str, bool] = {}  # a series id has one value array per run
        cause_names = pairs["cause_series"].to_numpy()
        for row in good:
            e = effect_of_row[row]
            if e not in effect_diff:
                effect_diff[e] = looks_nonstationary(effects[e])
            if cause_names[row] not in cause_diff:
                cause_diff[cause_names[row]] = looks_nonstationary(causes[row])
            use_diff[row] = effect_diff[e] or cause_diff[cause_names[row]]

    res = {key: np.full((k, max_lag), np.nan) for key in RESULT_KEYS if key != "status"}
    res["status"] = np.repeat(statuses[:, None], max_lag, axis=1)
    batches: dict[tuple[bool, int], list[int]] = {}
    for row in good:
        batches.setdefault((bool(use_diff[row]), causes[row].size), []).append(row)
    for (diffed, _), rows_list in sorted(batches.items()):
        rows = np.asarray(rows_list)
        ids, local = np.unique(effect_of_row[rows], return_inverse=True)
        prepare = np.diff if diffed else np.asarray
        ys = np.stack([prepare(effects[e]) for e in ids])
        xs = np.stack([prepare(causes[r]) for r in rows])
        out = granger_tests_many(ys, xs, local.ravel(), max_lag)
        for key, values in out.items():
            res[key][rows] = values
    transforms = np.where(use_diff, "diff", "none").astype(object)
    return _frame(pairs, np.arange(1, max_lag + 1), res, transforms)[OUTPUT_COLUMNS]


def _frame(
    pairs: pd.DataFrame, lags: np.ndarray, res: dict[str, np.ndarray], transforms: np.ndarray
) -> pd.DataFrame:
    k, n_lags = res["status"].shape
    columns: dict[str, Any] = {
        "cause_series": np.repeat(pairs["cause_series"].to_numpy(), n_lags),
        "effect_series": np.repeat(pairs["effect_series"].to_numpy(), n_lags),
        "pair_kind": np.repeat(pairs["pair_kind"].to_numpy(), n_lags),
        "lag": np.tile(lags, k).astype(np.int32),
        "transform": np.repeat(transforms, n_lags),
    }
    for key in RESULT_KEYS:
        values = res[key].ravel()
        if key in ("df_num", "df_den", "n_obs"):  # nullable integers
            missing = np.isnan(values)
            values = pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int32), missing)
        columns[key] = values
    return pd.DataFrame(columns)


def _bucket_count(pairs: Any, buckets: int | None) -> int:
    """``buckets``, or spark.sql.shuffle.partitions when None; at least 1."""
    if buckets is None:
        buckets = int(pairs.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    if buckets < 1:
        raise ValueError(f"buckets must be at least 1, got {buckets}")
    return buckets


def _effect_bucket(buckets: int) -> Any:
    """The hash bucket of the effect series: every pair of an effect lands in the same one."""
    from pyspark.sql import functions as F  # here: the numpy core runs without Spark

    return F.pmod(F.xxhash64("effect_series"), F.lit(buckets)).alias("_bucket")


def apply_granger(
    pairs: Any,
    *,
    max_lag: int,
    transform: str = "none",
    min_nonzero_days: int = 0,
    buckets: int | None = None,
) -> Any:
    """Spark wrapper: ``pairs`` (a DataFrame with INPUT_COLUMNS) grouped into ``buckets`` hash
    buckets of the effect series (default: spark.sql.shuffle.partitions), so that each pandas
    call solves the pairs of many effects at once. Every pair of an effect lands in the same
    bucket; the rows do not depend on the number of buckets."""
    buckets = _bucket_count(pairs, buckets)

    def fn(pairs: pd.DataFrame) -> pd.DataFrame:
        return granger_group(
            pairs.drop(columns="_bucket"), max_lag=max_lag, transform=transform,
            min_nonzero_days=min_nonzero_days,
        )

    bucket = _effect_bucket(buckets)
    return pairs.select(*INPUT_COLUMNS, bucket).groupBy("_bucket").applyInPandas(fn, OUTPUT_DDL)


SERIES_COLUMNS = ["series_id", "values", "series_status"]
PAIR_COLUMNS = ["cause_series", "effect_series", "pair_kind"]


def apply_granger_series(
    pairs: Any,
    series: Any,
    *,
    max_lag: int,
    transform: str = "none",
    min_nonzero_days: int = 0,
    buckets: int | None = None,
) -> Any:
    """Spark wrapper on ``pairs`` (PAIR_COLUMNS) and ``series`` (SERIES_COLUMNS: one row per
    series id with its values in date order and status): the same rows as ``apply_granger`` on
    the joined pairs, with half the data moved. Each pair carries its cause's values (a
    broadcast join: one row per series is small), each effect's values travel once to its
    hash bucket, and the two meet in a cogrouped pandas call per bucket."""
    buckets = _bucket_count(pairs, buckets)

    from pyspark.sql import functions as F  # here: the numpy core runs without Spark

    bucket = _effect_bucket(buckets)
    causes = series.select(
        F.col("series_id").alias("cause_series"),
        F.col("values").alias("cause_values"),
        F.col("series_status").alias("cause_status"),
    )
    with_causes = pairs.select(*PAIR_COLUMNS).join(F.broadcast(causes), "cause_series")
    effects = series.select(
        F.col("series_id").alias("effect_series"),
        F.col("values").alias("effect_values"),
        F.col("series_status").alias("effect_status"),
    ).join(F.broadcast(pairs.select("effect_series").distinct()), "effect_series")

    def fn(left: pd.DataFrame, right: pd.DataFrame) -> pd.DataFrame:
        joined = left.drop(columns="_bucket").merge(
            right.drop(columns="_bucket"), on="effect_series", how="inner"
        )
        if joined.empty:
            return pd.DataFrame({name: [] for name in OUTPUT_COLUMNS}).astype(_OUTPUT_DTYPES)
        return granger_group(
            joined[INPUT_COLUMNS], max_lag=max_lag, transform=transform,
            min_nonzero_days=min_nonzero_days,
        )

    return (
        with_causes.select("*", bucket).groupBy("_bucket")
        .cogroup(effects.select("*", bucket).groupBy("_bucket"))
        .applyInPandas(fn, OUTPUT_DDL)
    )


_OUTPUT_DTYPES = {
    "cause_series": object, "effect_series": object, "pair_kind": object, "lag": "int32",
    "f_stat": "float64", "p_value": "float64", "df_num": "Int32", "df_den": "Int32",
    "chi2_stat": "float64", "chi2_p_value": "float64", "n_obs": "Int32", "transform": object,
    "status": object,
}
