"""``granger_tests_many`` (all pairs of many effects at once) and multi-effect UDF groups,
against statsmodels; the fast path's fallbacks (near-collinear causes, near-perfect fits)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.tsa.stattools import grangercausalitytests

import udfs.granger_core as core
from udfs.granger_core import granger_tests_many
from udfs.granger_groups import OUTPUT_COLUMNS, granger_group

RTOL = 1e-9


def reference(effect: np.ndarray, cause: np.ndarray, max_lag: int) -> dict[int, tuple]:
    """{lag: (F, p, df_den, chi2, chi2_p)} from statsmodels' grangercausalitytests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = grangercausalitytests(np.column_stack([effect, cause]), max_lag)
    return {
        lag: (*tests["ssr_ftest"][:3], *tests["ssr_chi2test"][:2]) for lag, (tests, _) in res.items()
    }


def assert_row_matches(got: dict, row: int, effect: np.ndarray, cause: np.ndarray, max_lag: int):
    for lag, (f, p, df_den, chi2, chi2_p) in reference(effect, cause, max_lag).items():
        j = lag - 1
        assert got["status"][row, j] == "ok", (row, lag, got["status"][row, j])
        assert got["df_num"][row, j] == lag and got["df_den"][row, j] == df_den
        assert got["n_obs"][row, j] == len(effect) - lag
        np.testing.assert_allclose(
            [got["f_stat"][row, j], got["p_value"][row, j], got["chi2_stat"][row, j],
             got["chi2_p_value"][row, j]],
            [f, p, chi2, chi2_p], rtol=RTOL, atol=0,
        )


def test_many_effects_with_unequal_cause_counts_match_statsmodels_in_the_given_order():
    rng = np.random.default_rng(21)
    t_len, max_lag = 160, 5
    effects = rng.normal(size=(4, t_len)).cumsum(axis=1) * 0.2 + rng.normal(size=(4, t_len))
    effects[2] = rng.poisson(3.0, t_len)  # counts
    effects[3] += 1e4  # a level far from 0
    # effect 0 has 3 causes, effect 1 one, effect 2 three, effect 3 five; rows interleaved
    effect_index = np.array([3, 0, 2, 3, 1, 0, 3, 2, 3, 0, 2, 3])
    causes = rng.normal(size=(effect_index.size, t_len)) * rng.uniform(0.01, 500, (effect_index.size, 1))
    causes[4, 2:] += 0.8 * effects[1, :-2] * np.abs(causes[4]).mean()  # effect leads this cause
    lead = np.r_[np.zeros(3), causes[5, :-3]]
    effects[0] += 0.5 * lead / causes[5].std()  # cause 5 leads effect 0 by 3 days
    causes[7] = np.cumsum(causes[7])  # a random walk
    got = granger_tests_many(effects, causes, effect_index, max_lag)
    assert got["status"].shape == (effect_index.size, max_lag)
    for row, e in enumerate(effect_index):
        assert_row_matches(got, row, effects[e], causes[row], max_lag)
    assert got["p_value"][5, 2] < 1e-3  # the planted lead is found


def test_many_effects_mix_guard_statuses_with_ok_rows():
    rng = np.random.default_rng(22)
    t_len = 90
    effects = np.stack([rng.normal(size=t_len), np.full(t_len, 7.0), rng.normal(size=t_len)])
    x = rng.normal(size=t_len)
    causes = np.stack(
        [
            rng.normal(size=t_len),  # 0 -> effect 0: ok
            np.full(t_len, 3.0),  # 1 -> effect 0: constant cause
            effects[0].copy(),  # 2 -> effect 0: the effect itself, singular
            rng.normal(size=t_len),  # 3 -> effect 1: constant effect
            3.0 * effects[2] - 2.0,  # 4 -> effect 2: affine copy, singular
            x,  # 5 -> effect 2: ok
            rng.normal(size=t_len),  # 6 -> effect 0: ok
        ]
    )
    effect_index = np.array([0, 0, 0, 1, 2, 2, 0])
    got = granger_tests_many(effects, causes, effect_index, 2)
    assert [list(s) for s in got["status"]] == [
        ["ok", "ok"], ["constant", "constant"], ["singular", "singular"], ["constant", "constant"],
        ["singular", "singular"], ["ok", "ok"], ["ok", "ok"],
    ]
    bad = got["status"] != "ok"
    for key in ("f_stat", "p_value", "chi2_stat", "chi2_p_value", "n_obs", "df_den", "df_num"):
        assert np.isnan(got[key][bad]).all()
    for row in (0, 5, 6):
        assert_row_matches(got, row, effects[effect_index[row]], causes[row], 2)
    # a perfect fit next to an ordinary row of the same effect
    y = np.r_[0.0, x[:-1]]  # y_t = x_{t-1}
    got = granger_tests_many(y[None, :], np.stack([x, rng.normal(size=t_len)]), np.array([0, 0]), 1)
    assert list(got["status"][:, 0]) == ["perfect_fit", "ok"]


