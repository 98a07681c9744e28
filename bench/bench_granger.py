"""Granger tests: this job's batched core and its Spark grouped-UDF path vs a statsmodels loop.

The same (effect, cause) pairs go through ``grangercausalitytests`` one call per pair, through
``udfs.granger_core.granger_tests_many`` (all pairs in one call; the core), through
``udfs.granger_core.granger_tests`` (one call per effect series, for comparison) and through
Spark: ``stpipe.granger.apply_granger_series`` on pair names plus one
row per series (the stage's form), effects in hash buckets, one pandas call per bucket. Pairs:
real Olist daily series (orders' item lines per customer state x product category, 2017-01-01
.. 2018-08-31, categories -> categories within each of the top states) plus synthetic AR(1)
series with planted lags. Reports (pairs x lags) per second, the ratios, the load average and
the largest relative difference from statsmodels.
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from stpipe.granger import apply_granger_series
from udfs.granger_core import granger_tests, granger_tests_many

ROOT = Path(__file__).resolve().parent.parent
OLIST_DIR = ROOT.parent / "shared" / "datasets" / "olist_brazilian_ecommerce"
FIRST_DAY, LAST_DAY = "2017-01-01", "2018-08-31"
MAX_LAG = 7
TOP_STATES, TOP_CATEGORIES = 5, 10  # 5 x 10 x 9 = 450 real pairs
SYNTHETIC_GROUPS, SYNTHETIC_PER_GROUP = 6, 10  # 6 x 10 x 9 = 540 synthetic pairs
SPARK_SCALE = 10  # the Spark path also runs on this many copies of the pairs (rate only)
SPARK_PARTITIONS = 4
SPARK_BUCKETS = (4, 8)  # hash buckets of effect series (apply_granger_series' ``buckets``)


def olist_series(olist_dir: Path = OLIST_DIR) -> dict[str, np.ndarray]:
    """Item lines per day for 'region=<state>|category=<category>', zero-filled, with pandas."""

    def read(name: str, cols: list[str]) -> pd.DataFrame:
        return pd.read_csv(olist_dir / f"olist_{name}_dataset.csv.gz", dtype=str, usecols=cols)

    lines = (
        read("order_items", ["order_id", "product_id"])
        .merge(read("orders", ["order_id", "customer_id", "order_purchase_timestamp"]), on="order_id")
        .merge(read("customers", ["customer_id", "customer_state"]), on="customer_id")
        .merge(read("products", ["product_id", "product_category_name"]), on="product_id")
        .dropna(subset=["product_category_name"])
    )
    days = pd.date_range(FIRST_DAY, LAST_DAY, freq="D")
    lines["date"] = pd.to_datetime(lines["order_purchase_timestamp"]).dt.normalize()
    lines = lines[lines["date"].isin(days)]
    states = lines["customer_state"].value_counts().index[:TOP_STATES]
    out: dict[str, np.ndarray] = {}
    for state in sorted(states):
        in_state = lines[lines["customer_state"] == state]
        top = in_state["product_category_name"].value_counts().index[:TOP_CATEGORIES]
        counts = (
            in_state[in_state["product_category_name"].isin(top)]
            .groupby(["product_category_name", "date"])
            .size()
            .unstack(0, fill_value=0)
            .reindex(days, fill_value=0)
        )
        for category in sorted(counts.columns):
            out[f"region={state}|category={category}"] = counts[category].to_numpy(dtype=float)
    return out


def synthetic_series(n_days: int, seed: int = 0) -> dict[str, np.ndarray]:
    """AR(1) series in groups; within a group, series j leads series j+1 by (j % 3) + 1 days."""
    rng = np.random.default_rng(seed)
    out = {}
    for g in range(SYNTHETIC_GROUPS):
        prev = None
        for j in range(SYNTHETIC_PER_GROUP):
            eps = rng.normal(size=n_days)
            x = np.zeros(n_days)
            for t in range(1, n_days):
                x[t] = 0.5 * x[t - 1] + eps[t]
            if prev is not None and j % 2:
                lag = (j % 3) + 1
                x[lag:] += 0.3 * prev[:-lag]
            out[f"region=syn{g}|category=c{j}"] = 100.0 + x
            prev = x
    return out


def within_group_pairs(series: dict[str, np.ndarray]) -> list[tuple[str, str]]:
    """(cause, effect) for every ordered pair sharing the 'region=' part of the id."""
    groups: dict[str, list[str]] = {}
    for sid in series:
        groups.setdefault(sid.split("|")[0], []).append(sid)
    return [(c, e) for ids in groups.values() for e in ids for c in ids if c != e]


def run_statsmodels(series: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> np.ndarray:
    """(pairs, lags, 2): F and p-value of the ssr F test, one grangercausalitytests per pair."""
    from statsmodels.tsa.stattools import grangercausalitytests

    out = np.empty((len(pairs), MAX_LAG, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, (cause, effect) in enumerate(pairs):
            res = grangercausalitytests(np.column_stack([series[effect], series[cause]]), MAX_LAG)
            for lag in range(1, MAX_LAG + 1):
                out[i, lag - 1] = res[lag][0]["ssr_ftest"][:2]
    return out


def run_core(series: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> np.ndarray:
    """The same numbers from the batched core: every pair in one ``granger_tests_many`` call
    (the arrays are stacked inside the timed function)."""
    names = sorted({e for _, e in pairs})
    position = {name: i for i, name in enumerate(names)}
    res = granger_tests_many(
        np.stack([series[name] for name in names]),
        np.stack([series[c] for c, _ in pairs]),
        np.array([position[e] for _, e in pairs]),
        MAX_LAG,
    )
    return np.stack([res["f_stat"], res["p_value"]], axis=-1)


def run_core_per_effect(series: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> np.ndarray:
    """The same numbers from the core called once per effect series (``granger_tests``)."""
    out = np.empty((len(pairs), MAX_LAG, 2))
    by_effect: dict[str, list[int]] = {}
    for i, (_, effect) in enumerate(pairs):
        by_effect.setdefault(effect, []).append(i)
    for effect, rows in by_effect.items():
        causes = np.stack([series[pairs[i][0]] for i in rows])
        res = granger_tests(series[effect], causes, MAX_LAG)
        out[rows, :, 0] = res["f_stat"]
        out[rows, :, 1] = res["p_value"]
    return out


def best_of(fn, repeats: int, clock=time.perf_counter) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        t0 = clock()
        value = fn()
        best = min(best, clock() - t0)
    return best, value


def max_rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.nanmax(np.abs(got - ref) / np.abs(ref)))


def spark_path(series: dict[str, np.ndarray], pairs: list[tuple[str, str]], copies: int) -> dict:
    """Time ``apply_granger_series`` (the stage's cogrouped pandas UDF) on cached pair names and
    one row per series, ``copies`` x the pairs, for each number of hash buckets in SPARK_BUCKETS
    and the shuffle partitions ("series"): {(copies, buckets): seconds}."""
    from stpipe.config import SparkSettings
    from stpipe.session import build_session

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = build_session(
        SparkSettings(master="local[2]", shuffle_partitions=SPARK_PARTITIONS, log_level="ERROR",
                      conf={"spark.ui.enabled": "false"}),
        app_name="bench-granger",
    )
    try:
        timings: dict = {}
        results = series_results = None
        for n_copies in (1, copies):
            frame = pd.DataFrame(
                {
                    "cause_series": [c for _, (c, _) in _copies(pairs, n_copies)],
                    "effect_series": [f"{e}#{k}" for k, (_, e) in _copies(pairs, n_copies)],
                    "pair_kind": "category_within_region",
                    "cause_values": [series[c].tolist() for _, (c, _) in _copies(pairs, n_copies)],
                    "effect_values": [series[e].tolist() for _, (_, e) in _copies(pairs, n_copies)],
                    "cause_status": "ok",
                    "effect_status": "ok",
                }
            )
            # the stage's own form: pairs and one row per series (cause values joined in Spark,
            # each effect's values moved once); join included in the timing
            arrays = spark.createDataFrame(
                [(name, series[name].tolist(), "ok") for name in sorted(series)]
                + [(f"{e}#{k}", series[e].tolist(), "ok")
                   for k in range(n_copies) for e in sorted({e for _, e in pairs})],
                "series_id string, values array<double>, series_status string",
            ).repartition(SPARK_PARTITIONS).cache()
            pair_names = spark.createDataFrame(
                frame[["cause_series", "effect_series", "pair_kind"]],
                "cause_series string, effect_series string, pair_kind string",
            ).cache()
            arrays.count(), pair_names.count()
            for buckets in (*SPARK_BUCKETS, None):  # None: the shuffle partitions (the stage)
                tests = apply_granger_series(pair_names, arrays, max_lag=MAX_LAG, buckets=buckets)
                tests.write.format("noop").mode("overwrite").save()  # warm the Python workers
                seconds, _ = best_of(
                    lambda t=tests: t.write.format("noop").mode("overwrite").save(), 2
                )
                timings[n_copies, "series" if buckets is None else buckets] = seconds
                if n_copies == 1 and buckets is None:
                    series_results = tests.toPandas()
                elif n_copies == 1 and results is None:
                    results = tests.toPandas()
            arrays.unpersist(), pair_names.unpersist()
        return {"seconds": timings, "results": results, "series_results": series_results}
    finally:
        spark.stop()


def _copies(pairs, n):
    return [(k, p) for k in range(n) for p in pairs]


def main(out_dir: Path) -> dict:
    real = olist_series()
    n_days = len(next(iter(real.values())))
    synthetic = synthetic_series(n_days)
    series = {**real, **synthetic}
    pairs = within_group_pairs(real) + within_group_pairs(synthetic)
    n_tests = len(pairs) * MAX_LAG
    load_before = os.getloadavg()

    cpu = time.process_time  # this process only: a fairer clock on a shared machine
    sm_cpu, _ = best_of(lambda: run_statsmodels(series, pairs[::10]), 1, cpu)
    sm_seconds, reference = best_of(lambda: run_statsmodels(series, pairs), 1)
    core_cpu, _ = best_of(lambda: run_core(series, pairs), 5, cpu)
    core_seconds, core = best_of(lambda: run_core(series, pairs), 5)
    per_effect_seconds, per_effect = best_of(lambda: run_core_per_effect(series, pairs), 3)
    spark = spark_path(series, pairs, SPARK_SCALE)
    sp = spark["results"].set_index(["cause_series", "effect_series", "lag"]).sort_index()
    keys = [(c, f"{e}#0", lag) for c, e in pairs for lag in range(1, MAX_LAG + 1)]
    spark_values = sp.loc[keys, ["f_stat", "p_value"]].to_numpy().reshape(len(pairs), MAX_LAG, 2)
    sp = spark["series_results"].set_index(["cause_series", "effect_series", "lag"]).sort_index()
    series_values = sp.loc[keys, ["f_stat", "p_value"]].to_numpy().reshape(len(pairs), MAX_LAG, 2)

    rate = lambda tests, seconds: round(tests / seconds, 1)  # noqa: E731
    sm_rate = rate(n_tests, sm_seconds)
    sm_cpu_rate = rate(len(pairs[::10]) * MAX_LAG, sm_cpu)
    n_real = len(within_group_pairs(real))
    out = {
        "pairs": len(pairs),
        "pairs_olist": n_real,
        "pairs_synthetic": len(pairs) - n_real,
        "series_days": n_days,
        "lags": MAX_LAG,
        "tests": n_tests,
        "statsmodels_seconds": round(sm_seconds, 3),
        "statsmodels_tests_per_s": sm_rate,
        "core_seconds": round(core_seconds, 4),
        "core_tests_per_s": rate(n_tests, core_seconds),
        "core_ratio": round(sm_seconds / core_seconds, 1),
        "statsmodels_cpu_tests_per_s": sm_cpu_rate,
        "core_cpu_tests_per_s": rate(n_tests, core_cpu),
        "core_cpu_ratio": round(rate(n_tests, core_cpu) / sm_cpu_rate, 1),
        "core_per_effect_seconds": round(per_effect_seconds, 4),
        "core_per_effect_ratio": round(sm_seconds / per_effect_seconds, 1),
    }
    for (n_copies, buckets), seconds in sorted(spark["seconds"].items(), key=str):
        variant = "series" if buckets == "series" else f"b{buckets}"
        name = f"spark_{variant}" if n_copies == 1 else f"spark_x{n_copies}_{variant}"
        spark_rate = rate(n_tests * n_copies, seconds)
        out[f"{name}_seconds"] = round(seconds, 3)
        out[f"{name}_tests_per_s"] = spark_rate
        out[f"{name}_ratio"] = round(spark_rate / sm_rate, 1)
    out.update({
        "max_rel_err_f_core": max_rel_err(core[..., 0], reference[..., 0]),
        "max_rel_err_p_core": max_rel_err(core[..., 1], reference[..., 1]),
        "max_rel_err_f_core_per_effect": max_rel_err(per_effect[..., 0], reference[..., 0]),
        "max_rel_err_f_spark": max_rel_err(spark_values[..., 0], reference[..., 0]),
        "max_rel_err_p_spark": max_rel_err(spark_values[..., 1], reference[..., 1]),
        "max_rel_err_f_spark_series": max_rel_err(series_values[..., 0], reference[..., 0]),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "note": "tests = pairs x lags; ratios on wall time of the same pairs in this run (cpu: "
        "process CPU time, statsmodels on every 10th pair); statsmodels: one "
        "grangercausalitytests call per pair; core: one granger_tests_many call for all pairs; "
        "spark: apply_granger_series (the stage's form: cached pair names and one row per series, "
        "cause values joined in Spark, join included) over n hash buckets of effect series "
        "(b<n>) or the shuffle partitions (series), "
        f"Python workers warm, local[2], {SPARK_PARTITIONS} shuffle partitions",
    })
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(main(Path(__file__).resolve().parent / "results"), indent=2))
