"""Incremental night vs full recompute: the ingest of night d+1 after night d, in one run.

    make bench BENCH=incremental                       # 1,000,000 generated lines
    python -m bench incremental --rows 200000

Generated order lines (the synthetic generator, 180 days) are written as a canonical folder
source, one Parquet part file per day. Warehouse A ingests the days up to d (the first night:
a full ingest), then night d+1 with one more part file, incrementally (timed). Warehouse B
ingests all the days up to d+1 from scratch (timed). Both use one pseudonym key, and their
``orders_clean`` tables must be equal (both differences empty). Goal: incremental / full at
most 0.25.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from pathlib import Path

ROWS_DEFAULT = 1_000_000
DAYS = 180
START = dt.date(2024, 1, 1)
GOAL_RATIO = 0.25

log = logging.getLogger("stpipe.bench")


def write_days(folder: Path, rows: int, seed: int = 42) -> list[Path]:
    """The generated lines as ``folder/orders/part-<date>.parquet`` (strings, canonical columns)
    and ``folder/items.parquet``; return the part files in date order."""
    from stpipe.adapters import synthetic

    lines, items = synthetic.generate(rows=rows, seed=seed, start=START, days=DAYS)
    orders = folder / "orders"
    orders.mkdir(parents=True)
    lines = lines.assign(date=lines.ts.dt.date, ts=lines.ts.dt.strftime("%Y-%m-%d %H:%M:%S"))
    parts = []
    for day, chunk in lines.groupby("date", sort=True):
        path = orders / f"part-{day.isoformat()}.parquet"
        chunk.drop(columns=["date"]).astype(str).replace({"nan": None}).to_parquet(path, index=False)
        parts.append(path)
    items.to_parquet(folder / "items.parquet", index=False)
    return parts


def main(out_dir: str | Path, rows: int = ROWS_DEFAULT) -> dict:
    """Time night d+1 incrementally and as a full recompute; check their orders_clean agree."""
    from bench import with_code_generation
    from stpipe import catalogue, tables
    from stpipe.cli import setup_logging
    from stpipe.config import load_settings, replace
    from stpipe.session import build_session
    from stpipe.stages import INGEST, run_stage

    setup_logging()
    out = Path(out_dir) / "incremental"
    shutil.rmtree(out, ignore_errors=True)
    source = out / "input"
    parts = write_days(source, rows)
    held = out / "held-back"  # night d+1's file, delivered after night d
    held.mkdir()
    last = parts[-1]
    shutil.move(str(last), held / last.name)
    key = out / "pseudonym.key"
    key.write_text("bench-incremental-pseudonym-key-0001\n")
    base = load_settings()
    # night d runs on the held-back day (its history: every earlier day), night d+1 the day after
    new_day = dt.date.fromisoformat(last.stem.removeprefix("part-"))

    def settings(warehouse: Path, run_date: dt.date):
        return replace(base, **{
            "storage.warehouse": str(warehouse), "run_date": run_date.isoformat(),
            "ingest.source": "canonical", "ingest.input": str(source),
            "privacy.key_file": str(key), "privacy.key_env": None,
        })

    spark = build_session(with_code_generation(base.spark), app_name="stpipe-bench-incremental")
    try:
        a, b = out / "warehouse-incremental", out / "warehouse-full"
        log.info("bench incremental: night d (%d part files, a full first ingest)", len(parts) - 1)
        t0 = time.perf_counter()
        run_stage(spark, settings(a, new_day), INGEST)
        first_s = time.perf_counter() - t0
        shutil.move(str(held / last.name), last)
        log.info("bench incremental: night d+1, incremental")
        t0 = time.perf_counter()
        inc = run_stage(spark, settings(a, new_day + dt.timedelta(days=1)), INGEST)
        inc_s = time.perf_counter() - t0
        log.info("bench incremental: night d+1, full recompute in a fresh warehouse")
        t0 = time.perf_counter()
        full = run_stage(spark, settings(b, new_day + dt.timedelta(days=1)), INGEST)
        full_s = time.perf_counter() - t0
        name = catalogue.ORDERS_CLEAN.name
        left, right = tables.read(spark, str(a), name), tables.read(spark, str(b), name)
        n_left, n_right = left.count(), right.count()
        differ = left.exceptAll(right).count() + right.exceptAll(left).count()
    finally:
        spark.stop()
    ratio = inc_s / full_s
    result = {
        "rows": rows, "days": DAYS, "night_d_first_ingest_seconds": round(first_s, 1),
        "incremental_seconds": round(inc_s, 1), "full_seconds": round(full_s, 1),
        "ratio": round(ratio, 3), "goal_ratio": GOAL_RATIO, "meets_goal": ratio <= GOAL_RATIO,
        "incremental_rows_read": inc.rows_in, "full_rows_read": full.rows_in,
        "incremental_details": {k: inc.details.get(k) for k in ("files_read", "inserted", "updated", "unchanged")},
        "orders_clean_rows": [n_left, n_right], "rows_that_differ": differ,
        "tables_equal": differ == 0 and n_left == n_right,
        "master": base.spark.master,
    }
    print(
        f"incremental night d+1: {inc_s:.1f}s; full recompute: {full_s:.1f}s; ratio {ratio:.3f} "
        f"(goal <= {GOAL_RATIO}); orders_clean equal: {result['tables_equal']}", flush=True,
    )
    shutil.rmtree(out / "warehouse-incremental", ignore_errors=True)
    shutil.rmtree(out / "warehouse-full", ignore_errors=True)
    shutil.rmtree(source, ignore_errors=True)
    if not result["tables_equal"]:
        raise AssertionError(f"orders_clean differ: {n_left} vs {n_right} rows, {differ} differ")
    return result
