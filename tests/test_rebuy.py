"""The rebuy component: how often an item's buyers come back for it, on the user's own items.

Expected values are worked out here by hand from the counts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from stpipe import config
from stpipe.errors import ConfigError
from stpipe.recommend.catalog import build_catalog, rebuy_rates
from udfs.candidates import chunk_of, rebuy_scores
from udfs.score import USER_COLUMNS, Catalog

ITEMS = np.array(["a", "b", "c", "d"])


def _item_time(buyers, repeat_buyers) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": ["a", "b", "c"], "popularity": [3.0, 2.0, 1.0], "trend": [1.0] * 3,
        "recent_orders": [1, 1, 1], "buyers": buyers, "repeat_buyers": repeat_buyers,
    })


def test_rates_shrink_towards_the_market_share():
    # market: 2 + 0 + 18 = 20 repeat buyers of 10 + 10 + 80 = 100 buyers: m = 0.2
    got = rebuy_rates(_item_time([10, 10, 80], [2, 0, 18]), ITEMS, prior_buyers=10.0)
    # (r + 10 x 0.2) / (n + 10); d was not sold in the window: the market's share
    np.testing.assert_allclose(got, [4 / 20, 2 / 20, 20 / 90, 0.2])
    # no prior: the raw shares
    np.testing.assert_allclose(
        rebuy_rates(_item_time([10, 10, 80], [2, 0, 18]), ITEMS, prior_buyers=0.0),
        [0.2, 0.0, 18 / 80, 0.2],
    )


def test_rates_of_older_tables():
    # no repeat_buyers column (older code): no rates at all, the component is 0
    bare = _item_time([1, 2, 3], [0, 0, 0]).drop(columns="repeat_buyers")
    assert rebuy_rates(bare, ITEMS, prior_buyers=10.0) is None
    # rows with null counts are left out of the market share and read as it
    mixed = _item_time([4, None, 6], [1, None, 3])
    m = 4 / 10
    np.testing.assert_allclose(
        rebuy_rates(mixed, ITEMS, prior_buyers=10.0), [(1 + 4) / 14, m, (3 + 4) / 16, m]
    )
    assert rebuy_rates(_item_time([None] * 3, [None] * 3), ITEMS, prior_buyers=10.0) is None


def test_an_item_sold_by_two_sources_adds_their_counts():
    two = pd.concat([_item_time([10, 10, 80], [2, 0, 18]), _item_time([10, 10, 80], [2, 0, 18]).iloc[:1]])
    # a: 20 buyers, 4 repeat; market (4 + 0 + 18) / 110
    m = 22 / 110
    np.testing.assert_allclose(rebuy_rates(two, ITEMS, prior_buyers=10.0)[0], (4 + 10 * m) / 30)


def _catalog() -> Catalog:
    emb = pd.DataFrame({"item_id": ["a", "b", "c"], "embedding": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]]})
    cats = pd.DataFrame({"item_id": ["a", "b", "c"], "category": ["X"] * 3})
    region = pd.DataFrame({"region": ["R"] * 3, "item_id": ["a", "b", "c"], "lift": [1.0] * 3})
    return build_catalog(emb, cats, _item_time([10, 10, 80], [2, 0, 18]), region, None, rebuy_prior_buyers=10.0)


def test_rebuy_scores_only_the_users_own_items():
    catalog = _catalog()
    np.testing.assert_allclose(catalog.rebuy_rate, [0.2, 0.1, 20 / 90])
    users = pd.DataFrame(
        [("s", "u", "R", False, ["c", "a"], [1.0, 0.5], [1, 3], [1.0, 0.5]), ("s", "v", "R", False, [], [], [], [])],
        columns=list(USER_COLUMNS),
    )
    got = rebuy_scores(chunk_of(users, catalog), catalog)
    np.testing.assert_allclose(got, [[0.2, 0.0, 20 / 90], [0.0, 0.0, 0.0]])
    bare = Catalog(**{**catalog.__dict__, "rebuy_rate": None, "_index": None, "_by_category": None})
    np.testing.assert_allclose(rebuy_scores(chunk_of(users, bare), bare), 0.0)


def test_a_negative_prior_is_refused():
    settings = config.load_settings("conf/local.yaml")
    with pytest.raises(ConfigError, match="recommend.rebuy_prior_buyers: must be 0 or more, got -1"):
        config.replace(settings, **{"recommend.rebuy_prior_buyers": -1.0})
