"""The adapters on the real data sets (../shared/datasets): counts reconcile with an
independent pandas reading of the raw csv.gz files, and each quirk listed in the data
sets' READMEs ends in quarantine with its reason or is normalised.

Online Retail: the whole file is read by the adapter for the row count; the full
pipeline runs on a sample (the first 5,000 lines plus every line showing a quirk).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from pathlib import Path

import deltalake
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from stpipe import catalogue, tables
from stpipe.adapters import read_source
from stpipe.config import load_settings
from stpipe.stages import INGEST, ingest, run_stage
from tests.conftest import OLIST_DIR, RETAIL_FILE, needs_shared, pseudonym_of
from tests.test_geo import reference_cell_centre

pytestmark = [pytest.mark.slow, needs_shared]

# From the Online Retail README: stock codes that are not products.
NOT_PRODUCTS = re.compile(r"^(POST|DOT|M|D|S|C2|CRUK|BANK CHARGES|AMAZONFEE|B|PADS|DCGS.*|GIFT_0001_.*)$")


def _settings(warehouse, source, path, date):
    return load_settings(
        None,
        {"storage.warehouse": warehouse, "run_date": date, "ingest.source": source, "ingest.input": str(path)},
    )


# ----------------------------------------------------------------------------------
# Online Retail
# ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def retail_pd():
    return pd.read_csv(RETAIL_FILE, dtype=str, keep_default_na=False)


def test_retail_adapter_reads_every_line(spark, tmp_path, retail_pd):
    s = _settings(str(tmp_path), "online_retail", RETAIL_FILE, "2011-07-01")
    raw = read_source(spark, s.ingest).orders
    assert len(retail_pd) == 245_903
    assert raw.count() == len(retail_pd)
    cancels = raw.where(F.col("reject_reason") == "cancellation").count()
    assert cancels == int(retail_pd.InvoiceNo.str.startswith("C").sum())


def _expected_retail(df: pd.DataFrame) -> tuple[int, dict[str, int]]:
    """Independent pandas rendering of the documented rules (README + reason table)."""
    inv = df.InvoiceNo.str.strip().str.upper()
    code = df.StockCode.str.strip().str.upper()
    qty = pd.to_numeric(df.Quantity, errors="coerce")
    price = pd.to_numeric(df.UnitPrice, errors="coerce")
    reason = pd.Series(None, index=df.index, dtype=object)

    def mark(mask, name):
        reason[mask & reason.isna()] = name

    mark(inv.str.startswith("C"), "cancellation")
    mark(inv.str.startswith("A"), "bad_debt_adjustment")
    mark(code.map(lambda c: bool(NOT_PRODUCTS.match(c))), "non_product_code")
    mark(qty < 0, "return_or_adjustment")
    mark(df.CustomerID.str.strip() == "", "missing_user_id")
    mark(df.Country.str.strip().str.lower().isin(["unspecified", "unknown", "n/a"]), "missing_region")
    mark(qty <= 0, "non_positive_quantity")
    mark(qty > 10_000, "absurd_quantity")
    mark(price <= 0, "non_positive_price")
    ok = reason.isna()
    dup = df[ok].duplicated(keep="first")
    reason[dup[dup].index] = "duplicate_row"
    counts = reason.value_counts().to_dict()
    return int(reason.isna().sum()), {k: int(v) for k, v in sorted(counts.items())}


@pytest.fixture(scope="module")
def retail_run(spark, tmp_path_factory, retail_pd):
    df = retail_pd
    code = df.StockCode.str.strip().str.upper()
    qty = pd.to_numeric(df.Quantity, errors="coerce")
    quirky = (
        df.Country.isin(["Unspecified", "RSA", "EIRE", "European Community", "Channel Islands"])
        | (qty.abs() > 10_000)
        | (pd.to_numeric(df.UnitPrice, errors="coerce") <= 0)
        | code.map(lambda c: bool(NOT_PRODUCTS.match(c)))
        | df.duplicated(keep=False)
    )
    sample = df[(df.index < 5_000) | quirky]
    folder = tmp_path_factory.mktemp("retail")
    path = folder / "sample.csv.gz"
    sample.to_csv(path, index=False)
    warehouse = str(folder / "wh")
    with _captured_log() as logged:
        result = run_stage(spark, _settings(warehouse, "online_retail", path, "2011-07-01"), INGEST)
    clean = tables.read(spark, warehouse, catalogue.ORDERS_CLEAN.name)
    return {
        "warehouse": warehouse,
        "log": "\n".join(logged),
        "sample": sample,
        "result": result,
        "clean": clean.toPandas(),
        catalogue.ITEMS.name: tables.read(spark, warehouse, catalogue.ITEMS.name).toPandas(),
        "reasons": ingest.counts_by_reason(spark, warehouse, "online_retail"),
    }


@contextlib.contextmanager
def _captured_log():
    """Every log line stpipe writes inside the block (a module fixture cannot use caplog)."""
    lines: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("stpipe")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# Item and order fields share the ids' spelling by nature (Online Retail stock codes and row
# numbers are 5-digit numbers too; an item without a description is titled by its code) and
# hold no person: left out of the scan.
NOT_PERSONAL = {"item_id", "order_id", "line_no", "source_row", "quantity", "unit_price",
                "title", "description", "category"}
NOT_PERSONAL_FIELDS = {"StockCode", "InvoiceNo", "Quantity", "UnitPrice", "Description",
                       "order_id", "product_id", "order_item_id", "price"}


def _every_value(warehouse: str) -> set[str]:
    """Each text value of each table (JSON records opened), but item and order fields."""
    found: set[str] = set()
    for t in catalogue.ALL:
        path = Path(warehouse) / t.name
        if not path.is_dir():
            continue
        df = deltalake.DeltaTable(str(path)).to_pandas()
        for column in df.columns:
            if column in NOT_PERSONAL or df[column].dtype != object:
                continue
            values = df[column].dropna().astype(str)
            found.update(values)
            if column == "raw_record":
                for v in values:
                    found.update(
                        str(x) for k, x in json.loads(v).items() if k not in NOT_PERSONAL_FIELDS
                    )
    return found


def _raw_ids_found(warehouse: str, log_text: str, raw_ids: set[str]) -> tuple[set[str], list[str]]:
    in_tables = raw_ids & _every_value(warehouse)
    # a raw id as a whole word in the log (pseudonyms are 32 hex digits: no false hits there)
    words = set(re.findall(r"[\w.-]+", log_text))
    return in_tables, sorted(raw_ids & words)


def test_retail_no_raw_customer_id_in_any_table_or_the_log(retail_run):
    raw = {c.strip() for c in retail_run["sample"].CustomerID if c.strip()}
    raw |= {c.removesuffix(".0") for c in raw}
    assert len(raw) > 100
    assert _raw_ids_found(retail_run["warehouse"], retail_run["log"], raw) == (set(), [])


def test_olist_no_raw_customer_id_in_any_table_or_the_log(olist_run):
    customers = _olist("olist_customers_dataset")
    raw = set(customers.customer_unique_id) | set(customers.customer_id)
    assert _raw_ids_found(olist_run["warehouse"], olist_run["log"], raw) == (set(), [])


def test_retail_counts_reconcile_with_pandas(retail_run):
    n_clean, reasons = _expected_retail(retail_run["sample"])
    r = retail_run["result"]
    assert r.rows_in == len(retail_run["sample"]) == r.rows_out + r.details["quarantined"]
    assert r.rows_out == n_clean
    assert retail_run["reasons"] == reasons


def test_retail_quirk_cancellations(retail_run):
    assert retail_run["reasons"]["cancellation"] == int(retail_run["sample"].InvoiceNo.str.startswith("C").sum()) > 0


def test_retail_quirk_non_product_codes(retail_run):
    clean_codes = set(retail_run["clean"].item_id)
    assert not {c for c in clean_codes if NOT_PRODUCTS.match(c)}
    assert retail_run["reasons"]["non_product_code"] > 0


def test_retail_quirk_missing_customer_and_float_ids(retail_run):
    users = set(retail_run["clean"].user_id)
    raw = retail_run["sample"].CustomerID.str.strip()
    # 17850.0 -> 17850, then the pseudonym: every clean user is a sampled customer's
    expected = {pseudonym_of("online_retail", c.removesuffix(".0")) for c in raw if c}
    assert pseudonym_of("online_retail", "17850") in users
    assert users <= expected and len(users) > 100
    assert retail_run["reasons"]["missing_user_id"] > 0


def test_retail_quirk_countries(retail_run):
    regions = set(retail_run["clean"].region)
    assert {"Ireland", "United Kingdom", "Channel Islands", "European Community"} <= regions
    assert not {"EIRE", "Unspecified"} & regions  # (RSA does not occur before July 2011)
    s = retail_run["sample"]
    assert retail_run["reasons"]["missing_region"] == int(((s.Country == "Unspecified") & _plain(s)).sum()) > 0


def _plain(df: pd.DataFrame) -> pd.Series:
    """Rows no earlier rule rejects (for a count of a later reason)."""
    code = df.StockCode.str.strip().str.upper()
    qty = pd.to_numeric(df.Quantity, errors="coerce")
    return (
        ~df.InvoiceNo.str.startswith(("C", "A"))
        & ~code.map(lambda c: bool(NOT_PRODUCTS.match(c)))
        & (qty >= 0)
        & (df.CustomerID != "")
    )


def test_retail_quirk_negative_quantities_and_outliers(retail_run):
    assert (retail_run["clean"].quantity > 0).all() and (retail_run["clean"].quantity <= 10_000).all()
    assert retail_run["reasons"]["return_or_adjustment"] > 0
    assert retail_run["reasons"]["absurd_quantity"] >= 1  # the 74,215-unit order


def test_retail_quirk_zero_prices(retail_run):
    assert (retail_run["clean"].unit_price > 0).all()
    assert retail_run["reasons"]["non_positive_price"] > 0


def test_retail_quirk_exact_duplicates(retail_run):
    assert retail_run["reasons"]["duplicate_row"] > 0
    c = retail_run["clean"]
    assert not c.duplicated(["order_id", "line_no"]).any()


def test_retail_quirk_descriptions_trimmed_and_one_per_code(retail_run):
    items = retail_run[catalogue.ITEMS.name]
    assert items.item_id.is_unique
    assert (items.title == items.title.str.strip()).all()
    assert not items.title.str.contains("  ").any()


def test_retail_quirk_uk_local_time_to_utc(retail_run):
    s = retail_run["sample"]
    c = retail_run["clean"]
    first = s.iloc[0]
    row = c[(c.order_id == first.InvoiceNo) & (c.line_no == 1)].iloc[0]
    # December: GMT = UTC
    assert pd.Timestamp(row.ts) == pd.Timestamp(first.InvoiceDate)
    june = s[s.InvoiceDate.str.startswith("2011-06") & s.InvoiceNo.isin(c.order_id)].iloc[0]
    got = c[c.order_id == june.InvoiceNo].ts.min()
    local = pd.Timestamp(june.InvoiceDate).tz_localize("Europe/London").tz_convert("UTC").tz_localize(None)
    assert pd.Timestamp(got) == local == pd.Timestamp(june.InvoiceDate) - pd.Timedelta(hours=1)


# ----------------------------------------------------------------------------------
# Olist
# ----------------------------------------------------------------------------------


def _olist(name: str) -> pd.DataFrame:
    return pd.read_csv(OLIST_DIR / f"{name}.csv.gz", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def olist_run(spark, tmp_path_factory):
    warehouse = str(tmp_path_factory.mktemp("olist") / "wh")
    with _captured_log() as logged:
        result = run_stage(spark, _settings(warehouse, "olist", OLIST_DIR, "2018-11-01"), INGEST)
    return {
        "warehouse": warehouse,
        "log": "\n".join(logged),
        "result": result,
        "clean": tables.read(spark, warehouse, catalogue.ORDERS_CLEAN.name).toPandas(),
        catalogue.ITEMS.name: tables.read(spark, warehouse, catalogue.ITEMS.name).toPandas(),
        catalogue.REVIEWS.name: tables.read(spark, warehouse, catalogue.REVIEWS.name).toPandas(),
        "reasons": ingest.counts_by_reason(spark, warehouse, "olist"),
    }


def test_olist_counts_reconcile_with_pandas(olist_run):
    orders, items = _olist("olist_orders_dataset"), _olist("olist_order_items_dataset")
    without_items = ~orders.order_id.isin(items.order_id)
    status = items.merge(orders[["order_id", "order_status"]], on="order_id").order_status
    r = olist_run["result"]
    assert int(without_items.sum()) == 155
    assert r.rows_in == len(items) + int(without_items.sum()) == 23_707 + 155
    assert r.rows_in == r.rows_out + r.details["quarantined"]
    assert olist_run["reasons"] == {
        "cancellation": int((status == "canceled").sum()),
        "order_not_fulfilled": int((status == "unavailable").sum()),
        "order_without_items": 155,
    }
    assert r.rows_out == int(((status != "canceled") & (status != "unavailable")).sum())


def test_olist_users_are_persons_and_regions_states(olist_run):
    orders, customers = _olist("olist_orders_dataset"), _olist("olist_customers_dataset")
    c = olist_run["clean"]
    person = orders.merge(customers, on="customer_id").set_index("order_id")
    sample = c.drop_duplicates("order_id").head(200)
    persons = [pseudonym_of("olist", u) for u in person.loc[sample.order_id, "customer_unique_id"]]
    assert (sample.user_id.to_numpy() == persons).all()
    assert (sample.region.to_numpy() == person.loc[sample.order_id, "customer_state"].to_numpy()).all()
    assert set(c.region) <= set(customers.customer_state)


def test_olist_geolocation_mean_inside_brazil(olist_run):
    geo = _olist("olist_geolocation_dataset")
    lat, lon = geo.geolocation_lat.astype(float), geo.geolocation_lng.astype(float)
    inside = lat.between(-34.0, 5.5) & lon.between(-74.5, -28.5)
    assert (~inside).sum() == 1  # the README's one point outside Brazil
    means = geo[inside].assign(lat=lat, lon=lon).groupby("geolocation_zip_code_prefix")[["lat", "lon"]].mean()
    customers = _olist("olist_customers_dataset").merge(_olist("olist_orders_dataset"), on="customer_id")
    zip_of = customers.set_index("order_id").customer_zip_code_prefix
    c = olist_run["clean"]
    expected = means.reindex(zip_of.loc[c.order_id].to_numpy())
    # kept as the centre of the zip code's mean position's geohash cell (privacy, 5 characters)
    known = expected.lat.notna().to_numpy()
    centres = np.array([reference_cell_centre(a, b, 5) for a, b in
                        zip(expected.lat[known], expected.lon[known], strict=True)])
    np.testing.assert_allclose(c.lat.to_numpy(dtype=float)[known], centres[:, 0], atol=1e-9)
    np.testing.assert_allclose(c.lon.to_numpy(dtype=float)[known], centres[:, 1], atol=1e-9)
    assert c.lat[~known].isna().all()
    assert c.lat.isna().any() and c.lat.notna().mean() > 0.9  # fall back to null


def test_olist_items_english_category_or_slug_or_unknown(olist_run):
    products, tr = _olist("olist_products_dataset"), _olist("product_category_name_translation")
    names = dict(zip(tr.product_category_name, tr.product_category_name_english, strict=True))
    expected = products.product_category_name.map(lambda s: names.get(s, s) if s else "unknown")
    items = olist_run[catalogue.ITEMS.name].set_index("item_id")
    assert len(items) == len(products) == 32_951
    assert (items.loc[products.product_id, "category"].to_numpy() == expected.to_numpy()).all()
    assert (items.category == "unknown").sum() == 610
    assert {"pc_gamer", "portateis_cozinha_e_preparadores_de_alimentos"} <= set(items.category)


def test_olist_one_row_per_unit_and_sao_paulo_time(olist_run):
    c = olist_run["clean"]
    assert (c.quantity == 1).all()
    assert not c.duplicated(["order_id", "line_no"]).any()
    first = c[c.order_id == "bfbd0f9bdef84302105ad712db648a6c"].ts.iloc[0]
    # 2016-09-15 12:16:38 in Sao Paulo (UTC-3, before summer time) = 15:16:38 UTC
    assert pd.Timestamp(first) == pd.Timestamp("2016-09-15 15:16:38")


def test_olist_reviews(olist_run):
    raw = _olist("olist_order_reviews_dataset")
    rv = olist_run[catalogue.REVIEWS.name]
    assert len(rv) == len(raw) == 20_830
    has_text = (raw.review_comment_title.str.strip() != "") | (raw.review_comment_message.str.strip() != "")
    assert int(rv.text.notna().sum()) == int(has_text.sum())
    assert rv.score.value_counts().to_dict() == {5: 11_970, 4: 4_043, 1: 2_374, 3: 1_767, 2: 676}
    assert rv.user_id.notna().all()
    assert pd.Timestamp(rv.ts.min()) >= pd.Timestamp(dt.date(2016, 10, 6))
