"""SharedWork: the evaluation's recommender calls compute each date's features, users' histories
and catalogue once, and get exactly the lists they would get alone."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from stpipe import catalogue, tables
from stpipe.recommend import RecommendOptions, pipeline, recommend, signals, train_fusion
from stpipe.recommend.shared import SharedWork
from tests.test_recommend import RUN_DATE, tiny_warehouse_at
from udfs.score import FEATURES

AS_OF = dt.date(2024, 2, 1)


def test_each_date_is_computed_once_and_a_cooc_catalogue_serves_both(spark):
    work = SharedWork()
    calls = []

    def compute(tag):
        def run():
            calls.append(tag)
            return tag
        return run

    assert work.catalog(AS_OF, RUN_DATE, False, compute("plain")) == "plain"
    assert work.catalog(AS_OF, RUN_DATE, False, compute("again")) == "plain"
    assert work.catalog(AS_OF, RUN_DATE, True, compute("cooc")) == "cooc"  # needs the matrix
    assert work.catalog(AS_OF, RUN_DATE, False, compute("again")) == "cooc"  # the fuller one
    assert work.catalog(RUN_DATE, RUN_DATE, True, compute("other date")) == "other date"
    assert calls == ["plain", "cooc", "other date"]

    frame = spark.range(3)
    got = work.features(AS_OF, lambda: {catalogue.ITEMS: frame})
    assert got[catalogue.ITEMS].is_cached
    assert work.features(AS_OF, lambda: {}) is got
    histories = work.histories(AS_OF, lambda: spark.range(2))
    assert histories.is_cached and work.histories(AS_OF, lambda: spark.range(5)) is histories
    work.close()
    assert not got[catalogue.ITEMS].is_cached and not histories.is_cached
    assert work.catalog(AS_OF, RUN_DATE, True, compute("after close")) == "after close"


def _tiny_inputs(spark, tmp_path) -> dict:
    """The recommender's inputs read from the tiny shop of tests/test_recommend.py."""
    wh = tiny_warehouse_at(spark, str(tmp_path / "warehouse"))
    return {
        "orders": tables.read(spark, wh, catalogue.ORDERS_CLEAN.name),
        "items": tables.read(spark, wh, catalogue.ITEMS.name),
        "item_embeddings": tables.read(spark, wh, catalogue.ITEM_EMBEDDINGS.name),
        "granger_stats": None,
    }