def test_too_short_lags_and_an_effect_without_causes():
    rng = np.random.default_rng(23)
    effects = rng.normal(size=(2, 13))
    causes = rng.normal(size=(2, 13))
    got = granger_tests_many(effects, causes, np.array([1, 1]), 5)  # effect 0 has no cause
    assert [list(s) for s in got["status"]] == [["ok"] * 3 + ["too_short"] * 2] * 2
    for row in range(2):
        assert_row_matches(got, row, effects[1], causes[row], 3)
    empty = granger_tests_many(effects, np.zeros((0, 13)), np.zeros(0, dtype=int), 2)
    assert empty["f_stat"].shape == (0, 2)


def test_near_collinear_causes_and_near_perfect_fits_take_the_explicit_path(monkeypatch):
    rng = np.random.default_rng(24)
    t_len, max_lag = 200, 3
    y = np.cumsum(rng.normal(size=t_len)) * 0.1 + rng.normal(size=t_len)
    x = rng.normal(size=t_len)
    causes = np.stack(
        [
            y + 1e-3 * rng.normal(size=t_len),  # lag block almost in the span of y's own lags
            np.r_[x[1:], 0.0],  # fine cause ...
            rng.normal(size=t_len),  # fine
        ]
    )
    effect = y.copy()
    effect2 = np.r_[0.0, x[:-1]] + 1e-3 * rng.normal(size=t_len)  # y_t = x_{t-1} + tiny noise
    effects = np.stack([effect, effect2])
    causes = np.vstack([causes, x[None, :]])
    effect_index = np.array([0, 0, 0, 1])
    seen: list[int] = []
    explicit = core.explicit_rows

    def spy(*args):
        seen.extend(args[-1].tolist())
        return explicit(*args)

    monkeypatch.setattr(core, "explicit_rows", spy)
    got = granger_tests_many(effects, causes, effect_index, max_lag)
    assert sorted(seen) == [0] * max_lag + [1] * max_lag  # rows 0 and 3 (effects 0, 1), each lag
    for row, e in enumerate(effect_index):
        assert_row_matches(got, row, effects[e], causes[row], max_lag)


def test_input_checks():
    with pytest.raises(ValueError, match="effect_index"):
        granger_tests_many(np.zeros((2, 10)), np.zeros((3, 10)), np.array([0, 1]), 1)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        granger_tests_many(np.zeros((2, 10)), np.zeros((2, 10)), np.array([0, 2]), 1)
    with pytest.raises(ValueError, match="finite"):
        granger_tests_many(np.full((1, 10), np.inf), np.zeros((1, 10)), np.array([0]), 1)
    with pytest.raises(ValueError, match="max_lag"):
        granger_tests_many(np.zeros((1, 10)), np.zeros((1, 10)), np.array([0]), 0)


