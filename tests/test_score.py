"""The scorer's components, causal and cooc sources, reasons and composition on a hand-made case.

(tests/test_candidates.py covers the chunk, popular, neighbour, history and filler sources and
the user vector.) Every expectation is worked out by hand in the comments; no Spark.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from udfs.candidates import (
    bert_kernel,
    bert_similarity,
    category_shares,
    causal_candidates,
    causal_scores,
    chunk_of,
    cooc_candidates,
    cooc_scores,
    filler_candidates,
    history_candidates,
    led_categories,
    neighbour_candidates,
    popular_candidates,
    space_scores,
    time_scores,
    top_indices,
)
from udfs.score import (
    CAUSAL,
    COOC,
    FILLER,
    NEIGHBOUR,
    POPULAR,
    RESULT_COLUMNS,
    USER_COLUMNS,
    Catalog,
    ReasonContext,
    ScoreParams,
    reasons,
    score_users,
)
from udfs.vectors import user_vectors, weighted_unit_sums


def catalog() -> Catalog:
    # items a b c d (indices 0-3), categories X = {a, b}, Y = {c, d}; the market: c, b, a, d;
    # X leads Y with strength .5; bought together: a->c .4, b->c .2, b->d .5; c is trending
    return Catalog(
        item_ids=np.array(list("abcd")),
        embeddings=np.array([[1, 0], [0.6, 0.8], [0, 1], [-1, 0]], dtype=np.float32),
        category_codes=np.array([0, 0, 1, 1]),
        categories=["X", "Y"],
        time_score=np.array([0.2, 0.5, 1.0, 0.1]),
        trending=np.array([False, False, True, False]),
        regions=["R"],
        space_score=np.array([[0.4, 0.0, 0.0, 1.0]]),
        popular_order=np.array([2, 1, 0, 3]),
        region_order=[np.array([3, 0])],
        causal=np.array([[0.0, 0.5], [0.0, 0.0]]),
        cooc=sp.csr_matrix(([0.4, 0.2, 0.5], ([0, 1, 1], [2, 2, 3])), shape=(4, 4)),
    )


def users(source: str = "s") -> pd.DataFrame:
    # u bought b (weight 1, on 2 days) after a (.5, 1 day); v bought c; w bought nothing and
    # lives elsewhere
    return pd.DataFrame(
        [(source, "u", "R", False, ["b", "a"], [1.0, 0.5], [2, 1], [1.0, 0.5]),
         (source, "v", "R", False, ["c"], [2.0], [1], [2.0]),
         (source, "w", "elsewhere", True, [], [], [], [])],
        columns=list(USER_COLUMNS),
    )


def test_bert_similarity_is_the_cosine_with_the_user_vector():
    # u: 1 x b + .5 x a = (1.1, .8), norm sqrt(1.85); v: c itself; w: zeros
    got = bert_similarity(chunk_of(users(), catalog()), catalog())
    n = math.sqrt(1.85)
    expected = [[1.1 / n, (0.66 + 0.64) / n, 0.8 / n, -1.1 / n], [0, 0.8, 1, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got.dtype == np.float64


@pytest.mark.parametrize("block", [1, 1024])
def test_bert_kernel_is_the_weighted_mean_of_clipped_cosines_to_the_history(block):
    # u bought b (w 1) and a (w .5): cos to b = (.6, 1, .8, -.6), to a = (1, .6, 0, -1), negative
    # cosines count 0; v bought c (w 2): cos (0, .8, 1, 0); w has no history
    chunk = chunk_of(users(), catalog())
    square = bert_kernel(chunk, catalog(), 2, block=block)
    expected = [[(0.36 + 0.5) / 1.5, (1 + 0.5 * 0.36) / 1.5, 0.64 / 1.5, 0.0], [0, 0.64, 1, 0], [0] * 4]
    np.testing.assert_allclose(square, expected, rtol=1e-6, atol=1e-7)
    fourth = bert_kernel(chunk, catalog(), 4, block=block)
    expected = [[(0.1296 + 0.5) / 1.5, (1 + 0.5 * 0.1296) / 1.5, 0.4096 / 1.5, 0.0], [0, 0.4096, 1, 0], [0] * 4]
    np.testing.assert_allclose(fourth, expected, rtol=1e-6, atol=1e-7)


def test_kernel_neighbours_are_the_new_items_of_largest_kernel_score():
    # u (bought a, b): c .43 beats d 0; v (bought c): b .64 beats a and d (0: never proposed)
    chunk = chunk_of(users(), catalog())
    kernel = bert_kernel(chunk, catalog(), 2)
    got = neighbour_candidates(chunk, catalog(), 1, recent=1, kernel=kernel)
    assert got.tolist() == [[False, False, True, False], [False, True, False, False], [False] * 4]
    assert neighbour_candidates(chunk, catalog(), 3, recent=1, kernel=kernel)[2].sum() == 0


def test_time_scores_are_the_same_for_every_user():
    got = time_scores(chunk_of(users(), catalog()), catalog())
    np.testing.assert_array_equal(got, [[0.2, 0.5, 1.0, 0.1]] * 3)


def test_causal_scores_from_category_shares_and_lead_strengths():
    chunk = chunk_of(users(), catalog())
    shares = category_shares(chunk, catalog())
    np.testing.assert_array_equal(shares, [[1, 0], [0, 1], [0, 0]])  # u: all X, v: all Y
    led = led_categories(shares, catalog())
    np.testing.assert_array_equal(led, [[0, 0.5], [0, 0], [0, 0]])  # X leads Y; Y leads nothing
    np.testing.assert_array_equal(causal_scores(led, chunk, catalog()), [[0, 0, 0.5, 0.5], [0] * 4, [0] * 4])


def test_causal_candidates_are_popular_items_of_led_categories():
    chunk = chunk_of(users(), catalog())
    led = np.array([[0, 0.5], [0, 0], [0, 0]])
    # Y's items most popular first: c, d; a category led by 0 proposes nothing
    one = causal_candidates(led, chunk, catalog(), 1)
    assert one.tolist() == [[False, False, True, False], [False] * 4, [False] * 4]
    three = causal_candidates(led, chunk, catalog(), 3)
    assert three.tolist() == [[False, False, True, True], [False] * 4, [False] * 4]


def test_cooc_scores_sources_and_candidates():
    chunk = chunk_of(users(), catalog())
    score, source = cooc_scores(chunk.hist_idx, chunk.history, catalog().cooc)
    # u: c = .5 x .4 (from a) + 1 x .2 (from b) = .4, d = 1 x .5 = .5; divided by .5
    np.testing.assert_allclose(score, [[0, 0, 0.8, 1.0], [0] * 4, [0] * 4])
    # c's two contributions tie at .2: the lower index (a) is its source
    assert source.tolist() == [[-1, -1, 0, 1], [-1] * 4, [-1] * 4]
    assert cooc_candidates(chunk, score, 1).tolist() == [[False, False, False, True], [False] * 4, [False] * 4]
    assert cooc_candidates(chunk, score, 5).tolist() == [[False, False, True, True], [False] * 4, [False] * 4]


def test_cooc_without_a_matrix_is_zero():
    chunk = chunk_of(users(), catalog())
    score, source = cooc_scores(chunk.hist_idx, chunk.history, None)
    assert not score.any() and (source == -1).all()


def test_top_indices_skip_non_finite_and_break_ties_by_index():
    values = np.array([[3.0, -np.inf, 3.0, 1.0], [np.nan, 2.0, np.inf, -np.inf]])
    assert [t.tolist() for t in top_indices(values, 2)] == [[0, 2], [1]]


def reason_context(components=frozenset({"time", "causal", "cooc"})) -> ReasonContext:
    return ReasonContext(
        catalog=catalog(),
        category_shares=np.array([[1.0, 0.0]]),
        components=components,
        history=np.array([[0.0, 0.0, 0.3, 0.0]]),
        cooc_source=np.array([[-1, -1, 0, 1]]),
    )


def test_reasons_in_their_documented_order():
    flag = NEIGHBOUR | POPULAR | CAUSAL | COOC
    # c: trending, Y led by X (u's only category), bought with a, bought before
    assert reasons(reason_context(), flag=flag, row=0, item=2, short=True) == [
        "similar_to_recent", "popular_in_region", "trending", "led_by:X", "bought_with:a",
        "bought_before", "catalogue_exhausted",
    ]
    assert reasons(reason_context(), flag=FILLER, row=0, item=2, short=False) == [
        "trending", "bought_before", "popular_overall",
    ]
    # trending only when the time component is on; d: not bought before
    assert reasons(reason_context(frozenset()), flag=POPULAR, row=0, item=2, short=False) == [
        "popular_in_region", "bought_before",
    ]
    assert reasons(reason_context(), flag=COOC, row=0, item=3, short=False) == ["bought_with:b"]


def test_only_the_sources_of_enabled_components_propose():
    only_cooc = ScoreParams(weights={"cooc": 1.0}, k=None, components=frozenset({"cooc"}))
    out = score_users(users().iloc[:1], catalog(), only_cooc)
    assert out["item_id"].tolist() == ["d", "c"]  # logits 1.0 and .8
    assert out["reasons"].tolist() == [["bought_with:b"], ["bought_with:a"]]
    assert out["bert_score"].tolist() == [0.0, 0.0]  # switched-off components score 0

    only_time = ScoreParams(weights={}, k=None, components=frozenset({"time"}), candidates_popular=2)
    out = score_users(users().iloc[2:], catalog(), only_time)  # w: unknown region -> the market
    assert out["item_id"].tolist() == ["b", "c"]  # equal logits: item id order
    assert out["reasons"].tolist() == [["popular_in_region"], ["popular_in_region", "trending"]]


def test_history_source_needs_repeats_allowed():
    only_history = ScoreParams(weights={"history": 1.0}, k=None, components=frozenset({"history"}))
    out = score_users(users().iloc[:1], catalog(), only_history)
    assert out["item_id"].tolist() == ["b", "a"]
    assert out["history_score"].tolist() == [1.0, 0.5]
    assert out["repeat_score"].tolist() == [0.0, 0.0]  # switched off
    none = score_users(users().iloc[:1], catalog(), ScoreParams(
        weights={}, k=None, components=frozenset({"history"}), allow_repeat=False))
    assert none.empty and list(none.columns) == RESULT_COLUMNS


def test_source_is_carried_through_and_first():
    both = pd.concat([users("s1").iloc[:1], users("s2").iloc[1:2].assign(user_id="u")], ignore_index=True)
    out = score_users(both, catalog(), ScoreParams(weights={}, k=2, batch_users=1))
    assert list(out.columns) == RESULT_COLUMNS and RESULT_COLUMNS[0] == "source"
    assert out[["source", "user_id"]].drop_duplicates().values.tolist() == [["s1", "u"], ["s2", "u"]]


def test_missing_user_column_is_named():
    with pytest.raises(ValueError, match="missing user column source"):
        score_users(users().drop(columns="source"), catalog(), ScoreParams(weights={}))


# --- chunks, popular / neighbour / history / filler sources, the user vector -------------


def history_users() -> pd.DataFrame:
    return pd.DataFrame(
        [("s", "u", "R", False, ["b", "zz", "a"], [1.0, 0.7, 0.5], [3, 4, 1], [0.2, 0.9, 0.8]),
         ("s", "v", "elsewhere", False, [], [], [], [])],
        columns=list(USER_COLUMNS),
    )


def test_chunk_drops_unknown_items_and_scales_history_to_one():
    chunk = chunk_of(history_users(), catalog())
    assert [list(i) for i in chunk.hist_idx] == [[1, 0], []]
    assert [list(d) for d in chunk.hist_days] == [[3, 1], []]  # zz's days leave with it
    np.testing.assert_allclose(chunk.history, [[0.5, 1.0, 0, 0], [0, 0, 0, 0]])
    # recent: scaled by the largest recent weight of a catalogue item (a's 0.8; zz is dropped)
    np.testing.assert_allclose(chunk.recent, [[1.0, 0.25, 0, 0], [0, 0, 0, 0]])
    assert chunk.region_row.tolist() == [0, -1]


def test_popular_candidates_use_the_region_or_the_market():
    got = popular_candidates(chunk_of(history_users(), catalog()), catalog(), 1)
    assert got.tolist() == [[False, False, False, True], [False, False, True, False]]
    np.testing.assert_allclose(space_scores(chunk_of(history_users(), catalog()), catalog()),
                               [[0.4, 0, 0, 1.0], [0, 0, 0, 0]])


def test_neighbours_are_new_items_nearest_to_recent_ones():
    # u's most recent item is b = (0.6, 0.8): c (cos 0.8) beats d (cos -0.6); a and b are bought
    got = neighbour_candidates(chunk_of(history_users(), catalog()), catalog(), 1, recent=1)
    assert got.tolist() == [[False, False, True, False], [False] * 4]


def test_history_and_filler():
    chunk = chunk_of(history_users(), catalog())
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
