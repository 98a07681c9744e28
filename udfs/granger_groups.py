"""Granger tests for a frame of series pairs: the pandas function a Spark UDF call runs.

``granger_group`` takes pairs (value arrays in date order with per-series statuses), checks
the series, applies the transform, and solves all usable pairs of the same length in one
:func:`udfs.granger_core.granger_tests_many` call; ``finish_family`` adds the run's
Benjamini-Hochberg q-values and best lags. No Spark here: ``stpipe/granger.py`` wraps both.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from udfs.granger_core import granger_tests_many
from udfs.granger_numerics import (
    RESULT_KEYS,
    STATUS_MISSING_DATES,
    STATUS_MISSING_VALUES,
    STATUS_OK,
    STATUS_TOO_SPARSE,
    TRANSFORMS,
    bh_qvalues,
    looks_nonstationary,
)


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


OUTPUT_COLUMNS = [
    "cause_series", "effect_series", "pair_kind", "lag",
    *(key for key in RESULT_KEYS if key != "status"), "transform", "status",
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


OUTPUT_DTYPES = {
    "cause_series": object, "effect_series": object, "pair_kind": object, "lag": "int32",
    "f_stat": "float64", "p_value": "float64", "df_num": "Int32", "df_den": "Int32",
    "chi2_stat": "float64", "chi2_p_value": "float64", "n_obs": "Int32", "transform": object,
    "status": object,
}
