"""Scaling of the nightly pipeline: N and 4N generated order lines, same settings.

    python -m bench scaling                      # N = 250,000 and 1,000,000
    python -c "from bench.bench_scaling import main; main('bench/results', n=50_000)"

Reports seconds, order lines per second and t(4N)/t(N) for the whole run and per stage
(from run_log). Goal: t(4N)/t(N) <= 4.5, i.e. near-linear. A small warm-up run first, so
the N run does not also pay for JVM class loading and JIT compilation.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import time
from pathlib import Path

N_DEFAULT = 250_000
GOAL_RATIO = 4.5
RUN_DATE = "2024-06-29"  # the day after the 180 synthetic days from 2024-01-01

log = logging.getLogger("stpipe.bench")


def main(out_dir: str | Path, n: int = N_DEFAULT, *, warmup_rows: int = 5_000) -> dict:
    """Run the nightly on ``warmup_rows``, ``n`` and ``4 n`` order lines; return the figures."""
    from bench import with_code_generation
    from stpipe.cli import setup_logging
    from stpipe.config import load_settings, replace
    from stpipe.session import build_session
    from stpipe.stages import run_nightly

    setup_logging()
    out = Path(out_dir) / "scaling"
    base = load_settings()
    spark = build_session(with_code_generation(base.spark), app_name="stpipe-bench-scaling")
    try:
        runs = {}
        sizes = [("warmup", warmup_rows), ("N", n), ("4N", 4 * n)]
        for i, (label, rows) in enumerate(sizes, 1):
            warehouse = out / f"warehouse-{label}"
            shutil.rmtree(warehouse, ignore_errors=True)
            settings = replace(base, **{
                "storage.warehouse": str(warehouse), "run_date": RUN_DATE,
                "ingest.source": "synthetic", "ingest.rows": rows,
                "ingest.synthetic_start": "2024-01-01", "ingest.synthetic_days": 180,
            })
            log.info("bench scaling [%d/%d]: %s = %s order lines", i, len(sizes), label, f"{rows:,}")
            t0 = time.perf_counter()
            run_nightly(spark, settings, force=True)
            seconds = time.perf_counter() - t0
            runs[label] = {
                "rows": rows, "seconds": round(seconds, 1),
                "rows_per_second": round(rows / seconds, 1),
                "stages": _stage_seconds(spark, str(warehouse), settings.date),
            }
            log.info("bench scaling %s: %.1fs, %.0f rows/s", label, seconds, rows / seconds)
            shutil.rmtree(warehouse, ignore_errors=True)
    finally:
        spark.stop()
    ratio = runs["4N"]["seconds"] / runs["N"]["seconds"]
    stage_ratios = {
        stage: round(runs["4N"]["stages"][stage] / secs, 2)
        for stage, secs in runs["N"]["stages"].items()
        if secs > 0 and stage in runs["4N"]["stages"]
    }
    return {
        "n": n, "runs": runs, "ratio_4n_over_n": round(ratio, 2),
        "stage_ratios": stage_ratios, "goal_ratio": GOAL_RATIO, "meets_goal": ratio <= GOAL_RATIO,
        "master": base.spark.master, "shuffle_partitions": base.spark.shuffle_partitions,
    }


def _stage_seconds(spark, warehouse: str, run_date: dt.date) -> dict[str, float]:
    from stpipe import runlog, tables

    rows = (
        tables.read(spark, warehouse, runlog.RUN_LOG)
        .where(f"run_date = '{run_date.isoformat()}' AND status = 'ok'")
        .select("stage", "started", "finished").collect()
    )
    return {r["stage"]: round((r["finished"] - r["started"]).total_seconds(), 1) for r in rows}
