"""``sales_series`` on hand-made logs (values by hand) and on real Olist orders (pandas)."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from conftest import OLIST_DIR, needs_shared

from stpipe import catalogue, tables
from stpipe.config import load_settings, replace
from stpipe.errors import ConfigError
from stpipe.schema import ITEMS, ORDERS_CLEAN
from stpipe.stages import SERIES, run_stage
from stpipe.stages import series as series_job

RUN = dt.date(2024, 3, 10)
D = dt.date

# order_id, item_id, quantity, unit_price, ts (UTC), region
PAST = [
    ("s1", "i1", 2, 5.0, "2024-03-05 10:00:00", "north"),
    ("s1", "i2", 1, 10.0, "2024-03-05 10:00:00", "north"),
    ("s2", "i1", 3, 5.0, "2024-03-07 23:59:59", "south"),
    ("s3", "i1", 1, 5.0, "2024-03-07 00:00:00", "north"),
    ("s4", "i1", 7, 5.0, "2024-03-04 23:59:59", "north"),  # the day before the span
]
FUTURE = [
    ("s5", "i1", 9, 5.0, "2024-03-10 00:00:00", "north"),  # the run date itself
    ("s6", "i3", 9, 5.0, "2024-03-11 09:00:00", "west"),
]


def orders_df(spark, rows):
    records = []
    for i, (order_id, item, qty, price, when, region) in enumerate(rows):
        t = dt.datetime.fromisoformat(when)
        records.append((order_id, i, "u", item, qty, price, t, region, None, None, None, "test",
                        t.date()))
    return spark.createDataFrame(records, ORDERS_CLEAN)


def items_df(spark):
    return spark.createDataFrame(
        [("i1", "t", "toys", None, "test"), ("i2", "t", "books", None, "test"),
         ("i3", "t", "garden", None, "test")],
        ITEMS,
    )


def series_of(spark, rows, *, measure="units", timezone="UTC", days=5):
    out = series_job.transform(
        orders_df(spark, rows), items_df(spark), run_date=RUN, series_days=days,
        measure=measure, timezone=timezone,
    )
    return out


def as_map(df):
    return {(r["series_id"], r["date"]): r["value"] for r in df.collect()}


def dense(values: dict[D, float], days=range(5, 10)) -> dict[D, float]:
    return {D(2024, 3, d): values.get(D(2024, 3, d), 0.0) for d in days}


def test_units_zero_filled_with_both_kinds_by_hand(spark):
    out = series_of(spark, PAST + FUTURE)
    rows = out.collect()
    got = {(r["series_id"], r["date"]): r["value"] for r in rows}
    expected = {
        "region=north|category=toys": dense({D(2024, 3, 5): 2.0, D(2024, 3, 7): 1.0}),
        "region=south|category=toys": dense({D(2024, 3, 7): 3.0}),
        "region=north|category=books": dense({D(2024, 3, 5): 1.0}),
        "category=toys": dense({D(2024, 3, 5): 2.0, D(2024, 3, 7): 4.0}),
        "category=books": dense({D(2024, 3, 5): 1.0}),
    }
    assert got == {(s, d): v for s, days in expected.items() for d, v in days.items()}
    meta = {r["series_id"]: (r["kind"], r["region"], r["category"]) for r in rows}
    assert meta["category=toys"] == ("category", None, "toys")
    assert meta["region=south|category=toys"] == ("region_category", "south", "toys")
    assert {r["run_date"] for r in rows} == {RUN}
    assert [f.name for f in out.schema.fields] == [
        "run_date", "series_id", "kind", "region", "category", "date", "value"
    ]
    assert out.schema["value"].dataType.typeName() == "double"


def test_orders_and_revenue_measures(spark):
    orders = as_map(series_of(spark, PAST, measure="orders"))
    assert orders[("category=toys", D(2024, 3, 7))] == 2.0  # s2 and s3
    assert orders[("region=north|category=toys", D(2024, 3, 5))] == 1.0
    assert orders[("category=toys", D(2024, 3, 6))] == 0.0  # a date with no orders
    revenue = as_map(series_of(spark, PAST, measure="revenue"))
    assert revenue[("category=toys", D(2024, 3, 7))] == pytest.approx(20.0)
    assert revenue[("category=books", D(2024, 3, 5))] == pytest.approx(10.0)


def test_days_follow_the_configured_time_zone(spark):
    # Tokyo is UTC+9: s2 (03-07 23:59:59 UTC) falls on 03-08; s4 (03-04 23:59:59) on 03-05;
    # the run date starts at 03-09 15:00 UTC, so nothing is cut by it here
    got = as_map(series_of(spark, PAST, timezone="Asia/Tokyo"))
    assert got[("region=south|category=toys", D(2024, 3, 8))] == 3.0
    assert got[("region=south|category=toys", D(2024, 3, 7))] == 0.0
    assert got[("category=toys", D(2024, 3, 5))] == 9.0  # s1 2 + s4 7


def test_future_orders_change_nothing_and_bad_measure_is_refused(spark):
    before = series_of(spark, PAST).toPandas().sort_values(["series_id", "date"])
    after = series_of(spark, PAST + FUTURE).toPandas().sort_values(["series_id", "date"])
    pd.testing.assert_frame_equal(before.reset_index(drop=True), after.reset_index(drop=True))
    with pytest.raises(ConfigError, match="series_measure"):
        series_of(spark, PAST, measure="visits")


def test_series_job_twice_leaves_identical_tables(spark, warehouse):
    # not partitioned by order_date as ingest does: fewer files, same rows
    tables.write(orders_df(spark, PAST + FUTURE), warehouse, catalogue.ORDERS_CLEAN.name)
    tables.write(items_df(spark), warehouse, catalogue.ITEMS.name)
    settings = replace(load_settings(), **{
        "storage.warehouse": warehouse, "run_date": str(RUN), "features.series_days": 5,
    })
    other = replace(settings, run_date="2024-03-08")
    run_stage(spark, other, SERIES)
    first = run_stage(spark, settings, SERIES)
    snap1 = tables.read(spark, warehouse, catalogue.SALES_SERIES.name).toPandas()
    second = run_stage(spark, settings, SERIES)
    snap2 = tables.read(spark, warehouse, catalogue.SALES_SERIES.name).toPandas()
    key = ["run_date", "series_id", "date"]
    pd.testing.assert_frame_equal(
        snap1.sort_values(key).reset_index(drop=True), snap2.sort_values(key).reset_index(drop=True)
    )
    assert first.rows_out == second.rows_out == 25
    # the 2024-03-08 slice (days 03-03..03-07) is untouched: the same 5 series, s4 included
    older = snap2[snap2.run_date == D(2024, 3, 8)]
    assert len(older) == 25
    assert older[older.series_id == "category=toys"].value.sum() == 2 + 3 + 1 + 7


# ---- real data: Olist order items joined to orders, customers and products ----------------


@pytest.fixture(scope="module")
def olist():
    def read(name):
        return pd.read_csv(OLIST_DIR / f"olist_{name}_dataset.csv.gz", dtype=str)

    orders = read("orders")
    items = read("order_items")
    customers = read("customers")
    products = read("products")
    orders = orders[orders.order_purchase_timestamp.between("2018-01-01", "2018-04-15")]
    lines = items.merge(orders, on="order_id").merge(customers, on="customer_id")
    lines = lines.merge(products[["product_id", "product_category_name"]], on="product_id",
                        how="left")
    lines = pd.DataFrame({
        "order_id": lines.order_id,
        "line_no": lines.order_item_id.astype("int32"),
        "user_id": lines.customer_unique_id,
        "item_id": lines.product_id,
        "quantity": 1,
        "unit_price": lines.price.astype(float),
        "ts": pd.to_datetime(lines.order_purchase_timestamp),
        "region": lines.customer_state,
        "category": lines.product_category_name.fillna("unknown"),
    })
    return lines


@pytest.mark.slow
@needs_shared
def test_real_olist_series_match_pandas(spark, olist):
    run_date, days = D(2018, 4, 1), 60
    cat = olist[["item_id", "category"]].drop_duplicates("item_id")
    items = spark.createDataFrame(
        cat.assign(title=cat.category, description=None, source="olist")[
            ["item_id", "title", "category", "description", "source"]], ITEMS)
    frame = olist.drop(columns="category").assign(
        quantity=lambda d: d.quantity.astype("int32"), city=None, lat=None, lon=None,
        source="olist", order_date=lambda d: d.ts.dt.date)
    orders = spark.createDataFrame(frame[[f.name for f in ORDERS_CLEAN.fields]], ORDERS_CLEAN)
    got = series_job.transform(orders, items, run_date=run_date, series_days=days,
                               measure="revenue", timezone="America/Sao_Paulo").toPandas()

    # independent: local day by pandas' tz conversion, groupby, reindex on the full calendar
    local = olist.ts.dt.tz_localize("UTC").dt.tz_convert("America/Sao_Paulo")
    df = olist.assign(date=local.dt.date, revenue=olist.unit_price * olist.quantity)
    calendar = [run_date - dt.timedelta(days=k) for k in range(days, 0, -1)]
    df = df[df.date.isin(calendar)]
    per_cat = df.groupby(["category", "date"]).revenue.sum()
    per_rc = df.groupby(["region", "category", "date"]).revenue.sum()
    assert len(got) == (per_cat.reset_index().category.nunique()
                        + len(per_rc.reset_index()[["region", "category"]].drop_duplicates())
                        ) * days
    cats = got[got.kind == "category"]
    for category, group in cats.groupby("category"):
        want = per_cat.loc[category].reindex(calendar, fill_value=0.0)
        have = group.set_index("date").value.sort_index()
        assert list(have.index) == calendar
        assert have.values == pytest.approx(want.values), category
    rc = got[got.kind == "region_category"].set_index(["region", "category", "date"]).value
    joined = rc.to_frame("have").join(per_rc.rename("want")).fillna({"want": 0.0})
    assert joined.have.values == pytest.approx(joined.want.values)
    assert rc.sum() == pytest.approx(per_rc.sum())
