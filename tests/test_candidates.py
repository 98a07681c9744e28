"""The scorer's small parts, each on a hand-made case (no Spark)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from udfs.candidates import (
    chunk_of,
    filler_candidates,
    history_candidates,
    neighbour_candidates,
    popular_candidates,
    space_scores,
)
from udfs.score import Catalog
from udfs.vectors import user_vectors, weighted_unit_sums


def catalog() -> Catalog:
    # items a b c d; region R sells d then a; the market: c, b, a, d
    return Catalog(
        item_ids=np.array(list("abcd")),
        embeddings=np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32),
        category_codes=np.array([0, 0, 1, 1]),
        categories=["X", "Y"],
        time_score=np.array([0.2, 0.5, 1.0, 0.1]),
        trending=np.zeros(4, dtype=bool),
        regions=["R"],
        space_score=np.array([[0.4, 0.0, 0.0, 1.0]]),
        popular_order=np.array([2, 1, 0, 3]),
        region_order=[np.array([3, 0])],
        causal=np.zeros((2, 2)),
    )


def users() -> pd.DataFrame:
    return pd.DataFrame(
        [("s", "u", "R", False, ["b", "zz", "a"], [1.0, 0.7, 0.5]),
         ("s", "v", "elsewhere", False, [], [])],
        columns=["source", "user_id", "region", "is_cold_start", "hist_item_ids", "hist_weights"],
    )


def test_chunk_drops_unknown_items_and_scales_history_to_one():
    chunk = chunk_of(users(), catalog())
    assert [list(i) for i in chunk.hist_idx] == [[1, 0], []]
    np.testing.assert_allclose(chunk.history, [[0.5, 1.0, 0, 0], [0, 0, 0, 0]])
    assert chunk.region_row.tolist() == [0, -1]


def test_popular_candidates_use_the_region_or_the_market():
    got = popular_candidates(chunk_of(users(), catalog()), catalog(), 1)
    assert got.tolist() == [[False, False, False, True], [False, False, True, False]]
    np.testing.assert_allclose(space_scores(chunk_of(users(), catalog()), catalog()),
                               [[0.4, 0, 0, 1.0], [0, 0, 0, 0]])


def test_neighbours_are_new_items_nearest_to_recent_ones():
    # u's most recent item is b = (0.6, 0.8): c (cos 0.8) beats d (cos -0.6); a and b are bought
    got = neighbour_candidates(chunk_of(users(), catalog()), catalog(), 1, recent=1)
    assert got.tolist() == [[False, False, True, False], [False] * 4]


def test_history_and_filler():
    chunk = chunk_of(users(), catalog())
    assert history_candidates(chunk, 1).tolist() == [[False, True, False, False], [False] * 4]
    taken = np.array([[False, True, False, False], [False] * 4])
    allowed = np.array([[True, True, False, True], [True] * 4])
    # u needs 2 more: c is not allowed, b is taken -> a, d; v needs 3: c, b, a
    got = filler_candidates(taken, allowed, catalog(), 3)
    assert got.tolist() == [[True, False, False, True], [True, True, True, False]]


def test_user_vector_is_the_weighted_sum_made_unit():
    emb = catalog().embeddings
    got = user_vectors([np.array([0, 2]), np.array([], dtype=np.int64)],
                       [np.array([3.0, 4.0]), np.array([])], emb)
    np.testing.assert_allclose(got, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)
    segments = weighted_unit_sums(np.array([1.0, 1.0, 2.0]), emb[[0, 3, 1]], np.array([0, 2]))
    np.testing.assert_allclose(segments, [[0.0, 0.0], [0.6, 0.8]], atol=1e-7)
