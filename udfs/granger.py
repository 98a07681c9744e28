"""Granger-causality ssr F and chi-square tests for many pairs and lags at once.

The numbers are those of statsmodels' ``grangercausalitytests(x[:, [effect, cause]], lag)``
(``addconst=True``): for lag p the sample is t = p .. T-1 (n_obs = T - p), the restricted OLS
regresses y_t on a constant and y_{t-1..t-p}, the unrestricted one adds x_{t-1..t-p};
``df_den = n_obs - 2p - 1``, ``F = ((ssr_r - ssr_u) / p) / (ssr_u / df_den)`` and
``chi2 = n_obs (ssr_r - ssr_u) / ssr_u`` with p degrees of freedom.

How it stays exact and fast: the restricted model depends only on the effect series, so it
is fitted once per effect and lag (Householder QR). Each cause's lag block is centred and
projected onto the orthogonal complement of that design; the small Gram matrix of what is left
gives ``ssr_r - ssr_u`` directly as ``score' G^-1 score``, for all causes and with no
subtraction of two nearly equal sums of squares (the cancellation that made a naive
normal-equations prototype drift to 5.6e-9 relative error). Where the cause explains almost
nothing (``ssr_r - ssr_u < 1e-4 ssr_r``, F close to 0) statsmodels' own value carries that
cancellation, up to ~2e-8 relative on real series; those few rows repeat its arithmetic
(SVD pseudo-inverse OLS, same column order) so the table agrees with the reference to ~1e-10
everywhere instead of being "more exact" than it.

``granger_tests`` and ``bh_qvalues`` are plain numpy; ``granger_group`` is the pandas function
that ``apply_granger`` runs in a grouped pandas UDF (one group per effect series).
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
# squares in statsmodels; those rows repeat its arithmetic (see _reference_ssr).
REFERENCE_ROUNDING_BELOW = 1e-4
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


def _changes(x: np.ndarray) -> np.ndarray:
    """c[..., i] = number of i' <= i with x[i'] != x[i'-1]: a window [a, b) is constant iff
    c[b - 1] == c[a]."""
    steps = (x[..., 1:] != x[..., :-1]).astype(np.int64)
    return np.concatenate([np.zeros(x.shape[:-1] + (1,), np.int64), np.cumsum(steps, axis=-1)], -1)


def _lags_constant(changes: np.ndarray, lag: int) -> np.ndarray:
    """True where any lag column x_{t-j}, t = lag .. T-1, j = 1..lag, is constant."""
    t_len = changes.shape[-1]
    starts = lag - np.arange(1, lag + 1)  # column j covers x[lag - j : T - j]
    ends = t_len - np.arange(1, lag + 1) - 1
    return (changes[..., ends] == changes[..., starts]).any(axis=-1)


def _project_out(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` minus its projection on the orthonormal columns of ``q``, done twice."""
    for _ in range(2):
        z = z - q @ (q.T @ z)  # broadcasts over a leading batch axis
    return z


def _reference_ssr(design: np.ndarray, target: np.ndarray) -> float:
    """Sum of squared residuals computed as statsmodels' OLS(...).fit() does (SVD pinv).

    Used only where the F statistic is a difference of two nearly equal sums of squares:
    there statsmodels' own rounding (up to ~1e-8 relative in F) exceeds the 1e-9 agreement
    the table promises, so those rows repeat its arithmetic step for step.
    """
    u, s, vt = np.linalg.svd(design, False)
    cutoff = 1e-15 * np.maximum.reduce(s)
    s = np.where(s > cutoff, 1.0 / np.where(s > cutoff, s, 1.0), 0.0)
    pinv = np.dot(np.transpose(vt), np.multiply(s[:, np.newaxis], np.transpose(u)))
    resid = target - np.dot(design, np.dot(pinv, target))
    return float(np.dot(resid, resid))


def granger_tests(effect: np.ndarray, causes: np.ndarray, max_lag: int) -> dict[str, np.ndarray]:
    """Ssr F and chi-square Granger tests of every cause -> ``effect`` for lags 1..max_lag.

    ``effect`` has shape (T,), ``causes`` (k, T) (or (T,) for one cause), both finite and on the
    same daily grid. Returns arrays of shape (k, max_lag): ``f_stat``, ``p_value``, ``df_num``,
    ``df_den``, ``chi2_stat``, ``chi2_p_value``, ``n_obs`` (float; NaN where the status is not
    ok) and ``status`` (str). Column j is lag j + 1.
    """
    y = np.asarray(effect, dtype=np.float64)
    xs = np.asarray(causes, dtype=np.float64)
    if xs.ndim == 1:
        xs = xs[None, :]
    if y.ndim != 1 or xs.ndim != 2 or xs.shape[1] != y.shape[0]:
        raise ValueError(f"effect (T,) and causes (k, T) expected, got {y.shape} and {xs.shape}")
    if max_lag < 1:
        raise ValueError(f"max_lag must be at least 1, got {max_lag}")
    if not (np.isfinite(y).all() and np.isfinite(xs).all()):
        raise ValueError("effect and causes must be finite")
    k, t_len = xs.shape
    shape = (k, max_lag)
    explained_all, ssr_u_all = np.full(shape, np.nan), np.full(shape, np.nan)
    status = np.full(shape, STATUS_OK, dtype=object)
    y_changes, x_changes = _changes(y), _changes(xs)
    eps = np.finfo(np.float64).eps
    for lag in range(1, max_lag + 1):
        col = lag - 1
        if t_len <= 3 * lag + 1:
            status[:, col] = STATUS_TOO_SHORT
            continue
        n_obs = t_len - lag
        target = y[lag:]
        own = np.column_stack([_lag_block(y, lag), np.ones(n_obs)])
        constant = _lags_constant(x_changes, lag) | bool(
            _lags_constant(y_changes, lag) or y_changes[-1] == y_changes[lag]
        )
        q_r, r_r = np.linalg.qr(own)
        own_singular = bool(
            (np.abs(np.diag(r_r)) <= SINGULAR_RTOL * np.linalg.norm(own, axis=0)).any()
        )
        resid_r = _project_out(q_r, target[:, None])[:, 0]
        ssr_r = float(resid_r @ resid_r)
        cross = _lag_block(xs, lag)  # (k, n, p)
        # Centring first removes the part along the constant exactly, so that one projection
        # leaves only rounding of the size of the centred block (levels far from 0 are safe).
        centred = cross - cross.mean(axis=-2, keepdims=True)
        cross_perp = centred - q_r @ (q_r.T @ centred)
        # Gram matrix of the cause block orthogonalised against the restricted design: its
        # condition is that of the cause's own lags, not of the raw levels and constant.
        gram = np.matmul(cross_perp.transpose(0, 2, 1), cross_perp)
        scale = np.sqrt(np.einsum("knp,knp->kp", centred, centred))
        pivots = _cholesky_pivots(gram)
        singular = own_singular | (pivots <= SINGULAR_RTOL * scale).any(axis=-1)
        usable = ~(constant | singular)
        score = np.einsum("knp,n->kp", cross_perp, resid_r)
        coef = np.zeros((k, lag))
        if usable.any():
            coef[usable] = np.linalg.solve(gram[usable], score[usable][..., None])[..., 0]
        explained = np.einsum("kp,kp->k", coef, score)  # ssr_r - ssr_u, without cancellation
        resid_u = resid_r[None, :] - np.einsum("knp,kp->kn", cross_perp, coef)
        ssr_u = np.einsum("kn,kn->k", resid_u, resid_u)
        tss = float(((target - target.mean()) ** 2).sum())
        perfect = (ssr_u == 0) | (ssr_u < eps * tss)
        ok = usable & ~perfect
        status[constant, col] = STATUS_CONSTANT
        status[~constant & singular, col] = STATUS_SINGULAR
        status[usable & perfect, col] = STATUS_PERFECT_FIT
        near_zero = ok & (explained < REFERENCE_ROUNDING_BELOW * ssr_r)
        if near_zero.any():  # statsmodels' column order: y_{t-1} .. y_{t-p}, x_{t-1} .. x_{t-p}, 1
            own_lags = own[:, -2::-1]
            ssr_r_ref = _reference_ssr(np.column_stack([own_lags, np.ones(n_obs)]), target)
            for i in np.flatnonzero(near_zero):
                joint = np.column_stack([own_lags, cross[i][:, ::-1], np.ones(n_obs)])
                ssr_u[i] = _reference_ssr(joint, target)
                explained[i] = ssr_r_ref - ssr_u[i]
        explained_all[ok, col] = explained[ok]
        ssr_u_all[ok, col] = ssr_u[ok]
    return _statistics(explained_all, ssr_u_all, status, t_len)


def _cholesky_pivots(gram: np.ndarray) -> np.ndarray:
    """|R_jj| of the QR of the block behind each (k, p, p) Gram matrix; 0 where not definite."""
    try:
        return np.abs(np.diagonal(np.linalg.cholesky(gram), axis1=-2, axis2=-1))
    except np.linalg.LinAlgError:  # some block is singular: find which, one by one
        pivots = np.zeros(gram.shape[:2])
        for i, g in enumerate(gram):
            try:
                pivots[i] = np.abs(np.diagonal(np.linalg.cholesky(g)))
            except np.linalg.LinAlgError:
                pass
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


def _series_status(values: np.ndarray, given: str, min_nonzero_days: int) -> str:
    if given != STATUS_OK:
        return given
    if not np.isfinite(values).all():
        return STATUS_MISSING_VALUES
    if int(np.count_nonzero(values)) < min_nonzero_days:
        return STATUS_TOO_SPARSE
    return STATUS_OK


def granger_group(
    pairs: pd.DataFrame, *, max_lag: int, transform: str = "none", min_nonzero_days: int = 0
) -> pd.DataFrame:
    """All tests of the pairs of one effect series: one row per (pair, lag), OUTPUT_COLUMNS.

    ``pairs`` has INPUT_COLUMNS: the value arrays in date order, and per-series status
    ('ok' or a reason found upstream, such as 'missing_dates'). Pairs with a bad series get
    that status and null statistics on every lag; ``transform`` 'diff' differences both
    series, 'auto' differences a pair when either series looks non-stationary.
    """
    if transform not in TRANSFORMS:
        raise ValueError(f"transform must be one of {', '.join(TRANSFORMS)}, got {transform!r}")
    rows: list[pd.DataFrame] = []
    if pairs.empty:
        return pd.DataFrame(columns=OUTPUT_COLUMNS)
    pairs = pairs.sort_values(["effect_series", "cause_series"], kind="stable")
    for _, group in pairs.groupby("effect_series", sort=True):
        rows.extend(_one_effect(group, max_lag, transform, min_nonzero_days))
    return pd.concat(rows, ignore_index=True)[OUTPUT_COLUMNS]


def _one_effect(
    group: pd.DataFrame, max_lag: int, transform: str, min_nonzero_days: int
) -> list[pd.DataFrame]:
    first = group.iloc[0]
    effect = np.asarray(first["effect_values"], dtype=np.float64)
    effect_status = _series_status(effect, first["effect_status"], min_nonzero_days)
    causes = [np.asarray(v, dtype=np.float64) for v in group["cause_values"]]
    statuses = []
    for values, given in zip(causes, group["cause_status"], strict=True):
        own = _series_status(values, given, min_nonzero_days)
        if effect_status != STATUS_OK:
            own = effect_status
        elif own == STATUS_OK and values.shape != effect.shape:
            own = STATUS_MISSING_DATES
        statuses.append(own)
    statuses_arr = np.array(statuses, dtype=object)
    good = np.flatnonzero(statuses_arr == STATUS_OK)
    effect_diff = effect_status == STATUS_OK and transform == "auto" and looks_nonstationary(effect)
    use_diff = np.zeros(len(causes), dtype=bool)
    if transform == "diff":
        use_diff[:] = True
    elif transform == "auto":
        use_diff[good] = [effect_diff or looks_nonstationary(causes[i]) for i in good]

    frames = []
    lags = np.arange(1, max_lag + 1)
    for diffed in (False, True):
        chosen = good[use_diff[good] == diffed]
        if chosen.size == 0:
            continue
        y = np.diff(effect) if diffed else effect
        xs = np.stack([np.diff(causes[i]) if diffed else causes[i] for i in chosen])
        res = granger_tests(y, xs, max_lag)
        frames.append(_frame(group.iloc[chosen], lags, res, "diff" if diffed else "none"))
    bad = np.flatnonzero(statuses_arr != STATUS_OK)
    if bad.size:
        shape = (bad.size, max_lag)
        res = {key: np.full(shape, np.nan) for key in RESULT_KEYS if key != "status"}
        res["status"] = np.repeat(statuses_arr[bad][:, None], max_lag, axis=1)
        frames.append(_frame(group.iloc[bad], lags, res, "diff" if transform == "diff" else "none"))
    return frames


def _frame(
    pairs: pd.DataFrame, lags: np.ndarray, res: dict[str, np.ndarray], transform: str
) -> pd.DataFrame:
    k, n_lags = res["status"].shape
    columns: dict[str, Any] = {
        "cause_series": np.repeat(pairs["cause_series"].to_numpy(), n_lags),
        "effect_series": np.repeat(pairs["effect_series"].to_numpy(), n_lags),
        "pair_kind": np.repeat(pairs["pair_kind"].to_numpy(), n_lags),
        "lag": np.tile(lags, k).astype(np.int32),
        "transform": np.full(k * n_lags, transform, dtype=object),
    }
    for key in RESULT_KEYS:
        values = res[key].ravel()
        if key in ("df_num", "df_den", "n_obs"):  # nullable integers
            missing = np.isnan(values)
            values = pd.arrays.IntegerArray(np.where(missing, 0, values).astype(np.int32), missing)
        columns[key] = values
    return pd.DataFrame(columns)


def apply_granger(
    pairs: Any, *, max_lag: int, transform: str = "none", min_nonzero_days: int = 0
) -> Any:
    """Spark wrapper: ``pairs`` (a DataFrame with INPUT_COLUMNS) grouped by effect series."""
    def fn(pairs: pd.DataFrame) -> pd.DataFrame:
        return granger_group(
            pairs, max_lag=max_lag, transform=transform, min_nonzero_days=min_nonzero_days
        )

    return pairs.select(*INPUT_COLUMNS).groupBy("effect_series").applyInPandas(fn, OUTPUT_DDL)
