"""A short summary a person reads after a run: tables, row counts, where to look next."""

from __future__ import annotations

from pyspark.sql import SparkSession

from stpipe import catalogue, tables
from stpipe.catalogue import ORDERS_CLEAN


def summary_text(spark: SparkSession, warehouse: str) -> str:
    root = tables.table_path(warehouse, "").rstrip("/")
    lines = [f"Delta tables in {root}:"]
    for name in sorted(t.name for t in catalogue.ALL if tables.exists(spark, warehouse, t.name)):
        count = tables.read(spark, warehouse, name).count()
        version = tables.version(spark, warehouse, name)
        lines.append(f"  {name:<24} {count:>10,} rows   version {version}")
    lines += [
        "",
        "Next: the notebooks (make notebooks), the evaluation report (make evaluate),",
        f"or any table with any Delta reader, e.g. spark.read.format('delta').load('{root}/{ORDERS_CLEAN.name}')",
    ]
    return "\n".join(lines)
