"""Feature tables on real data, each checked against an independent pandas computation.

orders_clean-shaped frames are built here from the raw CSVs (ingest is not used):
Online Retail lines with a CustomerID, positive quantity and price, no cancellation;
Olist order items joined to orders, customers, products and zip-prefix coordinates.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import pandas as pd
import pytest
from conftest import OLIST_DIR, RETAIL_FILE, needs_shared
from test_geo import _reference_geohash, reference_cell_centre

from stpipe.features import build as features_job
from stpipe.features import space, time
from stpipe.schema import ITEMS, ORDERS_CLEAN

pytestmark = [pytest.mark.slow, needs_shared]

T_SECONDS = 604_800
WINDOWS = [7, 30, 90]


def to_spark(spark, lines: pd.DataFrame, source: str):
    frame = lines.assign(
        quantity=lines.quantity.astype("int32"), line_no=lines.line_no.astype("int32"),
        source=source, order_date=lines.ts.dt.date,
    )
    for col in ("city", "lat", "lon"):
        if col not in frame:
            frame[col] = None
    orders = spark.createDataFrame(frame[[f.name for f in ORDERS_CLEAN.fields]], ORDERS_CLEAN)
    cats = lines[["item_id", "category"]].drop_duplicates("item_id")
    items = spark.createDataFrame(
        cats.assign(title=cats.category, description=None, source=source)[
            ["item_id", "title", "category", "description", "source"]], ITEMS)
    return orders, items


# ---- Online Retail: temporal features, in Europe/London (summer time from 2011-03-27) ---

RETAIL_RUN = dt.date(2011, 6, 1)
RETAIL_TZ = "Europe/London"
RETAIL_HISTORY = 120


@pytest.fixture(scope="module")
def retail():
    raw = pd.read_csv(RETAIL_FILE, dtype=str, keep_default_na=False)
    raw = raw[(raw.CustomerID != "") & ~raw.InvoiceNo.str.startswith(("C", "A"))]
    raw = raw[(raw.Quantity.astype(int) > 0) & (raw.UnitPrice.astype(float) > 0)]
    user = raw.CustomerID.astype(float).astype(int)
    raw = raw[user % 6 == 0]  # a sample of customers, all their lines
    return pd.DataFrame({
        "order_id": raw.InvoiceNo.values,
        "line_no": np.arange(len(raw)),
        "user_id": raw.CustomerID.astype(float).astype(int).astype(str).values,
        "item_id": raw.StockCode.values,
        "quantity": raw.Quantity.astype(int).values,
        "unit_price": raw.UnitPrice.astype(float).values,
        "ts": pd.to_datetime(raw.InvoiceDate).values,
        "region": raw.Country.values,
        "category": ("code_" + raw.StockCode.str[0]).values,
    })


@pytest.fixture(scope="module")
def retail_history(retail):
    """The lines the features may see, with local time, computed by pandas."""
    local = retail.ts.dt.tz_localize("UTC").dt.tz_convert(RETAIL_TZ)
    cutoff = pd.Timestamp(RETAIL_RUN, tz=RETAIL_TZ)
    start = pd.Timestamp(RETAIL_RUN - dt.timedelta(days=RETAIL_HISTORY), tz=RETAIL_TZ)
    keep = (local >= start) & (local < cutoff)
    df = retail[keep].assign(local=local[keep])
    df["days_ago"] = (pd.Timestamp(RETAIL_RUN) - df.local.dt.tz_localize(None).dt.normalize()).dt.days
    df["spend"] = df.quantity * df.unit_price
    df["epoch"] = df.ts.astype("int64") // 10**9
    return df, int(cutoff.timestamp())


def lowest_mode(values: pd.Series) -> int:
    counts = values.value_counts()
    return int(min(counts[counts == counts.max()].index))


def test_real_retail_user_time_features(spark, retail, retail_history):
    hist, cutoff = retail_history
    orders, items = to_spark(spark, retail, "online_retail")
    lines = features_job.history_lines(orders, items, run_date=RETAIL_RUN,
                                       history_days=RETAIL_HISTORY, timezone=RETAIL_TZ)
    got = time.user_time_features(
        lines, run_date=RETAIL_RUN, timezone=RETAIL_TZ, windows_days=WINDOWS,
        time_period_seconds=T_SECONDS,
    ).toPandas().set_index("user_id")

    per_order = hist.sort_values("ts").groupby(["user_id", "order_id"]).agg(
        epoch=("epoch", "min"), spend=("spend", "sum"), days_ago=("days_ago", "max"),
        hour=("local", lambda s: s.min().hour), weekday=("local", lambda s: s.min().weekday()),
    ).reset_index()
    assert set(got.index) == set(per_order.user_id)
    assert len(got) > 100
    for user, g in per_order.groupby("user_id"):
        row = got.loc[user]
        times = np.sort(g.epoch.values)
        gaps = np.diff(times) / 86400
        x = times[-1] / T_SECONDS
        expected = {
            "frequency": len(g),
            "monetary": g.spend.sum(),
            "recency_days": (cutoff - times[-1]) / 86400,
            "interval_mean_days": gaps.mean() if len(gaps) else None,
            "interval_std_days": gaps.std(ddof=1) if len(gaps) > 1 else None,
            "pref_hour": lowest_mode(g.hour),
            "pref_weekday": lowest_mode(g.weekday),
            "t_mod": x % 1, "t_frac": x - math.floor(x), "t_log10": math.log10(x),
        }
        for w in WINDOWS:
            inside = g[g.days_ago <= w]
            expected[f"orders_{w}d"] = len(inside)
            expected[f"spend_{w}d"] = inside.spend.sum()
        expected["hour_sin"] = math.sin(2 * math.pi * expected["pref_hour"] / 24)
        expected["weekday_cos"] = math.cos(2 * math.pi * expected["pref_weekday"] / 7)
        for col, want in expected.items():
            have = row[col]
            if want is None:
                assert have is None or pd.isna(have), (user, col)
            else:
                assert have == pytest.approx(want, rel=1e-9, abs=1e-9), (user, col)


def test_real_retail_item_time_features(spark, retail, retail_history):
    hist, cutoff = retail_history
    orders, items = to_spark(spark, retail, "online_retail")
    lines = features_job.history_lines(orders, items, run_date=RETAIL_RUN,
                                       history_days=RETAIL_HISTORY, timezone=RETAIL_TZ)
    got = time.item_time_features(
        lines, run_date=RETAIL_RUN, timezone=RETAIL_TZ, windows_days=WINDOWS
    ).toPandas().set_index("item_id")
    per_order = hist.groupby(["item_id", "order_id"]).agg(
        first=("local", "min"), epoch=("epoch", "min"), units=("quantity", "sum"),
        category=("category", "first"),
    ).reset_index()
    per_order["days_ago"] = (
        pd.Timestamp(RETAIL_RUN) - per_order["first"].dt.tz_localize(None).dt.normalize()
    ).dt.days
    assert set(got.index) == set(per_order.item_id)
    for item, g in list(per_order.groupby("item_id"))[:400]:
        row = got.loc[item]
        assert row.category == g.category.iloc[0]
        for w in WINDOWS:
            assert row[f"orders_{w}d"] == (g.days_ago <= w).sum(), (item, w)
            assert row[f"units_{w}d"] == g[g.days_ago <= w].units.sum(), (item, w)
        assert row.trend == pytest.approx(
            ((g.days_ago <= 7).sum() / 7 + 1) / ((g.days_ago <= 30).sum() / 30 + 1)
        )
        assert row.last_order_days == pytest.approx((cutoff - g.epoch.max()) / 86400)
        hours = g["first"].dt.hour.value_counts(normalize=True).reindex(range(24), fill_value=0)
        assert list(row.hour_profile) == pytest.approx(list(hours.values))
        days = g["first"].dt.weekday.value_counts(normalize=True).reindex(range(7), fill_value=0)
        assert list(row.weekday_profile) == pytest.approx(list(days.values))


# ---- Olist: spatial features (states as regions, zip-prefix coordinates) ----------------

OLIST_RUN = dt.date(2018, 3, 1)
PRIOR = 20.0


@pytest.fixture(scope="module")
def olist():
    def read(name):
        return pd.read_csv(OLIST_DIR / f"{name}.csv.gz", dtype=str)

    orders = read("olist_orders_dataset")
    orders = orders[orders.order_purchase_timestamp.between("2017-09-01", "2018-03-15")]
    lines = (
        read("olist_order_items_dataset").merge(orders, on="order_id")
        .merge(read("olist_customers_dataset"), on="customer_id")
        .merge(read("olist_products_dataset")[["product_id", "product_category_name"]],
               on="product_id", how="left")
    )
    geo = read("olist_geolocation_dataset")
    geo = geo.assign(lat=geo.geolocation_lat.astype(float), lon=geo.geolocation_lng.astype(float))
    zips = geo.groupby("geolocation_zip_code_prefix")[["lat", "lon"]].mean()
    lines = lines.join(zips, on="customer_zip_code_prefix")
    return pd.DataFrame({
        "order_id": lines.order_id.values,
        "line_no": lines.order_item_id.astype(int).values,
        "user_id": lines.customer_unique_id.values,
        "item_id": lines.product_id.values,
        "quantity": 1,
        "unit_price": lines.price.astype(float).values,
        "ts": pd.to_datetime(lines.order_purchase_timestamp).values,
        "region": lines.customer_state.values,
        "city": lines.customer_city.values,
        "lat": lines.lat.values,
        "lon": lines.lon.values,
        "category": lines.product_category_name.fillna("unknown").values,
    })


def olist_lines(spark, olist):
    orders, items = to_spark(spark, olist, "olist")
    return features_job.history_lines(orders, items, run_date=OLIST_RUN, history_days=365,
                                      timezone="UTC")


def test_real_olist_region_item_features(spark, olist):
    got = space.region_item_features(olist_lines(spark, olist), run_date=OLIST_RUN,
                                     lift_prior=PRIOR).toPandas()
    hist = olist[olist.ts < pd.Timestamp(OLIST_RUN)]
    n_r = hist.groupby("region").order_id.nunique()
    n = n_r.sum()
    for level, col in (("item", "item_id"), ("category", "category")):
        pairs = hist[["region", col, "order_id"]].drop_duplicates()
        n_rk = pairs.groupby(["region", col]).size().rename("orders").reset_index()
        n_k = n_rk.groupby(col).orders.sum()
        exp = n_rk.assign(
            region_share=n_rk.orders / n_rk.region.map(n_r),
            market_share=n_rk[col].map(n_k) / n,
        )
        exp["lift"] = (exp.orders + PRIOR) / (exp.region.map(n_r) * exp[col].map(n_k) / n + PRIOR)
        exp = exp.sort_values(["region", "orders", col], ascending=[True, False, True])
        exp["rank_in_region"] = exp.groupby("region").cumcount() + 1
        have = got[got.level == level].rename(columns={"key": col})
        merged = exp.merge(have, on=["region", col], suffixes=("", "_got"), validate="1:1")
        assert len(merged) == len(exp) == len(have)
        for c in ("orders", "region_share", "market_share", "lift", "rank_in_region"):
            assert merged[f"{c}_got"].values == pytest.approx(merged[c].values), (level, c)
    # thin regions are shrunk: no smoothed lift is further from 1 than the raw quotient
    assert ((got.lift - 1).abs() <= (got.lq - 1).abs() + 1e-12).all()


def test_real_olist_user_space_features(spark, olist):
    got = space.user_space_features(olist_lines(spark, olist), run_date=OLIST_RUN,
                                    geohash_precision=6, map_extent_km=100.0)
    got = got.toPandas().set_index("user_id")
    hist = olist[olist.ts < pd.Timestamp(OLIST_RUN)]
    per_order = hist.groupby(["user_id", "order_id"]).agg(
        region=("region", "min"), ts=("ts", "min"), lat=("lat", "mean"), lon=("lon", "mean")
    ).reset_index()
    assert set(got.index) == set(per_order.user_id)
    regions = per_order.groupby(["user_id", "region"]).agg(n=("ts", "size"), last=("ts", "max"))
    regions = regions.reset_index().sort_values(
        ["user_id", "n", "last", "region"], ascending=[True, False, False, True])
    home = regions.drop_duplicates("user_id").set_index("user_id").region
    assert (got.home_region == home.reindex(got.index)).all()
    pos = per_order.groupby("user_id")[["lat", "lon"]].mean()  # mean skips missing positions
    pos = pos.reindex(got.index)
    located = pos.lat.notna()
    assert (got.lat.notna() == located).all() and located.mean() > 0.8
    want_hash = [_reference_geohash(a, b, 6) for a, b in zip(pos.lat[located], pos.lon[located],
                                                             strict=True)]
    assert list(got.geohash[located]) == want_hash
    # positions are the centres of those cells (about 1.2 x 0.6 km), never finer
    centres = np.array([reference_cell_centre(a, b, 6) for a, b in
                        zip(pos.lat[located], pos.lon[located], strict=True)])
    assert got.lat[located].values == pytest.approx(centres[:, 0])
    assert got.lon[located].values == pytest.approx(centres[:, 1])
    assert np.abs(got.lat[located].values - pos.lat[located].values).max() < 0.003
    r = 6371.0088
    x = np.radians(centres[:, 1]) * r
    y = np.radians(centres[:, 0]) * r
    assert got.x_mod[located].values == pytest.approx(np.mod(x / 100.0, 1.0))
    assert got.y_mod[located].values == pytest.approx(np.mod(y / 100.0, 1.0))
    assert got.geohash[~located].isna().all()
