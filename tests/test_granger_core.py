"""The numpy Granger core and BH q-values against statsmodels and hand computations (no Spark)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import OLIST_DIR, needs_shared
from statsmodels.stats.multitest import multipletests
from statsmodels.tools.sm_exceptions import InfeasibleTestError
from statsmodels.tsa.stattools import grangercausalitytests

from udfs.granger_core import granger_tests
from udfs.granger_groups import OUTPUT_COLUMNS, finish_family, granger_group
from udfs.granger_numerics import bh_qvalues, looks_nonstationary

RTOL = 1e-9


def statsmodels_reference(effect: np.ndarray, cause: np.ndarray, max_lag: int) -> dict:
    """{lag: (F, p, df_den, df_num, chi2, chi2_p)} from grangercausalitytests."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = grangercausalitytests(np.column_stack([effect, cause]), max_lag)
    out = {}
    for lag, (tests, _) in res.items():
        f, p, df_den, df_num = tests["ssr_ftest"]
        chi2, chi2_p, _ = tests["ssr_chi2test"]
        out[lag] = (f, p, df_den, df_num, chi2, chi2_p)
    return out


def assert_matches_statsmodels(effect: np.ndarray, causes: np.ndarray, max_lag: int) -> None:
    got = granger_tests(effect, causes, max_lag)
    for i, cause in enumerate(causes):
        ref = statsmodels_reference(effect, cause, max_lag)
        for lag, (f, p, df_den, df_num, chi2, chi2_p) in ref.items():
            j = lag - 1
            assert got["status"][i, j] == "ok"
            assert got["df_num"][i, j] == df_num == lag
            assert got["df_den"][i, j] == df_den
            assert got["n_obs"][i, j] == len(effect) - lag
            np.testing.assert_allclose(got["f_stat"][i, j], f, rtol=RTOL, atol=0)
            np.testing.assert_allclose(got["p_value"][i, j], p, rtol=RTOL, atol=0)
            np.testing.assert_allclose(got["chi2_stat"][i, j], chi2, rtol=RTOL, atol=0)
            np.testing.assert_allclose(got["chi2_p_value"][i, j], chi2_p, rtol=RTOL, atol=0)


