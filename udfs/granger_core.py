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

``granger_tests_many`` (all pairs of many effect series at once) and ``granger_tests`` (one
effect) are plain numpy, built from :mod:`udfs.granger_numerics`; :mod:`udfs.granger_groups`
turns pairs of series into their calls, and ``stpipe/granger.py`` runs that in Spark.
"""

from __future__ import annotations

import numpy as np

from udfs.granger_numerics import (
    CODE_CONSTANT,
    CODE_NAMES,
    CODE_OK,
    CODE_PERFECT_FIT,
    CODE_TOO_SHORT,
    FAST_PIVOT_RTOL,
    FAST_RESIDUAL_RTOL,
    REFERENCE_ROUNDING_BELOW,
    SINGULAR_RTOL,
    Changes,
    EdgeSums,
    cholesky_pivots,
    explicit_rows,
    lag_block,
    project_out,
    reference_near_zero,
    statistics,
)


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
    (``explicit_rows``), so the guard statuses are decided as precisely as before.
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
    y_changes, x_changes = Changes(ys, max_lag), Changes(xs, max_lag)
    # Causes less their own mean: the constant is in every design, so the tests are unchanged,
    # and the products below no longer carry the level (no cancellation far from 0).
    x0 = xs - xs.mean(axis=-1, keepdims=True)
    width = min(max_lag, t_len)
    lagged = [EdgeSums(x0[:, : t_len - d], x0[:, d:], width) for d in range(min(max_lag, t_len))]
    eps = np.finfo(np.float64).eps
    for lag in range(1, max_lag + 1):
        col = lag - 1
        if t_len <= 3 * lag + 1:
            codes[:, col] = CODE_TOO_SHORT
            continue
        if k == 0:
            continue
        n_obs = t_len - lag
        targets = ys[:, lag:]  # (E, n)
        own_lags = lag_block(ys, lag)  # (E, n, p)
        own = np.concatenate([own_lags, np.ones((n_effects, n_obs, 1))], axis=-1)
        q_r, r_r = np.linalg.qr(own)
        own_singular = (
            np.abs(np.diagonal(r_r, axis1=-2, axis2=-1))
            <= SINGULAR_RTOL * np.sqrt(np.einsum("enq,enq->eq", own, own))
        ).any(axis=-1)
        resid_r = project_out(q_r, targets[..., None])[..., 0]  # (E, n)
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
        pivots = cholesky_pivots(gram)
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
        codes[constant, col] = CODE_CONSTANT
        rows = np.flatnonzero(explicit)
        if rows.size:
            cross = lag_block(xs[rows], lag)
            explained[rows], ssr_u[rows], codes[rows, col] = explicit_rows(
                q_r, resid_r, own_singular, tss, cross, eff[rows]
            )
        perfect = fast & ((ssr_u == 0) | (ssr_u < eps * tss[eff]))
        codes[perfect, col] = CODE_PERFECT_FIT
        ok = codes[:, col] == CODE_OK
        near_zero = np.flatnonzero(ok & (explained < REFERENCE_ROUNDING_BELOW * ssr_r[eff]))
        if near_zero.size:
            ssr_u[near_zero], explained[near_zero] = reference_near_zero(
                own_lags, targets, lag_block(xs[near_zero], lag), eff[near_zero]
            )
        explained_all[ok, col] = explained[ok]
        ssr_u_all[ok, col] = ssr_u[ok]
    unsorted = np.empty_like(perm)
    unsorted[perm] = np.arange(k)
    return statistics(
        explained_all[unsorted], ssr_u_all[unsorted], CODE_NAMES[codes[unsorted]], t_len
    )
