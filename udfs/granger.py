"""Granger-causality ssr F and chi-square tests for many pairs and lags at once.

The numbers are those of statsmodels' ``grangercausalitytests(x[:, [effect, cause]], lag)``
(``addconst=True``): for lag p the sample is t = p .. T-1 (n_obs = T - p), the restricted OLS
regresses y_t on a constant and y_{t-1..t-p}, the unrestricted one adds x_{t-1..t-p};
``df_den = n_obs - 2p - 1``, ``F = ((ssr_r - ssr_u) / p) / (ssr_u / df_den)`` and
``chi2 = n_obs (ssr_r - ssr_u) / ssr_u`` with p degrees of freedom.

How it stays exact and fast: the restricted model depends only on the effect series, so it
is fitted once per effect and lag (Householder QR). The causes' lag blocks are projected onto
its orthogonal complement (twice: "twice is enough" for Gram-Schmidt) and factored with one
batched QR, which gives ``ssr_r - ssr_u`` as a squared norm directly, without the cancellation
of subtracting two nearly equal sums of squares that makes normal equations drift.

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
    """Rows t = lag .. T-1, columns x_{t-lag} .. x_{t-1} (last axis of ``x`` is time)."""
    n = x.shape[-1] - lag
    return sliding_window_view(x, lag, axis=-1)[..., :n, :]


def _constant_columns(block: np.ndarray) -> np.ndarray:
    """True where any column of the (..., n, p) block is constant over its rows."""
    return (block.max(axis=-2) == block.min(axis=-2)).any(axis=-1)


def _project_out(q: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``z`` minus its projection on the orthonormal columns of ``q``, done twice."""
    for _ in range(2):
        z = z - q @ (q.T @ z)  # broadcasts over a leading batch axis
    return z


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
    out: dict[str, np.ndarray] = {
        key: np.full((k, max_lag), np.nan) for key in RESULT_KEYS if key != "status"
    }
    status = np.full((k, max_lag), STATUS_OK, dtype=object)
    for lag in range(1, max_lag + 1):
        col = lag - 1
        if t_len <= 3 * lag + 1:
            status[:, col] = STATUS_TOO_SHORT
            continue
        n_obs = t_len - lag
        df_den = n_obs - 2 * lag - 1
        target = y[lag:]
        own = _lag_block(y, lag)  # (n, p)
        cross = _lag_block(xs, lag)  # (k, n, p)
        bad_own = _constant_columns(own) or target.max() == target.min()
        const = _constant_columns(cross) | bad_own
        restricted = np.column_stack([own, np.ones(n_obs)])
        q_r, r_r = np.linalg.qr(restricted)
        own_singular = bool(
            (np.abs(np.diag(r_r)) <= SINGULAR_RTOL * np.linalg.norm(restricted, axis=0)).any()
        )
        resid_r = _project_out(q_r, target[:, None])[:, 0]
        ssr_r = resid_r @ resid_r
        cross_perp = _project_out(q_r, cross)  # (k, n, p)
        q_u, r_u = np.linalg.qr(cross_perp)  # batched over k
        pivots = np.abs(np.diagonal(r_u, axis1=-2, axis2=-1))
        singular = own_singular | (
            pivots <= SINGULAR_RTOL * np.linalg.norm(cross, axis=-2)
        ).any(axis=-1)
        coef = np.einsum("knp,n->kp", q_u, resid_r)
        explained = np.einsum("kp,kp->k", coef, coef)  # ssr_r - ssr_u, without cancellation
        resid_u = resid_r[None, :] - np.einsum("knp,kp->kn", q_u, coef)
        ssr_u = np.einsum("kn,kn->k", resid_u, resid_u)
        tss = float(((target - target.mean()) ** 2).sum())
        perfect = (ssr_u == 0) | (ssr_u < np.finfo(float).eps * tss)
        with np.errstate(divide="ignore", invalid="ignore"):
            f_stat = explained / lag / (ssr_u / df_den)
            chi2 = n_obs * explained / ssr_u
        ok = ~(const | singular | perfect)
        status[const, col] = STATUS_CONSTANT
        status[~const & singular, col] = STATUS_SINGULAR
        status[~const & ~singular & perfect, col] = STATUS_PERFECT_FIT
        out["f_stat"][ok, col] = f_stat[ok]
        out["p_value"][ok, col] = stats.f.sf(f_stat[ok], lag, df_den)
        out["chi2_stat"][ok, col] = chi2[ok]
        out["chi2_p_value"][ok, col] = stats.chi2.sf(chi2[ok], lag)
        out["df_num"][ok, col] = lag
        out["df_den"][ok, col] = df_den
        out["n_obs"][ok, col] = n_obs
        del ssr_r  # the restricted ssr is implied by explained + ssr_u
    out["status"] = status
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
    frame = pd.DataFrame(
        {
            "cause_series": np.repeat(pairs["cause_series"].to_numpy(), n_lags),
            "effect_series": np.repeat(pairs["effect_series"].to_numpy(), n_lags),
            "pair_kind": np.repeat(pairs["pair_kind"].to_numpy(), n_lags),
            "lag": np.tile(lags, k).astype("int32"),
            "transform": transform,
        }
    )
    for key in RESULT_KEYS:
        values = res[key].ravel()
        if key in ("df_num", "df_den", "n_obs"):
            ints = pd.array(np.where(np.isnan(values), 0, values).astype("int32"), dtype="Int32")
            ints[np.isnan(values)] = pd.NA
            frame[key] = ints
        else:
            frame[key] = values
    return frame


def apply_granger(
    pairs: Any, *, max_lag: int, transform: str = "none", min_nonzero_days: int = 0
) -> Any:
    """Spark wrapper: ``pairs`` (a DataFrame with INPUT_COLUMNS) grouped by effect series."""
    def fn(pairs: pd.DataFrame) -> pd.DataFrame:
        return granger_group(
            pairs, max_lag=max_lag, transform=transform, min_nonzero_days=min_nonzero_days
        )

    return pairs.select(*INPUT_COLUMNS).groupBy("effect_series").applyInPandas(fn, OUTPUT_DDL)