@pytest.mark.parametrize("seed,t_len,max_lag", [(0, 60, 4), (1, 200, 7), (2, 608, 7), (3, 30, 9)])
def test_random_series_match_statsmodels(seed, t_len, max_lag):
    rng = np.random.default_rng(seed)
    effect = rng.normal(size=t_len)
    causes = rng.normal(size=(5, t_len)) * rng.uniform(0.1, 1000, size=(5, 1))
    causes[1] = np.cumsum(causes[1])  # a random walk
    causes[2, 2:] += 3.0 * effect[:-2]  # reverse direction: effect leads this cause
    effect = effect.copy()
    effect[3:] += 0.4 * causes[0, :-3] / np.std(causes[0])  # cause 0 leads the effect
    max_lag = min(max_lag, (t_len - 2) // 3)
    assert_matches_statsmodels(effect + 50.0, causes, max_lag)


def test_count_series_with_many_zeros_match_statsmodels():
    rng = np.random.default_rng(11)
    effect = rng.poisson(0.8, size=300).astype(float)
    causes = rng.poisson([[0.5], [2.0], [9.0]], size=(3, 300)).astype(float)
    assert_matches_statsmodels(effect, causes, 7)


@needs_shared
def test_olist_state_category_series_match_statsmodels():
    read = lambda name: pd.read_csv(OLIST_DIR / f"olist_{name}_dataset.csv.gz", dtype=str)  # noqa: E731
    orders = read("orders")[["order_id", "customer_id", "order_purchase_timestamp"]]
    lines = (
        read("order_items")[["order_id", "product_id"]]
        .merge(orders, on="order_id")
        .merge(read("customers")[["customer_id", "customer_state"]], on="customer_id")
        .merge(read("products")[["product_id", "product_category_name"]], on="product_id")
    )
    lines["date"] = pd.to_datetime(lines["order_purchase_timestamp"]).dt.normalize()
    days = pd.date_range("2017-01-01", "2018-08-31", freq="D")
    lines = lines[lines["date"].isin(days)]
    top = lines["product_category_name"].value_counts().index[:4]
    counts = (
        lines[lines["product_category_name"].isin(top) & (lines["customer_state"] == "SP")]
        .groupby(["product_category_name", "date"])
        .size()
        .unstack(0)
        .reindex(days, fill_value=0)
        .fillna(0.0)
    )
    assert counts.shape == (608, 4)
    values = counts.to_numpy(dtype=float).T
    for e in range(4):
        assert_matches_statsmodels(values[e], np.delete(values, e, axis=0), 7)


def test_too_short_lags_get_a_status_and_null_statistics():
    rng = np.random.default_rng(3)
    t_len = 13  # statsmodels needs T > 3 * lag + 1: lags 1..3 work, 4 does not
    effect, cause = rng.normal(size=t_len), rng.normal(size=(1, t_len))
    got = granger_tests(effect, cause, 5)
    assert list(got["status"][0]) == ["ok", "ok", "ok", "too_short", "too_short"]
    assert np.isnan(got["f_stat"][0, 3:]).all() and np.isnan(got["p_value"][0, 3:]).all()
    with pytest.raises(ValueError, match="Insufficient observations"):
        grangercausalitytests(np.column_stack([effect, cause[0]]), 4)
    assert_matches_statsmodels(effect, cause, 3)


def test_constant_singular_and_perfect_fit_are_statuses_not_crashes():
    rng = np.random.default_rng(4)
    effect = rng.normal(size=80)
    causes = np.stack(
        [
            np.full(80, 3.0),  # constant cause
            effect.copy(),  # the effect itself: its lags repeat the restricted design
            2.0 * effect + 1.0,  # an affine copy: same span
            np.r_[np.zeros(79), 5.0],  # only its last value moves: lag columns are constant
            rng.normal(size=80),  # fine
        ]
    )
    got = granger_tests(effect, causes, 2)
    assert list(got["status"][:, 0]) == ["constant", "singular", "singular", "constant", "ok"]
    assert np.isnan(got["f_stat"][:4]).all()
    with pytest.raises(InfeasibleTestError):  # statsmodels refuses the same case
        grangercausalitytests(np.column_stack([effect, causes[3]]), 2)
    got = granger_tests(np.full(80, 2.0), causes[4:], 2)
    assert list(got["status"][0]) == ["constant", "constant"]
    # y_t = x_{t-1} exactly: nothing left to explain
    x = rng.normal(size=50)
    got = granger_tests(np.r_[0.0, x[:-1]], x, 1)
    assert got["status"][0, 0] == "perfect_fit"


def test_input_shape_checks():
    with pytest.raises(ValueError, match="expected"):
        granger_tests(np.zeros(10), np.zeros((2, 9)), 1)
    with pytest.raises(ValueError, match="finite"):
        granger_tests(np.r_[np.nan, np.ones(9)], np.zeros((1, 10)), 1)


def test_bh_qvalues_by_hand():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.20 with m = 4: 0.04, 0.06, 0.0533, 0.20; running min from the top
    expected = np.array([0.04, 0.16 / 3, 0.16 / 3, 0.20, np.nan])
    np.testing.assert_allclose(bh_qvalues(p), expected, rtol=1e-15)
    np.testing.assert_allclose(bh_qvalues(np.array([0.5, 0.9, 0.99])), [0.99] * 3, rtol=1e-15)
    np.testing.assert_array_equal(bh_qvalues(np.array([0.7, 0.7])), [0.7, 0.7])
    assert np.isnan(bh_qvalues(np.array([np.nan]))).all()


def test_bh_qvalues_match_statsmodels_multipletests():
    rng = np.random.default_rng(5)
    p = np.concatenate([rng.uniform(size=500), rng.uniform(0, 1e-3, size=40), [0.0, 1.0, 0.5]])
    p[::7] = p[3]  # ties
    _, expected, _, _ = multipletests(p, method="fdr_bh")
    np.testing.assert_allclose(bh_qvalues(p), expected, rtol=1e-14)


def test_independent_series_are_flagged_at_most_at_the_nominal_rate():
    rng = np.random.default_rng(6)
    alpha, t_len, n_pairs, max_lag = 0.05, 150, 400, 3
    effects = rng.normal(size=(n_pairs, t_len))
    causes = rng.normal(size=(n_pairs, t_len))
    p = np.stack([granger_tests(effects[i], causes[i], max_lag)["p_value"][0] for i in range(n_pairs)])
    raw_rate = (p < alpha).mean()
    # unadjusted tests are calibrated: binomial sd at 1200 tests is ~0.0063 (lags are correlated)
    assert raw_rate <= alpha + 4 * np.sqrt(alpha * (1 - alpha) / p.size)
    assert (bh_qvalues(p.ravel()) <= alpha).mean() <= alpha


def test_looks_nonstationary_separates_random_walk_from_noise():
    rng = np.random.default_rng(8)
    walks = sum(looks_nonstationary(np.cumsum(rng.normal(size=300))) for _ in range(20))
    noise = sum(looks_nonstationary(rng.normal(size=300)) for _ in range(20))
    assert walks >= 17 and noise <= 3
    assert not looks_nonstationary(np.ones(50))


def _pairs_frame(effect, causes, statuses=None):
    n = len(causes)
    return pd.DataFrame(
        {
            "cause_series": [f"category=c{i}" for i in range(n)],
            "effect_series": "category=e",
            "pair_kind": "category_global",
            "cause_values": [np.asarray(c, float) for c in causes],
            "effect_values": [np.asarray(effect, float)] * n,
            "cause_status": statuses or ["ok"] * n,
            "effect_status": "ok",
        }
    )


def test_group_function_rows_statuses_and_differencing():
    rng = np.random.default_rng(9)
    walk = np.cumsum(rng.normal(size=120))
    causes = [np.cumsum(rng.normal(size=120)), rng.normal(size=120), rng.normal(size=119),
              np.r_[rng.normal(size=60), np.nan, rng.normal(size=59)], np.zeros(120)]
    statuses = ["ok", "ok", "missing_dates", "ok", "ok"]
    out = granger_group(_pairs_frame(walk, causes, statuses), max_lag=3, transform="diff",
                        min_nonzero_days=5)
    assert list(out.columns) == OUTPUT_COLUMNS and len(out) == 15
    by_cause = out.groupby("cause_series")["status"].agg(lambda s: sorted(set(s)))
    assert by_cause.to_dict() == {
        "category=c0": ["ok"], "category=c1": ["ok"], "category=c2": ["missing_dates"],
        "category=c3": ["missing_values"], "category=c4": ["too_sparse"],
    }
    assert set(out["transform"]) == {"diff"}
    bad = out[out["status"] != "ok"]
    assert bad[["f_stat", "p_value", "chi2_stat"]].isna().all().all()
    assert bad[["n_obs", "df_den", "df_num"]].isna().all().all()
    row = out[(out["cause_series"] == "category=c0") & (out["lag"] == 2)].iloc[0]
    ref = statsmodels_reference(np.diff(walk), np.diff(causes[0]), 2)[2]
    np.testing.assert_allclose([row.f_stat, row.p_value], ref[:2], rtol=RTOL)
    assert row.n_obs == 117 and row.df_den == ref[2]


def test_group_function_auto_differences_only_nonstationary_pairs():
    rng = np.random.default_rng(10)
    noise_effect = rng.normal(size=200)
    causes = [np.cumsum(rng.normal(size=200)), rng.normal(size=200)]
    out = granger_group(_pairs_frame(noise_effect, causes), max_lag=2, transform="auto")
    transforms = out.groupby("cause_series")["transform"].first().to_dict()
    assert transforms == {"category=c0": "diff", "category=c1": "none"}
    row = out[(out["cause_series"] == "category=c1") & (out["lag"] == 1)].iloc[0]
    ref = statsmodels_reference(noise_effect, causes[1], 1)[1]
    np.testing.assert_allclose(row.f_stat, ref[0], rtol=RTOL)


def test_finish_family_by_hand():
    tests = pd.DataFrame(
        {
            "cause_series": ["a", "a", "a", "b", "b", "c"],
            "effect_series": ["e"] * 6,
            "lag": [1, 2, 3, 1, 2, 1],
            "p_value": [0.02, 0.001, 0.001, 0.5, np.nan, np.nan],
            "status": ["ok", "ok", "ok", "ok", "too_short", "constant"],
        }
    )
    out = finish_family(tests, alpha=0.01)
    # family: 0.02, 0.001, 0.001, 0.5 (m = 4): q = 0.02*4/3, 0.002, 0.002, 0.5
    np.testing.assert_allclose(out["q_value"], [0.08 / 3, 0.002, 0.002, 0.5, np.nan, np.nan])
    assert out["significant"].tolist() == [False, True, True, False, False, False]
    # a: lags 2 and 3 tie at the smallest p -> lag 2; b: lag 1 (lag 2 is not ok); c: none
    assert out["best_lag"].tolist() == [False, True, False, True, False, False]
