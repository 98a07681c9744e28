"""Ranking metrics against hand-computed values and Spark MLlib's RankingMetrics."""

import math

import numpy as np
import pytest

from stpipe.evaluate import metrics as M

REC = ["a", "b", "c", "d", "e"]
TRUTH = {"b", "d", "x"}
L2 = math.log2


def test_hand_computed_at_5():
    assert M.hit_rate_at(REC, TRUTH, 5) == 1.0
    assert M.precision_at(REC, TRUTH, 5) == pytest.approx(2 / 5)
    assert M.recall_at(REC, TRUTH, 5) == pytest.approx(2 / 3)
    # hits at ranks 2 and 4; ideal: 3 hits in ranks 1..3
    assert M.ndcg_at(REC, TRUTH, 5) == pytest.approx(
        (1 / L2(3) + 1 / L2(5)) / (1 / L2(2) + 1 / L2(3) + 1 / L2(4))
    )
    # precision at the hits: 1/2 and 2/4, divided by min(|truth|, K) = 3
    assert M.average_precision_at(REC, TRUTH, 5) == pytest.approx((1 / 2 + 2 / 4) / 3)


def test_hand_computed_at_2_ideal_is_capped_by_k():
    assert M.precision_at(REC, TRUTH, 2) == pytest.approx(0.5)
    assert M.recall_at(REC, TRUTH, 2) == pytest.approx(1 / 3)
    assert M.ndcg_at(REC, TRUTH, 2) == pytest.approx((1 / L2(3)) / (1 + 1 / L2(3)))
    assert M.average_precision_at(REC, TRUTH, 2) == pytest.approx((1 / 2) / 2)


def test_short_list_and_misses():
    assert M.precision_at(["a"], {"a"}, 5) == pytest.approx(1 / 5)  # short lists are not rewarded
    assert M.ndcg_at(["a"], {"a"}, 5) == pytest.approx(1.0)
    assert M.average_precision_at(["a"], {"a"}, 5) == pytest.approx(1.0)
    assert M.hit_rate_at(["q", "r"], {"a"}, 2) == 0.0
    assert M.ndcg_at([], {"a"}, 3) == 0.0
    assert M.average_precision_at(["q", "a"], {"a"}, 1) == 0.0


def test_summarise_means_stderr_coverage_and_users():
    lists = {"u1": ["a", "b"], "u2": ["b", "c"], "u3": ["z"]}
    truth = {"u1": {"a"}, "u2": {"x"}, "u3": set()}  # u3 has no truth: not evaluated
    out = M.summarise(lists, truth, [1, 2], catalogue_size=10).set_index(["k", "metric"])
    hr1 = out.loc[(1, "hr")]
    assert hr1.value == pytest.approx(0.5)
    assert hr1.stderr == pytest.approx(np.std([1, 0], ddof=1) / math.sqrt(2))
    assert hr1.users == 2
    assert out.loc[(2, "precision")].value == pytest.approx((1 / 2 + 0) / 2)
    # coverage over evaluated users' lists only: {a} at K=1 is 1 of 10... plus b from u2
    assert out.loc[(1, "coverage")].value == pytest.approx(2 / 10)
    assert out.loc[(2, "coverage")].value == pytest.approx(3 / 10)
    assert math.isnan(out.loc[(2, "coverage")].stderr)


def test_user_without_list_scores_zero():
    out = M.per_user_metrics({}, {"u": {"a"}}, [3])
    assert out[["hr", "precision", "recall", "ndcg", "map"]].to_numpy().tolist() == [[0.0] * 5]


def test_agrees_with_mllib_ranking_metrics(spark):
    from pyspark.mllib.evaluation import RankingMetrics

    rng = np.random.default_rng(11)
    lists, truth = {}, {}
    for u in range(60):
        lists[u] = [int(x) for x in rng.permutation(30)[: rng.integers(1, 15)]]
        truth[u] = {int(x) for x in rng.choice(30, size=rng.integers(1, 8), replace=False)}
    pairs = [(lists[u], sorted(truth[u])) for u in range(60)]
    mllib = RankingMetrics(spark.sparkContext.parallelize(pairs, 2))
    ours = M.per_user_metrics(lists, truth, [1, 3, 5, 10]).groupby("k").mean(numeric_only=True)
    for k in (1, 3, 5, 10):
        assert ours.loc[k, "precision"] == pytest.approx(mllib.precisionAt(k), abs=1e-12)
        assert ours.loc[k, "recall"] == pytest.approx(mllib.recallAt(k), abs=1e-12)
        assert ours.loc[k, "ndcg"] == pytest.approx(mllib.ndcgAt(k), abs=1e-12)
        assert ours.loc[k, "map"] == pytest.approx(mllib.meanAveragePrecisionAt(k), abs=1e-12)
    # documented difference: MLlib's MAP without K divides by |truth|, ours by min(|truth|, K)
    long_truth = {u: t for u, t in truth.items() if len(t) > 3}
    ours_k3 = np.mean([M.average_precision_at(lists[u], long_truth[u], 3) for u in long_truth])
    theirs = RankingMetrics(
        spark.sparkContext.parallelize([(lists[u][:3], sorted(long_truth[u])) for u in long_truth], 2)
    ).meanAveragePrecision
    assert ours_k3 > theirs
