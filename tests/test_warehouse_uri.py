"""Warehouses named by URI: file: URIs work end to end; remote URIs stay strings."""

from __future__ import annotations

from pathlib import Path

import deltalake

from stpipe import catalogue, tables
from stpipe.config import load_settings, replace
from stpipe.stages import INGEST, run_stage
from stpipe.summary import summary_text


def test_remote_uris_are_kept_as_strings():
    assert tables.table_path("s3a://bucket/wh/", "items") == "s3a://bucket/wh/items"
    assert tables.table_path("abfss://c@acct.dfs.core.windows.net/wh", "items").endswith("/wh/items")
    assert tables.local_folder("gs://bucket/wh") is None


def test_a_file_uri_warehouse_is_written_where_it_points(spark, tmp_path):
    uri = f"file://{tmp_path}/wh"
    settings = replace(load_settings(), **{
        "storage.warehouse": uri, "run_date": "2024-01-11", "ingest.rows": 400,
        "ingest.synthetic_start": "2024-01-01", "ingest.synthetic_days": 10,
    })
    result = run_stage(spark, settings, INGEST)
    on_disk = deltalake.DeltaTable(str(tmp_path / "wh" / catalogue.ORDERS_CLEAN.name)).to_pandas()
    assert len(on_disk) == result.rows_out > 0
    assert not Path("file:").exists()  # nothing under a folder literally called "file:"
    assert catalogue.ORDERS_CLEAN.name in tables.list_tables(uri)
    assert f"{catalogue.ORDERS_CLEAN.name} " in summary_text(spark, uri)
