"""The `recent` component: the user's own items weighted with a short half-life.

Expected values are worked out here from the order times by hand.
"""

from __future__ import annotations

import numpy as np
import pytest

from stpipe import config
from stpipe.errors import ConfigError
from stpipe.recommend.signals import cold_start_templates, history_before, user_histories
from tests.test_repeat import AS_OF, ORDER_SCHEMA, day_orders


def test_user_histories_weigh_recent_lines_with_the_short_half_life(spark):
    orders = spark.createDataFrame(day_orders(), ORDER_SCHEMA)
    lines = history_before(orders, as_of=AS_OF, timezone="UTC")
    got = user_histories(lines, half_life_days=30.0, timezone="UTC", recent_half_life_days=3.0)
    row = got.toPandas().iloc[0]
    # ages in days before 2024-03-01 00:00 UTC: b 2-20 08:00 -> 9 + 16/24; c 2-14 10:00 and
    # 16:00 -> 15 + 14/24 and 15 + 8/24; a 2-10 09:00, 11:00 and 2-12 12:00 -> 19 + 15/24,
    # 19 + 13/24, 17 + 12/24 (its line on the as-of date is not history)
    def w(half_life, *ages):
        return sum(2 ** (-age / half_life) for age in ages)

    b, c, a = (9 + 16 / 24,), (15 + 14 / 24, 15 + 8 / 24), (19 + 15 / 24, 19 + 13 / 24, 17.5)
    assert list(row["hist_item_ids"]) == ["b", "c", "a"]
    np.testing.assert_allclose(row["hist_recent"], [w(3, *b), w(3, *c), w(3, *a)])
    np.testing.assert_allclose(row["hist_weights"], [w(30, *b), w(30, *c), w(30, *a)])
    # a's three lines outweigh b's one at 30 days (1.93 vs 0.80) but not at 3 (0.04 vs 0.11)
    assert row["hist_weights"][2] > row["hist_weights"][0]
    assert row["hist_recent"][2] < row["hist_recent"][0]
    cold = cold_start_templates(orders, ["s"], ["R"]).toPandas().iloc[0]
    assert list(cold["hist_recent"]) == []


@pytest.mark.parametrize("value", [0.0, -3.0])
def test_a_half_life_that_is_not_positive_is_refused(value):
    settings = config.load_settings("conf/local.yaml")
    with pytest.raises(ConfigError, match=f"recommend.recent_half_life_days: must be above 0, got {value}"):
        config.replace(settings, **{"recommend.recent_half_life_days": value})
