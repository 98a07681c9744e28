"""``make run``'s nightly vs Spark's own floor for the same number of small Delta tables, in one run.

    make bench BENCH=floor
    python -m bench floor --rows 20000
    python -m bench.bench_floor --floor-only /tmp/floor   # the floor alone, as one process

The floor is what any Spark job pays for this work on this machine: a ``local[2]`` session
with Delta, the embedded default's generated lines (``synthetic``, 20,000 rows, seed 42) and
14 tables, each made by one aggregation, one Delta write and one read-back count, tuned for
tiny tables (2 shuffle partitions, 1 Delta snapshot partition). The nightly is ``make run``'s
command (``python -m jobs.nightly`` on a fresh warehouse). Both run as whole processes (JVM
start included), in turn (floor, nightly, floor, nightly, ...), and the ratio is taken pair by
pair so drift of the machine's speed cancels; the median pair is reported with the nightly's
per-stage times (from its log). Goal: nightly / floor at most 2.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TABLES = 14
GOAL_RATIO = 2.0
RUN_DATE = "2024-06-29"  # make run's DATE_synthetic: the day after the generated data ends
STAGE_DONE = re.compile(r"stage (\w+): done in ([0-9.]+)s")


def floor(out: Path, rows: int = 20_000) -> float:
    """Build the 14 small tables in ``out`` with plain PySpark + Delta; return the seconds."""
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from stpipe.adapters import synthetic
    from stpipe.jars import jar_paths

    t0 = time.perf_counter()
    lines, _ = synthetic.generate(rows=rows, seed=42)
    spark = (
        SparkSession.builder.master("local[2]").appName("floor")
        .config("spark.jars", ",".join(str(p) for p in jar_paths(".jars")))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.databricks.delta.snapshotPartitions", "1")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        orders = spark.createDataFrame(lines.assign(ts=lines.ts.astype("datetime64[us]")))
        keys = ["user_id", "item_id", "region", "category"]
        keys = [k for k in keys if k in orders.columns] or [orders.columns[0]]
        for i in range(TABLES):
            key = keys[i % len(keys)]
            table = orders.groupBy(key).agg(F.count(F.lit(1)).alias("lines"), F.max("ts").alias("last_ts"))
            path = str(out / f"t{i:02d}")
            table.write.format("delta").mode("overwrite").save(path)
            spark.read.format("delta").load(path).count()
    finally:
        spark.stop()
    return time.perf_counter() - t0


def _timed(cmd: list[str], log_path: Path) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SPARK_LOCAL_IP": "127.0.0.1",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYSPARK_PYTHON": sys.executable}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    log_path.write_text(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"{' '.join(cmd[:3])} failed (exit {done.returncode}): {' | '.join(tail)}")
    return seconds, done.stdout + done.stderr


def main(out_dir: str | Path, rows: int = 20_000, pairs: int = 2) -> dict:
    """Time the floor and the nightly in turn, ``pairs`` times each; report the median pair."""
    out = Path(out_dir) / "floor"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    results = []
    for i in range(pairs):
        tables = out / f"floor-{i}"
        floor_s, _ = _timed([sys.executable, "-m", "bench.bench_floor", "--floor-only", str(tables), "--rows", str(rows)],
                            out / f"floor-{i}.log")
        warehouse = out / f"warehouse-{i}"
        nightly_s, text = _timed(
            [sys.executable, "-m", "jobs.nightly", "--config", "conf/local.yaml", "--warehouse", str(warehouse),
             "--date", RUN_DATE, "--source", "synthetic", "--rows", str(rows), "--seed", "42"],
            out / f"nightly-{i}.log",
        )
        stages = {name: float(s) for name, s in STAGE_DONE.findall(text) if name != "nightly"}
        results.append({"floor_seconds": round(floor_s, 1), "nightly_seconds": round(nightly_s, 1),
                        "ratio": round(nightly_s / floor_s, 3), "stages_seconds": stages})
        print(f"pair {i + 1}/{pairs}: floor {floor_s:.1f}s, nightly {nightly_s:.1f}s, "
              f"ratio {nightly_s / floor_s:.2f}; stages {stages}", flush=True)
        shutil.rmtree(tables, ignore_errors=True)
        shutil.rmtree(warehouse, ignore_errors=True)
    median = statistics.median(r["ratio"] for r in results)
    chosen = min(results, key=lambda r: abs(r["ratio"] - median))
    return {
        "rows": rows, "tables": TABLES, "pairs": results, "median_ratio": round(median, 3),
        "median_pair": chosen, "goal_ratio": GOAL_RATIO, "meets_goal": median <= GOAL_RATIO,
        "load_average_at_end": os.getloadavg()[0],
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m bench.bench_floor")
    parser.add_argument("--floor-only", metavar="DIR", help="build the floor's tables in DIR and exit")
    parser.add_argument("--rows", type=int, default=20_000)
    args = parser.parse_args()
    if args.floor_only:
        print(f"floor: {floor(Path(args.floor_only), args.rows):.1f}s", flush=True)
    else:
        print(main(ROOT / "bench" / "results", rows=args.rows))
