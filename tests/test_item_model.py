"""The learned item x item model (EASE) of the "bought together" component, against hand counts
and an independent ridge regression per item; the fallback to Jaccard; no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stpipe.config import load_settings
from stpipe.errors import ConfigError
from stpipe.recommend import item_model
from stpipe.recommend.item_model import ease_neighbours, gram_matrix, item_neighbours, top_positive
from stpipe.recommend.signals import history_before, item_cooccurrence
from stpipe.schema import ORDERS_CLEAN
from tests.test_ease import ridge_per_column
from tests.test_recommend_cooc import AS_OF, cooc_orders

# Before AS_OF: u1 bought a, b; u2 a, b, c; u3 b, c (u4's and the late lines do not count).
X = np.array([[1, 1, 0], [1, 1, 1], [0, 1, 1]], dtype=float)
ITEMS = ["a", "b", "c"]


def lines(spark):
    return history_before(spark.createDataFrame(cooc_orders(), ORDERS_CLEAN), as_of=AS_OF, timezone="UTC")


def test_the_gram_counts_distinct_buyers_of_each_pair_before_the_as_of_date(spark):
    # e.g. (a, a) 2 buyers, (a, c) 1, (b, b) 3
    np.testing.assert_array_equal(gram_matrix(lines(spark), ITEMS), X.T @ X)
    # the order of the items sets rows and columns; an item left out is ignored
    np.testing.assert_array_equal(gram_matrix(lines(spark), ["c", "a"]), [[2, 1], [1, 2]])


@pytest.mark.parametrize("scale", [0.3, 2.0])
def test_ease_rows_are_the_positive_ridge_weights_of_each_bought_item(spark, scale):
    gram = gram_matrix(lines(spark), ITEMS)
    l2 = scale * 7.0 / 3.0  # mean buyers per item: (2 + 3 + 2) / 3
    b = ridge_per_column(X, l2)  # b[j, k]: weight of bought item j in predicting item k
    expected = {(ITEMS[j], ITEMS[k]): b[j, k] for j in range(3) for k in range(3) if j != k and b[j, k] > 0}
    got = ease_neighbours(gram, ITEMS, l2_scale=scale, neighbours=2)
    assert set(zip(got.item_id, got.other_id, strict=True)) == set(expected)
    for row in got.itertuples():
        assert row.similarity == pytest.approx(expected[(row.item_id, row.other_id)], abs=1e-9)
    # one kept per item: each item's largest positive weight only
    top1 = ease_neighbours(gram, ITEMS, l2_scale=scale, neighbours=1)
    for item, part in got.groupby("item_id"):
        best = part.sort_values(["similarity", "other_id"], ascending=[False, True]).iloc[0]
        kept = top1[top1.item_id == item]
        assert kept.other_id.tolist() == [best.other_id]


def test_a_catalogue_over_the_bound_falls_back_to_jaccard(spark, caplog):
    history = lines(spark)
    kw = dict(half_life_days=10.0, cooc_neighbours=5, l2_scale=1.0, ease_neighbours_kept=5)
    with caplog.at_level("WARNING", logger="stpipe.recommend"):
        got = item_neighbours(history, model="ease", max_items=2, **kw)
    jaccard = item_cooccurrence(history, half_life_days=10.0, neighbours=5).toPandas()
    key = ["item_id", "other_id"]
    assert got.sort_values(key).reset_index(drop=True).equals(jaccard.sort_values(key).reset_index(drop=True))
    assert any("3 items exceed recommend.ease_max_items (2" in r.getMessage() for r in caplog.records)
    ease = item_neighbours(history, model="ease", max_items=3, **kw)
    assert not ease.sort_values(key).reset_index(drop=True).equals(jaccard.sort_values(key).reset_index(drop=True))


def test_an_unknown_item_model_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="recommend.item_model: unknown model 'knn' \\(known: ease, jaccard\\)"):
        load_settings(None, {"recommend.item_model": "knn"})


def test_the_gram_of_many_users_in_several_tasks_equals_numpy(spark):
    """Users spread over tasks and Arrow batches, the same user id in two sources (two
    buyers), repeated lines, a line without a user and items outside the list."""
    import pandas as pd

    rng = np.random.default_rng(3)
    rows = []
    for source in ("s1", "s2"):
        for u in range(300):
            bought = rng.choice(40, size=rng.integers(1, 25), replace=False)
            rows += [(source, f"u{u}", f"i{int(i)}") for i in bought]
            rows.append((source, f"u{u}", f"i{int(bought[0])}"))  # bought twice: counts once
    rows.append(("s1", None, "i1"))
    frame = pd.DataFrame(rows, columns=["source", "user_id", "item_id"])
    items = [f"i{i}" for i in range(35)][::-1]  # i35..i39 left out; the order sets the rows
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "97")
    try:
        got = gram_matrix(spark.createDataFrame(frame), items)
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    known = frame.dropna().drop_duplicates()
    x = pd.crosstab([known.source, known.user_id], known.item_id).reindex(columns=items, fill_value=0)
    np.testing.assert_array_equal(got, x.to_numpy().T @ x.to_numpy())
    assert got[items.index("i1"), items.index("i1")] == (known.item_id == "i1").sum()


def stable_sort_reference(weights: np.ndarray, keep: int) -> list[tuple[int, int, float]]:
    """Each row rounded to 12 digits, sorted stably by descending weight (ties: lower column),
    its first ``keep`` kept where positive."""
    out = []
    for r, row in enumerate(np.round(weights, 12)):
        for c in np.argsort(-row, kind="stable")[:keep]:
            if row[c] > 0:
                out.append((r, int(c), float(row[c])))
    return out


@pytest.mark.parametrize("keep", [1, 2, 3, 7])
def test_the_kept_weights_equal_a_stable_sort_of_each_row_ties_included(keep):
    rng = np.random.default_rng(keep)
    w = rng.choice([-0.5, 0.0, 0.1, 0.2, 0.2 + 1e-14, 0.3], size=(9, 8))  # many exact ties
    r, c, v = top_positive(w, keep, first_row=5)
    expected = stable_sort_reference(w, keep)
    assert list(zip((r - 5).tolist(), c.tolist(), v.tolist(), strict=True)) == expected


def test_ease_rows_are_ranked_block_by_block_as_over_the_whole_matrix(monkeypatch):
    rng = np.random.default_rng(11)
    x = (rng.random((300, 23)) < 0.15).astype(float)
    x[:, 20:] = x[:, :3]  # three items bought by exactly the same users: tied weights
    gram = x.T @ x
    items = [f"i{j:02d}" for j in range(23)]
    whole = ease_neighbours(gram, items, l2_scale=0.5, neighbours=4)
    monkeypatch.setattr(item_model, "ROW_BLOCK", 5)  # 5 blocks, the last one short
    blocks = ease_neighbours(gram, items, l2_scale=0.5, neighbours=4)
    pd.testing.assert_frame_equal(blocks, whole)
    p = np.linalg.inv(gram + 0.5 * np.diag(gram).mean() * np.eye(23))
    b = -p / np.diag(p)[np.newaxis, :]
    np.fill_diagonal(b, 0.0)
    expected = [(items[r], items[c], v) for r, c, v in stable_sort_reference(b, 4)]
    got = list(zip(whole.item_id, whole.other_id, whole.similarity, strict=True))
    assert [g[:2] for g in got] == [e[:2] for e in expected]
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected], atol=1e-12)
