"""Feature tables on hand-made order logs: expected values worked out by hand.

Run date 2024-03-10 (a Sunday), time zone UTC unless a test says otherwise.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics

import pandas as pd
import pytest

from stpipe import catalogue, tables
from stpipe.config import FeatureSettings, load_settings, replace
from stpipe.errors import ConfigError, InputError
from stpipe.features import build as features_build
from stpipe.features import common, space, time
from stpipe.schema import ITEMS, ORDERS_CLEAN
from stpipe.stages import FEATURES, run_stage
from tests.test_geo import reference_cell_centre

RUN = dt.date(2024, 3, 10)
UTC = dt.timezone.utc


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


# order_id, user_id, item_id, quantity, unit_price, ts (UTC), region, lat, lon
PAST = [
    ("o1", "u1", "i1", 2, 5.0, "2024-03-01 10:00:00", "north", 10.0, 20.0),
    ("o1", "u1", "i2", 1, 10.0, "2024-03-01 10:00:00", "north", 10.0, 20.0),
    ("o2", "u1", "i1", 1, 5.0, "2024-03-03 00:00:00", "north", 12.0, 22.0),  # 7 days: in 7d
    ("o3", "u1", "i3", 3, 2.0, "2024-03-09 20:30:00", "south", None, None),
    ("o4", "u2", "i2", 1, 10.0, "2024-03-02 23:59:59", "south", -5.0, -40.0),  # 8 days: not
    ("o5", "u3", "i1", 1, 5.0, "2023-12-01 10:00:00", "north", None, None),  # 100 days ago
]
FUTURE = [
    ("o6", "u1", "i1", 5, 5.0, "2024-03-10 00:00:00", "north", 50.0, 50.0),  # the run date
    ("o7", "u2", "i9", 1, 99.0, "2024-03-12 08:00:00", "east", 1.0, 1.0),  # an empty region
    ("o8", "u9", "i2", 4, 10.0, "2024-04-01 08:00:00", "south", 1.0, 1.0),
]


def orders_df(spark, rows, source="test"):
    records = []
    for i, (order_id, user, item, qty, price, when, region, lat, lon) in enumerate(rows):
        t = ts(when)
        records.append(
            (order_id, i, user, item, qty, price, t, region, None, lat, lon, source, t.date())
        )
    return spark.createDataFrame(records, ORDERS_CLEAN)


def items_df(spark, source="test"):
    rows = [("i1", "t1", "toys", None, source), ("i2", "t2", "books", None, source),
            ("i9", "t9", "garden", None, source)]  # i3 has no item row: category 'unknown'
    return spark.createDataFrame(rows, ITEMS)


def lines_of(spark, rows, *, run_date=RUN, timezone="UTC", days=365):
    hist = common.history(orders_df(spark, rows), run_date=run_date, days=days, timezone=timezone)
    return common.attach_category(hist, items_df(spark))


def as_dicts(df, key):
    return {r[key]: r.asDict() for r in df.collect()}


def frame(df) -> pd.DataFrame:
    """A table as pandas, arrays as tuples, rows in a canonical order (for equality)."""
    out = df.toPandas()
    for col in out.columns:
        if out[col].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            out[col] = out[col].map(lambda v: None if v is None else tuple(v))
    return out.sort_values(list(out.columns)).reset_index(drop=True)


def epoch(text: str) -> int:
    return int(ts(text).replace(tzinfo=UTC).timestamp())


def test_user_time_features_by_hand(spark):
    out = time.user_time_features(
        lines_of(spark, PAST + FUTURE), run_date=RUN, timezone="UTC",
        windows_days=[30, 7, 90], time_period_seconds=604_800,
    )
    got = as_dicts(out, "user_id")
    assert set(got) == {"u1", "u2", "u3"}
    u1 = got["u1"]
    gaps = [(epoch("2024-03-03 00:00:00") - epoch("2024-03-01 10:00:00")) / 86400,
            (epoch("2024-03-09 20:30:00") - epoch("2024-03-03 00:00:00")) / 86400]
    assert u1["frequency"] == 3 and u1["monetary"] == pytest.approx(31.0)
    assert u1["recency_days"] == pytest.approx(3.5 / 24)
    assert u1["interval_mean_days"] == pytest.approx(statistics.mean(gaps))
    assert u1["interval_std_days"] == pytest.approx(statistics.stdev(gaps))
    assert (u1["orders_7d"], u1["orders_30d"], u1["orders_90d"]) == (2, 3, 3)
    assert (u1["spend_7d"], u1["spend_30d"], u1["spend_90d"]) == pytest.approx((11.0, 31.0, 31.0))
    # hours 10, 0, 20 and weekdays Fri(4), Sun(6), Sat(5): all tied, the lowest wins
    assert (u1["pref_hour"], u1["pref_weekday"]) == (0, 4)
    assert (u1["hour_sin"], u1["hour_cos"]) == pytest.approx((0.0, 1.0))
    assert u1["weekday_sin"] == pytest.approx(math.sin(2 * math.pi * 4 / 7))
    assert u1["weekday_cos"] == pytest.approx(math.cos(2 * math.pi * 4 / 7))
    x = epoch("2024-03-09 20:30:00")
    assert u1["t_x_seconds"] == x
    assert u1["t_mod"] == pytest.approx(math.fmod(x / 604_800, 1.0))
    assert u1["t_frac"] == pytest.approx(x / 604_800 - math.floor(x / 604_800))
    assert u1["t_log10"] == pytest.approx(math.log10(x / 604_800))

    u2 = got["u2"]  # one order, one second before the 7-day window opens
    assert u2["frequency"] == 1 and u2["interval_mean_days"] is None
    assert u2["interval_std_days"] is None
    assert (u2["orders_7d"], u2["orders_30d"], u2["spend_7d"]) == (0, 1, 0.0)
    assert u2["recency_days"] == pytest.approx(7 + 1 / 86400)
    assert (u2["pref_hour"], u2["pref_weekday"]) == (23, 5)
    assert (got["u3"]["orders_90d"], got["u3"]["frequency"]) == (0, 1)
    assert got["u3"]["recency_days"] == pytest.approx((RUN - dt.date(2023, 12, 1)).days - 10 / 24)
    assert out.schema["frequency"].dataType.typeName() == "long"


def test_interval_std_needs_two_gaps_and_history_days_bound(spark):
    rows = [
        ("a1", "u", "i1", 1, 1.0, "2024-03-01 00:00:00", "r", None, None),
        ("a2", "u", "i1", 1, 1.0, "2024-03-02 12:00:00", "r", None, None),
        ("a3", "u", "i1", 1, 1.0, "2024-03-02 12:00:00", "r", None, None),  # same instant
        ("a0", "u", "i1", 1, 1.0, "2024-02-01 00:00:00", "r", None, None),  # beyond 30 days
    ]
    out = time.user_time_features(
        lines_of(spark, rows, days=30), run_date=RUN, timezone="UTC", windows_days=[7],
        time_period_seconds=86_400,
    ).collect()[0]
    assert out["frequency"] == 3
    assert out["interval_mean_days"] == pytest.approx(0.75)
    assert out["interval_std_days"] == pytest.approx(statistics.stdev([1.5, 0.0]))
    assert out["orders_7d"] == 0


def test_days_hours_and_the_boundary_follow_the_configured_time_zone(spark):
    # Sao Paulo is UTC-3 (no summer time in 2024): the run date starts at 03:00 UTC
    rows = [
        ("z1", "u", "i1", 1, 1.0, "2024-03-10 02:59:59", "r", None, None),  # 23:59:59 local
        ("z2", "u", "i1", 1, 1.0, "2024-03-10 03:00:00", "r", None, None),  # run date: out
        ("z3", "u", "i1", 1, 1.0, "2024-03-03 03:00:00", "r", None, None),  # 7 days, 00:00
        ("z4", "u", "i1", 1, 1.0, "2024-03-03 02:59:59", "r", None, None),  # 8 days
    ]
    tz = "America/Sao_Paulo"
    out = time.user_time_features(
        lines_of(spark, rows, timezone=tz), run_date=RUN, timezone=tz, windows_days=[7, 30],
        time_period_seconds=604_800,
    ).collect()[0]
    assert (out["frequency"], out["orders_7d"], out["orders_30d"]) == (3, 2, 3)
    assert out["recency_days"] == pytest.approx(1 / 86400)
    assert out["pref_hour"] == 23  # 23:59:59 twice, 00:00 once (local)


def test_repeat_buyers_count_days_not_orders(spark):
    rows = [
        ("p1", "u", "i1", 1, 1.0, "2024-03-05 09:00:00", "r", None, None),
        ("p2", "u", "i1", 1, 1.0, "2024-03-05 18:00:00", "r", None, None),  # same day: one trip
        ("p3", "v", "i1", 1, 1.0, "2024-03-01 09:00:00", "r", None, None),
        ("p4", "v", "i1", 1, 1.0, "2024-03-02 09:00:00", "r", None, None),  # v comes back
        ("p5", "w", "i1", 1, 1.0, "2024-03-10 09:00:00", "r", None, None),  # the run date: out
        ("p6", "w", "i1", 1, 1.0, "2024-03-08 09:00:00", "r", None, None),
    ]
    got = time.item_time_features(
        lines_of(spark, rows), run_date=RUN, timezone="UTC", windows_days=[7]
    ).collect()
    assert [(r["item_id"], r["buyers"], r["repeat_buyers"]) for r in got] == [("i1", 3, 1)]


def test_item_time_features_by_hand(spark):
    out = time.item_time_features(
        lines_of(spark, PAST + FUTURE), run_date=RUN, timezone="UTC", windows_days=[7, 30, 90]
    )
    got = as_dicts(out, "item_id")
    assert set(got) == {"i1", "i2", "i3"}
    i1 = got["i1"]
    assert i1["category"] == "toys" and got["i3"]["category"] == "unknown"
    assert (i1["orders_7d"], i1["orders_30d"], i1["orders_90d"]) == (1, 2, 2)
    assert (i1["units_7d"], i1["units_30d"], i1["units_90d"]) == (1, 3, 3)
    assert i1["trend"] == pytest.approx((1 / 7 + 1) / (2 / 30 + 1))
    assert i1["last_order_days"] == pytest.approx(7.0)
    # distinct buyers before the run date: i1 u1 (twice) and u3; i2 u1 and u2 (u9 buys it later)
    assert {k: v["buyers"] for k, v in got.items()} == {"i1": 2, "i2": 2, "i3": 1}
    # of those, who bought it on two or more days: u1 bought i1 on 03-01 and 03-03
    assert {k: v["repeat_buyers"] for k, v in got.items()} == {"i1": 1, "i2": 0, "i3": 0}
    hours = [0.0] * 24
    hours[10], hours[0] = 2 / 3, 1 / 3
    assert i1["hour_profile"] == pytest.approx(hours)
    weekdays = [0.0] * 7
    weekdays[4], weekdays[6] = 2 / 3, 1 / 3  # 2023-12-01 and 2024-03-01 are Fridays
    assert i1["weekday_profile"] == pytest.approx(weekdays)
    assert sum(got["i2"]["hour_profile"]) == pytest.approx(1.0)


def test_region_item_features_by_hand(spark):
    a = 2.0
    out = space.region_item_features(lines_of(spark, PAST + FUTURE), run_date=RUN, lift_prior=a)
    got = {(r["region"], r["level"], r["key"]): r.asDict() for r in out.collect()}
    assert {k[0] for k in got} == {"north", "south"}  # 'east' has only a future order
    # north: o1, o2, o5 (N_r = 3); south: o3, o4 (2); market N = 5
    toys = got[("north", "category", "toys")]
    assert toys["orders"] == 3
    assert toys["region_share"] == pytest.approx(1.0)
    assert toys["market_share"] == pytest.approx(3 / 5)
    assert toys["lq"] == pytest.approx(1 / (3 / 5))
    assert toys["lift"] == pytest.approx((3 + a) / (3 * 3 / 5 + a))
    books_s = got[("south", "category", "books")]
    assert books_s["lift"] == pytest.approx((1 + a) / (2 * 2 / 5 + a))
    ranks = {k[2]: v["rank_in_region"] for k, v in got.items() if k[:2] == ("south", "category")}
    assert ranks == {"books": 1, "unknown": 2}  # tied on orders: by key
    ranks = {k[2]: v["rank_in_region"] for k, v in got.items() if k[:2] == ("north", "item")}
    assert ranks == {"i1": 1, "i2": 2}
    no_prior = space.region_item_features(lines_of(spark, PAST), run_date=RUN, lift_prior=0.0)
    for r in no_prior.collect():
        assert r["lift"] == pytest.approx(r["lq"])


def test_user_space_features_home_region_position_and_nulls(spark):
    rows = PAST + [
        # u4: one order in each region; the later one wins although its name sorts last
        ("p1", "u4", "i1", 1, 1.0, "2024-03-05 10:00:00", "east2", 1.0, 2.0),
        ("p2", "u4", "i1", 1, 1.0, "2024-03-06 10:00:00", "west", None, None),
        # u5: tied on count and time: the smaller name
        ("p3", "u5", "i1", 1, 1.0, "2024-03-05 10:00:00", "zeta", None, None),
        ("p4", "u5", "i1", 1, 1.0, "2024-03-05 10:00:00", "alpha", None, None),
    ]
    out = space.user_space_features(
        lines_of(spark, rows + FUTURE), run_date=RUN, geohash_precision=5, map_extent_km=100.0
    )
    got = as_dicts(out, "user_id")
    assert {u: got[u]["home_region"] for u in got} == {
        "u1": "north", "u2": "south", "u3": "north", "u4": "west", "u5": "alpha"
    }
    u1 = got["u1"]
    # the mean (11, 21), kept as the centre of its geohash cell (5 characters)
    lat1, lon1 = reference_cell_centre(11.0, 21.0, 5)
    assert abs(lat1 - 11.0) < 0.03 and abs(lon1 - 21.0) < 0.03
    assert (u1["lat"], u1["lon"], u1["located_orders"]) == pytest.approx((lat1, lon1, 2))
    r = 6371.0088
    assert u1["x_km"] == pytest.approx(r * math.radians(lon1))
    assert u1["y_km"] == pytest.approx(r * math.radians(lat1))
    assert u1["x_mod"] == pytest.approx((r * math.radians(lon1) / 100) % 1)
    lon2 = reference_cell_centre(-5.0, -40.0, 5)[1]
    assert got["u2"]["x_mod"] == pytest.approx((r * math.radians(lon2) / 100) % 1)
    assert got["u2"]["geohash"] == "7p5e9"  # (-5, -40) by the bisection in test_geo
    for user in ("u3", "u5"):
        row = got[user]
        assert row["lat"] is None and row["geohash"] is None and row["x_mod"] is None
        assert row["located_orders"] == 0


def test_adding_orders_after_the_run_date_changes_no_feature(spark):
    def tables_for(rows):
        lines = lines_of(spark, rows)
        params = FeatureSettings(
            timezone="UTC", windows_days=[7, 30, 90], time_period_seconds=604_800,
            lift_prior=20.0, geohash_precision=7, map_extent_km=100.0,
        )
        outputs = features_build.feature_frames(lines, run_date=RUN, params=params)
        return {table.name: frame(df) for table, df in outputs.items()}

    before, after = tables_for(PAST), tables_for(PAST + FUTURE)
    for name, table in before.items():
        pd.testing.assert_frame_equal(table, after[name], obj=name)
        assert len(table) > 0, name


def test_bad_config_and_input_are_reported(spark):
    lines = lines_of(spark, PAST)
    with pytest.raises(ConfigError, match="windows_days"):
        time.user_time_features(lines, run_date=RUN, timezone="UTC", windows_days=[0],
                                time_period_seconds=1)
    with pytest.raises(ConfigError, match="timezone"):
        common.history(orders_df(spark, PAST), run_date=RUN, days=30, timezone="Mars/Olympus")
    with pytest.raises(InputError, match="epoch"):
        time.user_time_features(orders_df(spark, PAST), run_date=RUN, timezone="UTC",
                                windows_days=[7], time_period_seconds=1)


def _settings(warehouse: str, run_date: str):
    return replace(load_settings(), **{"storage.warehouse": warehouse, "run_date": run_date,
                                       "features.history_days": 120})


def test_features_job_twice_leaves_identical_tables_and_other_dates_alone(spark, warehouse):
    # not partitioned by order_date as ingest does: fewer files, same rows
    tables.write(orders_df(spark, PAST + FUTURE), warehouse, catalogue.ORDERS_CLEAN.name)
    tables.write(items_df(spark), warehouse, catalogue.ITEMS.name)
    names = [catalogue.USER_TIME_FEATURES.name, catalogue.ITEM_TIME_FEATURES.name, catalogue.REGION_ITEM_FEATURES.name,
             catalogue.USER_SPACE_FEATURES.name]

    def snapshot():
        return {name: frame(tables.read(spark, warehouse, name)) for name in names}

    run_stage(spark, _settings(warehouse, "2024-03-05"), FEATURES)
    first_result = run_stage(spark, _settings(warehouse, "2024-03-10"), FEATURES)
    first = snapshot()
    second_result = run_stage(spark, _settings(warehouse, "2024-03-10"), FEATURES)
    second = snapshot()
    assert first_result.rows_out == second_result.rows_out > 0
    for name in names:
        pd.testing.assert_frame_equal(first[name], second[name], obj=name)
        dates = set(second[name]["run_date"])
        assert dates == {dt.date(2024, 3, 5), dt.date(2024, 3, 10)}, name
    users = second[catalogue.USER_TIME_FEATURES.name]
    assert set(users[users.run_date == dt.date(2024, 3, 5)].user_id) == {"u1", "u2", "u3"}
    assert users[users.run_date == dt.date(2024, 3, 5)].frequency.sum() == 4  # o1, o2, o4, o5


def test_features_for_a_date_after_the_history_window_warn_with_the_orders_span(
    spark, warehouse, caplog
):
    tables.write(orders_df(spark, PAST), warehouse, catalogue.ORDERS_CLEAN.name)
    tables.write(items_df(spark), warehouse, catalogue.ITEMS.name)
    far = _settings(warehouse, "2030-01-01")
    with caplog.at_level("WARNING", logger="stpipe.features"):
        result = run_stage(spark, far, FEATURES)
    assert result.rows_in == 0
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("no order line" in m and "2030-01-01" in m and "2024-03-0" in m for m in warned), warned