def test_group_with_several_effects_of_different_lengths_matches_statsmodels():
    rng = np.random.default_rng(25)
    long_effect, short_effect = rng.normal(size=150), rng.poisson(4.0, 90).astype(float)
    long_causes = [rng.normal(size=150) for _ in range(3)]
    short_causes = [rng.poisson(2.0, 90).astype(float) for _ in range(2)]
    frame = pd.DataFrame(
        {
            "cause_series": ["c0", "c1", "c2", "d0", "d1"],
            "effect_series": ["long", "long", "long", "short", "short"],
            "pair_kind": "category_global",
            "cause_values": long_causes + short_causes,
            "effect_values": [long_effect] * 3 + [short_effect] * 2,
            "cause_status": "ok",
            "effect_status": "ok",
        }
    ).sample(frac=1.0, random_state=3)  # any row order
    out = granger_group(frame, max_lag=3)
    assert list(out.columns) == OUTPUT_COLUMNS and len(out) == 15
    assert (out["status"] == "ok").all() and (out["transform"] == "none").all()
    values = dict(zip(["c0", "c1", "c2", "d0", "d1"], long_causes + short_causes, strict=True))
    effects = {"long": long_effect, "short": short_effect}
    for row in out.itertuples():
        f, p, df_den, chi2, chi2_p = reference(effects[row.effect_series], values[row.cause_series],
                                               3)[row.lag]
        np.testing.assert_allclose([row.f_stat, row.p_value, row.chi2_stat, row.chi2_p_value],
                                   [f, p, chi2, chi2_p], rtol=RTOL)
        assert row.df_den == df_den and row.n_obs == len(effects[row.effect_series]) - row.lag
    # the same rows whatever order the pairs come in, and sorted by effect then cause
    again = granger_group(frame.sort_values("cause_series", ascending=False), max_lag=3)
    pd.testing.assert_frame_equal(out, again)
    assert list(out["effect_series"]) == ["long"] * 9 + ["short"] * 6


def test_spark_buckets_give_the_same_rows_as_one_pandas_call(spark):
    from stpipe.granger import apply_granger_series

    rng = np.random.default_rng(26)
    series = {f"category=s{i}": rng.poisson(3.0 + i, 100).astype(float) for i in range(5)}
    series["category=flat"] = np.full(100, 2.0)
    names = sorted(series)
    frame = pd.DataFrame(
        [(c, e, "category_global", series[c].tolist(), series[e].tolist(), "ok", "ok")
         for e in names for c in names if c != e],
        columns=["cause_series", "effect_series", "pair_kind", "cause_values", "effect_values",
                 "cause_status", "effect_status"],
    )
    key = ["effect_series", "cause_series", "lag"]
    ints = {"lag": "float64", "df_num": "float64", "df_den": "float64", "n_obs": "float64"}
    expected = granger_group(frame, max_lag=3).sort_values(key).reset_index(drop=True).astype(ints)
    assert set(expected["status"]) == {"ok", "constant"}
    # pairs + one row per series: the same rows as one pandas call; a pair whose cause has no
    # series is dropped, and so is an effect left without pairs
    arrays = spark.createDataFrame(
        [(sid, series[sid].tolist(), "ok") for sid in names],
        "series_id string, values array<double>, series_status string",
    )
    pair_rows = [tuple(r) for r in frame[["cause_series", "effect_series", "pair_kind"]].itertuples(
        index=False)] + [("category=gone", "category=s0", "category_global"),
                         ("category=gone", "category=lonely", "category_global")]
    pairs = spark.createDataFrame(pair_rows, "cause_series string, effect_series string, "
                                  "pair_kind string")
    arrays = arrays.unionByName(spark.createDataFrame(
        [("category=lonely", [1.0] * 100, "ok")], arrays.schema))
    for buckets in (1, 4, 1000):  # 1000: 'category=lonely' alone in its bucket (no pairs)
        got = (apply_granger_series(pairs, arrays, max_lag=3, buckets=buckets).toPandas()
               .sort_values(key).reset_index(drop=True).astype(ints))
        pd.testing.assert_frame_equal(got, expected, rtol=1e-12)
    with pytest.raises(ValueError, match="buckets"):
        apply_granger_series(pairs, arrays, max_lag=3, buckets=0)


def test_a_level_shift_outside_the_lag_window_takes_the_explicit_path(monkeypatch):
    rng = np.random.default_rng(30)
    t_len = 150
    effect = rng.normal(size=t_len)
    cause = 1e-3 * rng.normal(size=t_len)
    cause[0] = 1e3  # the series mean is far from the lag columns' own means (lags >= 2)
    calls: list[int] = []
    explicit = core.explicit_rows

    def spy(*args):
        calls.append(len(args[-1]))
        return explicit(*args)

    monkeypatch.setattr(core, "explicit_rows", spy)
    got = granger_tests_many(effect[None, :], cause[None, :], np.array([0]), 3)
    assert calls == [1, 1]  # lags 2 and 3
    assert_row_matches(got, 0, effect, cause, 3)
