"""A short summary a person reads after a run: tables, row counts, where to look next."""

from __future__ import annotations

from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import SparkSession

from stpipe import tables
from stpipe.catalogue import ORDERS_CLEAN


def summary_text(spark: SparkSession, warehouse: str) -> str:
    root = Path(warehouse).resolve()
    lines = [f"Delta tables in {root}:"]
    for folder in sorted(p for p in root.iterdir() if (p / "_delta_log").is_dir()):
        count = tables.read(spark, warehouse, folder.name).count()
        version = DeltaTable.forPath(spark, str(folder)).history(1).collect()[0]["version"]
        lines.append(f"  {folder.name:<24} {count:>10,} rows   version {version}")
    lines += [
        "",
        "Next: the notebooks (make notebooks), the evaluation report (make evaluate),",
        f"or any table with any Delta reader, e.g. spark.read.format('delta').load('{root}/{ORDERS_CLEAN.name}')",
    ]
    return "\n".join(lines)
