"""Unit tests of the cleaning rules on tiny hand-made frames (expected values by hand)."""

from __future__ import annotations

import datetime as dt

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe import clean
from stpipe.schema import RAW_META_COLUMNS, RAW_ORDER_COLUMNS


def test_region_mapping_folds_case_and_applies_aliases():
    counts = {"United Kingdom": 5, "united kingdom": 1, "EIRE": 2, "Ireland": 1, "North": 1, "NORTH": 1, "north": 1}
    assert clean.region_mapping(counts, {"eire": "Ireland"}) == {
        "EIRE": "Ireland",
        "NORTH": "North",
        "north": "North",
        "united kingdom": "United Kingdom",
    }


def test_region_mapping_prefers_the_most_frequent_spelling():
    assert clean.region_mapping({"SP": 9, "sp": 1, "Sp": 2}, {}) == {"sp": "SP", "Sp": "SP"}
    assert clean.region_mapping({}, {"eire": "Ireland"}) == {}


def test_reason_counts_leaves_out_clean_rows():
    assert clean.reason_counts([(None, 5), ("b", 1), ("a", 2), ("b", 3)]) == {"a": 2, "b": 4}


@pytest.mark.parametrize(
    "text, zone, expected",
    [
        ("2024-03-01 10:00:00", "UTC", dt.datetime(2024, 3, 1, 10)),
        ("2024-03-01T10:00:00Z", "Europe/Berlin", dt.datetime(2024, 3, 1, 10)),
        ("2024-03-01 12:00:00+02:00", "UTC", dt.datetime(2024, 3, 1, 10)),
        ("2024-03-01T05:00:00-0500", "UTC", dt.datetime(2024, 3, 1, 10)),
        ("2011-06-01 12:00:00", "Europe/London", dt.datetime(2011, 6, 1, 11)),  # BST
        ("2010-12-01 08:26:00", "Europe/London", dt.datetime(2010, 12, 1, 8, 26)),  # GMT
        ("2018-01-10 10:00:00", "America/Sao_Paulo", dt.datetime(2018, 1, 10, 12)),  # summer time, UTC-2
        (" 2024-03-01 10:00 ", "UTC", dt.datetime(2024, 3, 1, 10)),
        ("2024-03-01", "UTC", dt.datetime(2024, 3, 1)),
        ("yesterday", "UTC", None),
        ("2024-13-45 10:00:00", "UTC", None),
        (None, "UTC", None),
    ],
)
def test_parse_timestamp(spark, text, zone, expected):
    df = spark.createDataFrame([(text,)], "t string")
    assert df.select(clean.parse_timestamp(F.col("t"), zone).alias("ts")).first()["ts"] == expected


def test_normalise_id(spark):
    df = spark.createDataFrame([(" 17850.0 ",), ("A  B",), ("   ",), ("12.5",), ("007",)], "v string")
    got = [r[0] for r in df.select(clean.normalise_id(F.col("v"))).collect()]
    assert got == ["17850", "A B", None, "12.5", "007"]


def _raw(spark, rows):
    schema = T.StructType([T.StructField(c, T.StringType()) for c in RAW_ORDER_COLUMNS + RAW_META_COLUMNS])
    schema["source_row"].dataType = T.LongType()
    full = []
    for i, r in enumerate(rows):
        values = dict(zip(RAW_ORDER_COLUMNS, r, strict=True))
        raw = ",".join("" if v is None else v for v in r)
        full.append(tuple(values[c] for c in RAW_ORDER_COLUMNS) + ("f.csv", i, raw, None, None))
    return spark.createDataFrame(full, schema)


