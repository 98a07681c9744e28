"""The embed stage: item texts, recency-weighted user embeddings, the job run twice."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest

from stpipe import catalogue, tables
from stpipe.config import Settings, replace
from stpipe.errors import ConfigError
from stpipe.recommend.embeddings import user_embeddings
from stpipe.recommend.signals import item_texts
from stpipe.schema import ORDERS_CLEAN

RUN_DATE = dt.date(2024, 3, 1)
ITEMS = [
    ("p1", "blue ceramic mug", "kitchen", None, "t"),
    ("p2", "garden hose 20m", "garden", "expandable, lightweight", "t"),
    ("p3", "", "toys", "", "t"),
    ("p4", "paperback novel", "books", "a " * 400, "t"),
]
ITEM_SCHEMA = "item_id string, title string, category string, description string, source string"


def order(user: str, item: str, ts: dt.datetime, n: int = 0) -> tuple:
    return (f"{user}-{item}-{n}", 1, user, item, 1, 1.0, ts, "R", None, None, None, "t", ts.date())


def test_item_texts_template_and_nulls(spark):
    items = spark.createDataFrame(ITEMS[:2], ITEM_SCHEMA)
    got = dict(item_texts(items, template="{title} | {category}: {description}").collect())
    assert got == {"p1": "blue ceramic mug | kitchen:", "p2": "garden hose 20m | garden: expandable, lightweight"}
    with pytest.raises(ConfigError, match="unknown field \\{price\\}"):
        item_texts(items, template="{title} {price}")


def test_user_embedding_is_decayed_weighted_mean(spark):
    vectors = spark.createDataFrame(
        [("p1", [1.0, 0.0]), ("p2", [0.0, 1.0])], "item_id string, embedding array<float>"
    )
    orders = spark.createDataFrame(
        [
            order("u", "p1", dt.datetime(2024, 1, 31)),  # 30 days before: weight 1/2
            order("u", "p2", dt.datetime(2024, 2, 29)),  # 1 day before: 2^(-1/30)
            order("u", "p2", dt.datetime(2024, 3, 1, 9)),  # on the run date: not history
            order("v", "p1", dt.datetime(2024, 2, 1), 1),
            order("v", "p1", dt.datetime(2024, 2, 2), 2),
        ],
        ORDERS_CLEAN,
    )
    rows = {
        r["user_id"]: r
        for r in user_embeddings(
            orders, vectors, run_date=RUN_DATE, half_life_days=30.0, timezone="UTC", model="m"
        ).collect()
    }
    want = np.array([0.5, 2 ** (-1 / 30)])
    np.testing.assert_allclose(rows["u"]["embedding"], want / np.linalg.norm(want), rtol=1e-6)
    np.testing.assert_allclose(rows["v"]["embedding"], [1.0, 0.0])
    assert rows["u"]["n_items"] == 2 and rows["u"]["run_date"] == RUN_DATE


def test_embed_job_twice(spark, warehouse):
    from stpipe.stages import EMBED, run_stage
    from udfs.embed import Embedder

    tables.write(spark.createDataFrame(ITEMS, ITEM_SCHEMA), warehouse, catalogue.ITEMS.name)
    orders = [order("u1", "p1", dt.datetime(2024, 2, 1)), order("u2", "p4", dt.datetime(2024, 2, 3))]
    tables.write(spark.createDataFrame(orders, ORDERS_CLEAN), warehouse, catalogue.ORDERS_CLEAN.name)
    # two texts per task: the four items are embedded by two tasks (two Python workers)
    settings = replace(Settings(), **{
        "storage.warehouse": warehouse, "run_date": "2024-03-01", "model.arrow_batch_rows": 3,
        "model.embed_rows_per_task": 2,
    })
    run_stage(spark, settings, EMBED)
    first = tables.read(spark, warehouse, catalogue.ITEM_EMBEDDINGS.name).orderBy("item_id").toPandas()
    run_stage(spark, settings, EMBED)
    second = tables.read(spark, warehouse, catalogue.ITEM_EMBEDDINGS.name).orderBy("item_id").toPandas()
    users = tables.read(spark, warehouse, catalogue.USER_EMBEDDINGS.name).orderBy("user_id").toPandas()

    assert first["item_id"].tolist() == ["p1", "p2", "p3", "p4"]
    assert first["text"].tolist()[:3] == ["blue ceramic mug. kitchen.", "garden hose 20m. garden. expandable, lightweight", ". toys."]
    assert (first["model"] == "all-MiniLM-L6-v2").all()
    want = Embedder(device="cpu").encode(first["text"].tolist())
    got = np.stack(first["embedding"].to_numpy())
    assert np.min((got * want).sum(1)) >= 0.9999
    np.testing.assert_array_equal(np.stack(second["embedding"].to_numpy()), got)
    assert users["user_id"].tolist() == ["u1", "u2"]  # one slice, not two after the rerun
    np.testing.assert_allclose(np.stack(users["embedding"].to_numpy()), got[[0, 3]], atol=1e-6)


def test_texts_to_embed_are_spread_over_the_cores(spark):
    from stpipe.recommend.embeddings import spread_over_tasks

    names = [f"t{i:03d}" for i in range(250)]
    texts = spark.createDataFrame([(t,) for t in reversed(names)], "text string")
    assert spark.sparkContext.defaultParallelism == 2  # the tests' session: local[2]

    def parts(rows_per_task: int) -> list[list[str]]:
        spread = spread_over_tasks(texts, rows_per_task)
        return spread.rdd.glom().map(lambda rows: [r["text"] for r in rows]).collect()

    for rows_per_task, tasks in ((100, 2), (250, 1), (1000, 1), (1, 2)):
        got = parts(rows_per_task)
        assert len(got) == tasks, rows_per_task  # ceil(250 / rows_per_task), at most 2
        assert sorted(t for p in got for t in p) == names  # nothing lost, nothing twice
        assert all(p == sorted(p) and p for p in got)  # each task's texts in order
    with pytest.raises(ConfigError, match=r"model\.embed_rows_per_task: must be 1 or more, got 0"):
        replace(Settings(), **{"model.embed_rows_per_task": 0})


def test_pooling_carries_a_user_across_arrow_batches():
    import pandas as pd

    from stpipe.recommend.embeddings import pool_sorted

    rng = np.random.default_rng(0)
    users = ["a"] * 3 + ["b"] * 5 + ["c"] + ["d"] * 2
    items = [f"i{k}" for k in range(len(users))]
    vectors = rng.normal(size=(len(users), 4)).astype(np.float32)
    weights = rng.uniform(0.1, 1.0, len(users))
    # the same id in two sources is two users: "d" of shop y follows "d" of shop x
    sources = ["x"] * len(users) + ["y"]
    users = users + ["d"]
    items = items + ["i99"]
    vectors = np.vstack([vectors, rng.normal(size=(1, 4)).astype(np.float32)])
    weights = np.r_[weights, 0.5]
    rows = pd.DataFrame(
        {"source": sources, "user_id": users, "item_id": items, "weight": weights,
         "embedding": list(vectors)}
    )
    # batches cut inside b (twice) and right after c; one empty batch
    cuts = [0, 4, 6, 9, 9, len(users)]
    batches = [rows.iloc[a:b].reset_index(drop=True) for a, b in zip(cuts, cuts[1:], strict=False)]
    got = pd.concat(list(pool_sorted(iter(batches))), ignore_index=True)
    assert got["user_id"].tolist() == ["a", "b", "c", "d", "d"]
    assert got["source"].tolist() == ["x"] * 4 + ["y"]
    assert got["n_items"].tolist() == [3, 5, 1, 2, 1]
    for source, user, embedding in zip(got["source"], got["user_id"], got["embedding"], strict=True):
        mine = np.array([(s, u) == (source, user) for s, u in zip(sources, users, strict=True)])
        want = (weights[mine, None] * vectors[mine].astype(np.float64)).sum(0)
        np.testing.assert_allclose(embedding, want / np.linalg.norm(want), rtol=1e-6)
