"""The reach component: distinct buyers per item, log-scaled, from the features to the lists.

Expected values are counted here by hand or with pandas from the raw order tuples.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from stpipe import catalogue, tables
from stpipe.recommend.catalog import build_catalog
from udfs.candidates import chunk_of, reach_scores
from udfs.score import USER_COLUMNS, Catalog


def _catalog_inputs(buyers: list | None):
    emb = pd.DataFrame({"item_id": ["a", "b", "c"], "embedding": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]})
    cats = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["X"] * 3})
    item_time = pd.DataFrame({
        "item_id": ["a", "b", "c"], "popularity": [3.0, 2.0, 1.0], "trend": [1.0] * 3,
        "recent_orders": [1, 1, 1],
    })
    if buyers is not None:
        item_time["buyers"] = buyers
    region = pd.DataFrame({"region": ["R"] * 3, "item_id": ["a", "b", "c"], "lift": [1.0] * 3})
    return emb, cats, item_time, region


def test_catalog_reach_is_log_scaled_buyers_and_zero_without_counts():
    # a: 0 buyers, b: 3, c: 9 (the most): log1p(3) / log1p(9) = log 4 / log 10
    got = build_catalog(*_catalog_inputs([0, 3, 9]), causal=None).reach_score
    np.testing.assert_allclose(got, [0.0, np.log(4) / np.log(10), 1.0])
    # a table of older code (no buyers column) or nulls: reach 0 everywhere
    np.testing.assert_allclose(build_catalog(*_catalog_inputs(None), causal=None).reach_score, 0.0)
    np.testing.assert_allclose(
        build_catalog(*_catalog_inputs([None, None, None]), causal=None).reach_score, 0.0
    )


def _users() -> pd.DataFrame:
    return pd.DataFrame(
        [("s", "u", "R", False, ["a"], [1.0], [1], [1.0]), ("s", "v", "R", False, [], [], [], [])],
        columns=list(USER_COLUMNS),
    )


def test_reach_scores_are_the_same_for_every_user():
    emb, cats, item_time, region = _catalog_inputs([1, 1, 3])
    catalog = build_catalog(emb, cats, item_time, region, None)
    got = reach_scores(chunk_of(_users(), catalog), catalog)
    row = [np.log(2) / np.log(4), np.log(2) / np.log(4), 1.0]
    np.testing.assert_allclose(got, [row, row])
    bare = Catalog(**{**catalog.__dict__, "reach_score": None, "_index": None, "_by_category": None})
    np.testing.assert_allclose(reach_scores(chunk_of(_users(), bare), bare), 0.0)


# --- an older warehouse: item_time_features without buyers ----------------------------------

OLD_DATE = dt.date(2024, 2, 1)


@pytest.mark.slow  # the features stage end to end
def test_features_stage_adds_buyer_counts_to_an_older_item_time_table(spark, tmp_path):
    from stpipe.stages import FEATURES, run_stage
    from tests.test_recommend import RUN_DATE, job_settings, tiny_orders, tiny_warehouse_at

    wh = tiny_warehouse_at(spark, str(tmp_path / "warehouse"))
    settings = job_settings(wh)
    windows = settings.features.windows_days
    full = catalogue.ITEM_TIME_FEATURES.schema(windows)
    added = {"buyers", "repeat_buyers"}  # the table before either column existed
    old_schema = T.StructType([f for f in full.fields if f.name not in added])
    values = {
        "run_date": OLD_DATE, "source": "tiny", "item_id": "i00", "category": "c",
        "popularity": 1.0, "trend": 1.0, "last_order_days": 2.0,
        "hour_profile": [1 / 24] * 24, "weekday_profile": [1 / 7] * 7,
    }
    old_row = tuple(values.get(f.name, 0) for f in old_schema.fields)
    tables.write(spark.createDataFrame([old_row], old_schema), wh,
                 catalogue.ITEM_TIME_FEATURES.name, partition_by=["run_date"])

    run_stage(spark, settings, FEATURES)

    got = tables.read(spark, wh, catalogue.ITEM_TIME_FEATURES.name).toPandas()
    before = got[got["run_date"] == OLD_DATE]
    assert len(before) == 1 and before[sorted(added)].isna().all().all()
    assert before.iloc[0]["popularity"] == 1.0  # the old row is otherwise unchanged
    now = got[got["run_date"] == RUN_DATE].set_index("item_id")
    # distinct users per item before the run date (UTC, the features' time zone), and those of
    # them who bought it on two or more dates, by pandas
    raw = [(r[2], r[3], r[6].date()) for r in tiny_orders() if r[6].date() < RUN_DATE]
    days = pd.DataFrame(raw, columns=["user_id", "item_id", "day"]).groupby(["item_id", "user_id"]).day.nunique()
    assert now["buyers"].to_dict() == days.groupby(level="item_id").size().to_dict()
    assert now["repeat_buyers"].to_dict() == (days >= 2).groupby(level="item_id").sum().to_dict()
    assert now["buyers"].max() > 1 and now["repeat_buyers"].max() > 0