def test_duplicates_first_copy_kept_and_conflicts_all_quarantined(spark):
    a = ("O1", "1", "U1", "I1", "2", "9.99", "2024-03-01 10:00:00", "North", None, None, None)
    a_spaced = ("O1", "1", " U1", "I1", "2", "9.990", "2024-03-01 10:00:00", "north", None, None, None)
    b1 = ("O2", "1", "U1", "I1", "1", "1.00", "2024-03-01 10:00:00", "North", None, None, None)
    b2 = ("O2", "1", "U1", "I1", "3", "1.00", "2024-03-01 10:00:00", "North", None, None, None)
    c = ("O2", "2", "U1", "I2", "1", "1.00", "2024-03-01 10:00:00", "North", None, None, None)
    raw = _raw(spark, [a, a_spaced, b1, b2, c, a])
    checked = clean.mark_duplicates(clean.validate_orders(raw, run_date=dt.date(2024, 6, 1)))
    got = {r["source_row"]: r["reason"] for r in checked.collect()}
    assert got == {0: None, 1: "duplicate_row", 2: "conflicting_duplicate", 3: "conflicting_duplicate", 4: None, 5: "duplicate_row"}


def test_of_several_files_the_last_ones_version_of_a_line_wins(spark):
    b1 = ("O2", "1", "U1", "I1", "1", "1.00", "2024-03-01 10:00:00", "North", None, None, None)
    b2 = ("O2", "1", "U1", "I1", "3", "1.00", "2024-03-01 10:00:00", "North", None, None, None)
    b4 = ("O2", "1", "U1", "I1", "4", "1.00", "2024-03-01 10:00:00", "North", None, None, None)
    c1 = ("O3", "1", "U2", "I2", "1", "2.00", "2024-03-01 11:00:00", "North", None, None, None)
    c2 = ("O3", "1", "U2", "I2", "2", "2.00", "2024-03-01 11:00:00", "North", None, None, None)
    # part-1: b1, c1; part-2: b2 (a correction of b1); part-3: c1 again and c2 (a conflict)
    raw = _raw(spark, [b1, c1, b2, c1, c2, b4])
    files = {0: "part-1.csv", 1: "part-1.csv", 2: "part-2.csv", 3: "part-3.csv", 4: "part-3.csv", 5: "part-0.csv"}
    raw = raw.withColumn("source_file", F.element_at(
        F.create_map(*[F.lit(x) for k, v in files.items() for x in (k, v)]), F.col("source_row")
    ))
    checked = clean.mark_duplicates(clean.validate_orders(raw, run_date=dt.date(2024, 6, 1)))
    got = {r["source_row"]: r["reason"] for r in checked.collect()}
    assert got == {
        0: "superseded", 2: None, 5: "superseded",  # O2: part-2's version is kept
        1: "conflicting_duplicate", 3: "duplicate_row", 4: "conflicting_duplicate",  # O3
    }


def test_validate_first_failing_rule_wins(spark):
    good = ("O1", "1", "U1", "I1", "2", "9.99", "2024-03-01 10:00:00", "North", None, None, None)
    no_user_bad_qty = ("O2", "1", "", "I1", "-1", "9.99", "2024-03-01 10:00:00", "North", None, None, None)
    future = ("O3", "1", "U1", "I1", "1", "9.99", "2024-06-03 00:00:00", "North", None, None, None)
    last_allowed = ("O4", "1", "U1", "I1", "1", "9.99", "2024-06-02 23:59:59", "North", None, None, None)
    raw = _raw(spark, [good, no_user_bad_qty, future, last_allowed])
    checked = clean.validate_orders(raw, run_date=dt.date(2024, 6, 1), max_future_days=1)
    assert [r["reason"] for r in checked.orderBy("source_row").collect()] == [
        None, "missing_user_id", "ts_in_future", None
    ]


def test_clean_items_keeps_the_most_frequent_text(spark):
    items = spark.createDataFrame(
        [("A1", " MUG ", None, None), ("A1", "MUG", None, None), ("A1", "CUP", None, None), ("B2", None, "kitchen", None)],
        "item_id string, title string, category string, description string",
    )
    got = {r["item_id"]: (r["title"], r["category"]) for r in clean.clean_items(items, source="s").collect()}
    assert got == {"A1": ("MUG", "unknown"), "B2": ("B2", "kitchen")}