def test_shared_calls_equal_separate_ones_with_fewer_catalogues(spark, tmp_path, monkeypatch):
    inputs = _tiny_inputs(spark, tmp_path)
    opts = RecommendOptions(k=5, validation_days=20)
    built = []
    real = pipeline.load_catalog

    def counting(*args, **kw):
        built.append((kw["as_of"], kw["with_cooc"]))
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "load_catalog", counting)
    histories, real_histories = [], signals.user_histories

    def counting_histories(*args, **kw):
        histories.append(1)
        return real_histories(*args, **kw)

    monkeypatch.setattr(signals, "user_histories", counting_histories)
    component_sets = [
        {"bert", "time", "space", "history", "repeat", "reach", "rebuy", "cooc"},
        {"time", "space", "history", "repeat"},  # no cooc: served by the catalogue with it
    ]
    key = ["user_id", "region", "rank"]

    def lists(**kw):
        return [
            recommend(spark, **inputs, run_date=RUN_DATE, components=c, opts=opts, **kw)
            .toPandas().sort_values(key).reset_index(drop=True)
            for c in component_sets
        ]

    alone = lists()
    assert len(built) == 2 * len(component_sets)  # fusion training date and run date, each call
    assert len(histories) == 2 * len(component_sets)  # the users' histories likewise
    built.clear()
    histories.clear()
    work = SharedWork()
    try:
        together = lists(shared=work)
    finally:
        work.close()
    train_date = RUN_DATE - dt.timedelta(days=20)
    assert built == [(train_date, True), (RUN_DATE, True)]  # the first call's, reused after
    assert len(histories) == 2  # one per date
    for a, b in zip(alone, together, strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert not alone[0].equals(alone[1])  # the component sets do give different lists


def test_every_ablation_keeps_its_own_sources_rows_of_one_shared_set(spark, tmp_path, monkeypatch):
    inputs = _tiny_inputs(spark, tmp_path)
    # fit on the tiny shop's few purchases (the events-per-feature rule would give defaults)
    opts = RecommendOptions(k=5, validation_days=20, fusion_min_events_per_feature=0.0)
    computed = []
    real = pipeline._training_rows

    def counting(*args, **kw):
        computed.append(kw["sources_of"])
        return real(*args, **kw)

    monkeypatch.setattr(pipeline, "_training_rows", counting)
    everything = frozenset(FEATURES)
    component_sets = [
        everything - {"bert"},  # no neighbour candidates (first: the shared rows have them all)
        everything,
        everything - {"repeat", "reach", "rebuy"},  # the same candidate sources as everything
        everything - {"cooc"},  # no co-purchase candidates, nor a catalogue matrix alone
        everything - {"time", "space", "history"},  # neither popular nor history candidates
    ]
    alone = [train_fusion(spark, **inputs, run_date=RUN_DATE, components=c, opts=opts)[0] for c in component_sets]
    assert computed == component_sets
    computed.clear()
    work = SharedWork()
    try:
        together = [
            train_fusion(spark, **inputs, run_date=RUN_DATE, components=c, opts=opts, shared=work)[0]
            for c in component_sets
        ]
    finally:
        work.close()
    assert computed == [everything]  # one set of rows, every source on
    for a, b in zip(alone, together, strict=True):
        assert a == b  # weights, row and positive counts, log-loss: the same fit
    assert all(fit.status == "fitted" for fit in alone)
    # the sources do change the rows (so the shared set is filtered, not used whole): in the tiny
    # shop the other sources propose every neighbour and co-purchase candidate too, but without
    # the popular and history sources fewer candidates remain
    assert alone[4].train_rows < alone[1].train_rows == alone[2].train_rows
    assert alone[1].weights != alone[2].weights


class _Frame:
    """Stands in for an item_embeddings DataFrame: select(...).toPandas() and identity."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.pdf = pd.DataFrame({"item_id": list(vectors), "embedding": list(vectors.values())})

    def select(self, *_):
        return self

    def toPandas(self):  # noqa: N802 (Spark's name)
        return self.pdf


def test_a_second_encoder_gets_the_same_catalogue_with_its_own_vectors_and_rows():
    import numpy as np
    import pytest

    from stpipe.errors import InputError
    from tests.test_score import catalog as hand_catalog

    work = SharedWork()
    tuned = _Frame({})  # the catalogue's own vectors come from compute()
    base = _Frame({"d": [0.0, 1.0], "c": [1.0, 0.0], "b": [0.6, 0.8], "a": [-1.0, 0.0]})
    built = []

    def compute():
        built.append(1)
        return hand_catalog()

    first = work.catalog(AS_OF, RUN_DATE, True, compute, embeddings=tuned)
    other = work.catalog(AS_OF, RUN_DATE, True, compute, embeddings=base)
    assert built == [1]  # one catalogue (popularity, EASE, ...) for both encoders
    np.testing.assert_allclose(other.embeddings, [[-1, 0], [0.6, 0.8], [1, 0], [0, 1]], rtol=1e-6)  # a b c d
    np.testing.assert_array_equal(first.embeddings, hand_catalog().embeddings)
    assert other.cooc is first.cooc and list(other.item_ids) == list(first.item_ids)
    assert work.catalog(AS_OF, RUN_DATE, True, compute, embeddings=tuned) is first
    assert work.encoder(tuned) != work.encoder(base)  # the fusion's rows are keyed by encoder
    work.catalog(RUN_DATE, RUN_DATE, True, compute, embeddings=tuned)
    short = _Frame({"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 0.0]})  # no d
    with pytest.raises(InputError, match="1 catalogue items have no vector"):
        work.catalog(RUN_DATE, RUN_DATE, True, compute, embeddings=short)
