"""The Granger stage on Spark: pair selection, guards, BH family, planted lead-lags, reruns."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests
from statsmodels.tsa.stattools import grangercausalitytests

from stpipe import catalogue, tables
from stpipe.adapters.synthetic import PLANTED_LEAD_LAGS, generate
from stpipe.config import Settings, replace
from stpipe.errors import ConfigError, InputError
from stpipe.granger import granger_stats, select_pairs
from stpipe.stages import GRANGER, run_stage

SERIES_SCHEMA = catalogue.SALES_SERIES.schema
RUN_DATE = dt.date(2024, 6, 29)
DAYS = 180


def series_frame(daily: dict[tuple[str | None, str], np.ndarray], run_date=RUN_DATE) -> pd.DataFrame:
    """sales_series rows from {(region or None, category): values over the DAYS before run_date}."""
    frames = []
    for (region, category), values in daily.items():
        n = len(values)
        dates = [run_date - dt.timedelta(days=n - i) for i in range(n)]
        sid = f"region={region}|category={category}" if region else f"category={category}"
        frames.append(
            pd.DataFrame(
                {
                    "run_date": run_date,
                    "series_id": sid,
                    "kind": "region_category" if region else "category",
                    "region": region,
                    "category": category,
                    "date": dates,
                    "value": np.asarray(values, dtype=float),
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def to_spark(spark, frame: pd.DataFrame):
    return spark.createDataFrame(frame.astype(object).where(frame.notna(), None), SERIES_SCHEMA)


@pytest.fixture(scope="module")
def synthetic_series() -> pd.DataFrame:
    """Units per (region, category) and per category per day from the synthetic generator."""
    lines, items = generate(rows=20_000, seed=42, start="2024-01-01", days=DAYS)
    lines = lines.merge(items[["item_id", "category"]], on="item_id")
    lines["day"] = lines["ts"].dt.date
    calendar = [RUN_DATE - dt.timedelta(days=DAYS - i) for i in range(DAYS)]
    daily = {}
    for (region, category), grp in lines.groupby(["region", "category"]):
        daily[(region, category)] = grp.groupby("day")["quantity"].sum().reindex(calendar, fill_value=0)
    for category, grp in lines.groupby("category"):
        daily[(None, category)] = grp.groupby("day")["quantity"].sum().reindex(calendar, fill_value=0)
    return series_frame({k: v.to_numpy() for k, v in daily.items()})


def test_select_pairs_by_hand(spark):
    volume = {("a", "x"): 9, ("a", "y"): 5, ("a", "z"): 1, ("b", "x"): 1, ("b", "y"): 2,
              ("b", "z"): 2, (None, "x"): 10, (None, "y"): 7, (None, "z"): 3}
    daily = {key: np.full(20, float(v)) for key, v in volume.items()}
    df = to_spark(spark, series_frame(daily))
    got = {tuple(r) for r in select_pairs(df, top_categories=2, top_regions=1).collect()}
    rc = lambda r, c: f"region={r}|category={c}"  # noqa: E731
    expected = {
        # region a: top 2 are x (9), y (5); region b: z (2) and y (2) tie -> y first by name, then z
        (rc("a", "x"), rc("a", "y"), "category_within_region"),
        (rc("a", "y"), rc("a", "x"), "category_within_region"),
        (rc("b", "y"), rc("b", "z"), "category_within_region"),
        (rc("b", "z"), rc("b", "y"), "category_within_region"),
        # top_regions=1: a single region per category, so no region pairs
        ("category=x", "category=y", "category_global"),
        ("category=y", "category=x", "category_global"),
    }
    assert got == expected
    got = {tuple(r) for r in select_pairs(df, top_categories=1, top_regions=2,
                                          pair_kinds=["region_within_category"]).collect()}
    assert got == {
        (rc(r1, c), rc(r2, c), "region_within_category")
        for c in "xyz" for r1, r2 in (("a", "b"), ("b", "a"))
    }


def test_guards_become_statuses_and_stay_out_of_the_bh_family(spark):
    rng = np.random.default_rng(1)
    n = 60
    daily = {
        ("r", "a"): rng.poisson(5, n),
        ("r", "b"): rng.poisson(5, n),
        ("r", "flat"): np.full(n, 4.0),
        ("r", "gappy"): rng.poisson(5, n),
    }
    frame = series_frame(daily)
    frame = frame.drop(frame.index[(frame["series_id"] == "region=r|category=gappy")][10])
    out = granger_stats(
        to_spark(spark, frame), run_date=RUN_DATE, max_lag=2, top_categories=10, top_regions=5,
        alpha=0.05, pair_kinds=["category_within_region"],
    ).toPandas()
    assert len(out) == 4 * 3 * 2
    status = out.groupby(["cause_category", "effect_category"])["status"].agg(set).to_dict()
    for (cause, effect), seen in status.items():
        if "gappy" in (cause, effect):
            assert seen == {"missing_dates"}
        elif "flat" in (cause, effect):
            assert seen == {"constant"}
        else:
            assert seen == {"ok"}
    bad = out[out["status"] != "ok"]
    assert bad[["f_stat", "p_value", "q_value", "chi2_stat", "n_obs"]].isna().all().all()
    assert not bad["significant"].any() and not bad["best_lag"].any()
    ok = out[out["status"] == "ok"]
    _, expected_q, _, _ = multipletests(ok["p_value"], method="fdr_bh")
    np.testing.assert_allclose(ok["q_value"], expected_q, rtol=1e-12)
    assert set(out["cause_region"]) == {"r"} and set(out["pair_kind"]) == {"category_within_region"}


def test_bad_input_and_settings_are_one_line_errors(spark):
    frame = series_frame({("r", "a"): np.arange(30.0)}).drop(columns=["kind"])
    df = spark.createDataFrame(frame)
    with pytest.raises(InputError, match="kind"):
        granger_stats(df, run_date=RUN_DATE, max_lag=2, top_categories=2, top_regions=2, alpha=0.05)
    with pytest.raises(ConfigError, match="granger.transform"):
        granger_stats(df, run_date=RUN_DATE, max_lag=2, top_categories=2, top_regions=2,
                      alpha=0.05, transform="log")


def sm_stats(effect: np.ndarray, cause: np.ndarray, lag: int) -> tuple[float, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f, p, _, _ = grangercausalitytests(np.column_stack([effect, cause]), [lag])[lag][0]["ssr_ftest"]
    return f, p


def test_job_finds_planted_lead_lags_matches_statsmodels_and_reruns_identically(
    spark, warehouse, synthetic_series
):
    tables.write(to_spark(spark, synthetic_series), warehouse, catalogue.SALES_SERIES.name,
                 replace={"run_date": RUN_DATE})
    settings = replace(Settings(), **{
        "storage.warehouse": warehouse, "run_date": RUN_DATE.isoformat(), "granger.max_lag": 4,
    })
    result = run_stage(spark, settings, GRANGER)
    first = tables.read(spark, warehouse, catalogue.GRANGER_STATS.name)
    assert [f.name for f in first.schema] == catalogue.GRANGER_STATS.columns()
    out = first.toPandas()
    assert result.rows_out == len(out) == (6 * 8 * 7 + 8 * 6 * 5 + 8 * 7) * 4
    assert set(out["status"]) == {"ok"} and (out["run_date"] == RUN_DATE).all()

    glob = out[out["pair_kind"] == "category_global"].set_index(["cause_category", "effect_category", "lag"])
    for cause, effect, lag in PLANTED_LEAD_LAGS:
        assert glob.loc[(cause, effect, lag), "significant"]
        best = glob.loc[(cause, effect)]
        assert best.loc[best["best_lag"]].index.tolist() == [best["p_value"].idxmin()]

    # every statistic equals statsmodels on the same series
    values = synthetic_series.pivot(index="date", columns="series_id", values="value")
    sample = out.sort_values(["cause_series", "effect_series", "lag"]).iloc[::97]
    for row in sample.itertuples():
        f, p = sm_stats(values[row.effect_series].to_numpy(), values[row.cause_series].to_numpy(), row.lag)
        np.testing.assert_allclose([row.f_stat, row.p_value], [f, p], rtol=1e-9)
        assert row.df_den == row.n_obs - 2 * row.lag - 1 and row.n_obs == DAYS - row.lag

    # BH across the whole run, and exactly one best lag per pair (smallest p)
    _, q, _, _ = multipletests(out["p_value"], method="fdr_bh")
    np.testing.assert_allclose(out["q_value"], q, rtol=1e-12)
    assert (out["significant"] == (out["q_value"] <= 0.05)).all()
    per_pair = out.groupby(["cause_series", "effect_series"])
    assert (per_pair["best_lag"].sum() == 1).all()
    best_p = out[out["best_lag"]].set_index(["cause_series", "effect_series"])["p_value"]
    pd.testing.assert_series_equal(best_p.sort_index(), per_pair["p_value"].min().sort_index(),
                                   check_names=False)
    assert out.loc[out["pair_kind"] == "category_global", "cause_region"].isna().all()

    run_stage(spark, settings, GRANGER)  # rerun of the same date replaces its slice
    second = tables.read(spark, warehouse, catalogue.GRANGER_STATS.name).toPandas()
    key = ["cause_series", "effect_series", "lag"]
    pd.testing.assert_frame_equal(
        out.sort_values(key).reset_index(drop=True), second.sort_values(key).reset_index(drop=True)
    )


def test_job_without_series_for_the_date_says_so(spark, warehouse, synthetic_series):
    small = synthetic_series[synthetic_series["series_id"].str.startswith("category=")]
    tables.write(to_spark(spark, small), warehouse, catalogue.SALES_SERIES.name, replace={"run_date": RUN_DATE})
    settings = replace(Settings(), **{"storage.warehouse": warehouse, "run_date": "2024-07-01"})
    with pytest.raises(InputError, match="no rows for run_date 2024-07-01"):
        run_stage(spark, settings, GRANGER)
