"""The text model alone (content_base / content_tuned): the item-to-item kernel by hand."""

import datetime as dt

import numpy as np
import pandas as pd

from stpipe.evaluate.baselines import EvalContext
from stpipe.evaluate.content import aligned, content_model

CUTOFF = dt.date(2024, 3, 1)
# a = (1, 0), b = (.8, .6), c = (0, 1), d = (-1, 0): cos(a, b) = .8, cos(b, c) = .6, cos(a, d) = -1
VECTORS = pd.DataFrame({"item_id": list("abcd"),
                        "embedding": [[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-1.0, 0.0]]})


def history(spark):
    # u1 bought a the day before the cutoff (weight e^(-1/30)); u2 bought b, c and d then too
    day = CUTOFF - dt.timedelta(days=1)
    rows = [("u1", "a", day, "r"), ("u2", "b", day, "r"), ("u2", "c", day, "r"), ("u2", "d", day, "r")]
    return spark.createDataFrame(rows, "user_id string, item_id string, day date, region string")


def lists(spark, power, exclude_seen):
    model = content_model("content_base", lambda: VECTORS, power=power)
    ctx = EvalContext(spark=spark, cutoff=CUTOFF, n=4, exclude_seen=exclude_seen,
                      users=pd.DataFrame({"user_id": ["u1", "u2"], "region": ["r", "r"]}))
    out = model(history(spark), ctx).toPandas()
    return {u: g.sort_values("rank").item_id.tolist() for u, g in out.groupby("user_id")}


def test_kernel_lists_by_hand(spark):
    # u1, power 2: a 1, b .64, c 0, d 0 (cos -1 counts 0): zero scores are not listed
    # u2, power 2 (equal weights w): a w(.64 + 0 + 0), b w(1 + .36 + 0), c w(.36 + 1 + 0), d w(0 + 0 + 1):
    # b and c tie (1.36): the lower id first
    assert lists(spark, 2, exclude_seen=False) == {"u1": ["a", "b"], "u2": ["b", "c", "d", "a"]}
    assert lists(spark, 2, exclude_seen=True) == {"u1": ["b"], "u2": ["a"]}


def test_power_zero_is_the_mean_vector_cosine(spark):
    # u2's sum of b, c, d is (-.2, 1.6), norm 1.612: c (cos .99) > b (.50) > d (.12); a's
    # cosine is negative (-.12): not listed
    assert lists(spark, 0, exclude_seen=False) == {"u1": ["a", "b"], "u2": ["c", "b", "d"]}


def test_items_without_a_vector_score_zero():
    got = aligned(VECTORS.iloc[:2], np.array(["a", "z", "b"], dtype=object))
    np.testing.assert_allclose(got, [[1, 0], [0, 0], [0.8, 0.6]], rtol=1e-6)
