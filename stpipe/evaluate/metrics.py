"""Top-K ranking metrics, pure numpy/pandas.

Definitions (binary relevance; ``rec`` a ranked list, ``truth`` a non-empty set, ``hits@K`` the
number of the first K recommended items that are in ``truth``):

- ``hr@K``        1 if hits@K > 0 else 0
- ``precision@K`` hits@K / K (a list shorter than K is not rewarded for being short)
- ``recall@K``    hits@K / |truth|
- ``ndcg@K``      DCG@K / IDCG@K, DCG = sum over hit positions i (0-based) of 1/log2(i + 2),
                  IDCG = the DCG of min(|truth|, K) hits in the first positions
- ``map@K``       sum over hit positions i < K of precision@(i+1), divided by min(|truth|, K)
- ``coverage@K``  distinct items in all users' top-K lists / catalogue size (not a per-user mean:
                  its standard error is NaN)

Each per-user metric is averaged over users with a non-empty truth; the standard error is the
sample standard deviation (ddof=1) over sqrt(users).

Relation to ``pyspark.mllib.evaluation.RankingMetrics`` (Spark 4.1), checked in the tests:
``precisionAt``, ``recallAt``, ``ndcgAt`` (binary) and ``meanAveragePrecisionAt`` coincide with
the definitions above for users whose truth is non-empty. Differences: Spark averages over every
row it is given and scores an empty truth as 0 (we drop such users, as the split does);
``meanAveragePrecision`` without K divides by |truth| rather than min(|truth|, K); hit rate and
coverage do not exist there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

PER_USER_METRICS = ("hr", "precision", "recall", "ndcg", "map")
METRICS = (*PER_USER_METRICS, "coverage")


def _hits(rec: Sequence[object], truth: set[object], k: int) -> np.ndarray:
    top = list(rec)[:k]
    return np.array([item in truth for item in top], dtype=bool)


def hit_rate_at(rec: Sequence[object], truth: set[object], k: int) -> float:
    return float(_hits(rec, truth, k).any())


def precision_at(rec: Sequence[object], truth: set[object], k: int) -> float:
    return float(_hits(rec, truth, k).sum()) / k


def recall_at(rec: Sequence[object], truth: set[object], k: int) -> float:
    return float(_hits(rec, truth, k).sum()) / len(truth)


def ndcg_at(rec: Sequence[object], truth: set[object], k: int) -> float:
    hits = _hits(rec, truth, k)
    gains = 1.0 / np.log2(np.arange(2, len(hits) + 2))
    dcg = float(gains[hits].sum())
    ideal = float((1.0 / np.log2(np.arange(2, min(len(truth), k) + 2))).sum())
    return dcg / ideal


def average_precision_at(rec: Sequence[object], truth: set[object], k: int) -> float:
    hits = _hits(rec, truth, k)
    if not hits.any():
        return 0.0
    precisions = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precisions[hits].sum()) / min(len(truth), k)


_FUNCTIONS = {
    "hr": hit_rate_at,
    "precision": precision_at,
    "recall": recall_at,
    "ndcg": ndcg_at,
    "map": average_precision_at,
}


def per_user_metrics(
    lists: dict[object, Sequence[object]], truth: dict[object, set[object]], ks: Iterable[int]
) -> pd.DataFrame:
    """One row per (user, k) with a column per metric, for every user with a non-empty truth.

    A user with a truth but no list scores 0 everywhere (the model had nothing to say).
    """
    rows = []
    for user in sorted(truth, key=str):
        relevant = truth[user]
        if not relevant:
            continue
        rec = list(lists.get(user, ()))
        for k in ks:
            rows.append(
                {"user_id": user, "k": k, **{m: _FUNCTIONS[m](rec, relevant, k) for m in PER_USER_METRICS}}
            )
    return pd.DataFrame(rows, columns=["user_id", "k", *PER_USER_METRICS])


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    """Mean and its standard error (sample sd / sqrt(n)); NaN where undefined."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = float(np.mean(values))
    stderr = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return mean, stderr


def coverage_at(lists: dict[object, Sequence[object]], k: int, catalogue_size: int) -> float:
    """Share of the catalogue that appears in at least one top-K list."""
    if catalogue_size <= 0:
        return math.nan
    shown = {item for rec in lists.values() for item in list(rec)[:k]}
    return len(shown) / catalogue_size


def summarise(
    lists: dict[object, Sequence[object]],
    truth: dict[object, set[object]],
    ks: Iterable[int],
    *,
    catalogue_size: int,
    per_user: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Rows (k, metric, value, stderr, users): per-user metrics averaged, plus coverage.

    Coverage is measured over the lists of the evaluated users (those with a non-empty truth).
    ``per_user``: :func:`per_user_metrics` of the same arguments, when the caller has it already.
    """
    ks = sorted(set(ks))
    users = [u for u, t in truth.items() if t]
    if per_user is None:
        per_user = per_user_metrics(lists, truth, ks)
    evaluated_lists = {u: lists.get(u, ()) for u in users}
    rows = []
    for k in ks:
        at_k = per_user[per_user.k == k]
        for metric in PER_USER_METRICS:
            value, stderr = mean_and_stderr(at_k[metric].to_numpy(dtype=float))
            rows.append({"k": k, "metric": metric, "value": value, "stderr": stderr, "users": len(users)})
        rows.append(
            {
                "k": k,
                "metric": "coverage",
                "value": coverage_at(evaluated_lists, k, catalogue_size) if users else math.nan,
                "stderr": math.nan,
                "users": len(users),
            }
        )
    return pd.DataFrame(rows, columns=["k", "metric", "value", "stderr", "users"])
