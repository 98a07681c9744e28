"""A class-data-sharing archive of the driver JVM's classes, made once by ``make setup``.

Every job, test session and notebook starts a JVM that loads and verifies some sixteen thousand
classes (Spark's, Scala's, Delta's) before its first Delta write: about 4.5 s of a local
session's start on the 2-core development machine. HotSpot can map classes it loaded once from an archive instead (AppCDS,
``-XX:ArchiveClassesAtExit`` then ``-XX:SharedArchiveFile``; JDK 13+): the session starts in
about 2.7 s. :func:`build` dumps that archive from a small Spark + Delta workload run under
``spark-submit``, whose driver has the class path every local session has (with
``-Xlog:class+load``, a session's first Delta write and read then take 16,432 classes from shared
archives, 518 of Delta's 1,615 among them).
:func:`java_options` gives the option :mod:`stpipe.session` adds to a local session's driver
when the archive is there. The JVM checks the archive against its own build and class path and
ignores it when they differ, so a stale archive costs the speed-up, never a result; setup
rebuilds it when the JVM, pyspark or Delta's version changes (the stamp beside it).

    python -m stpipe.jvm_archive [--config conf/local.yaml]   # what make setup runs
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

from stpipe.errors import SetupError
from stpipe.jars import DELTA_VERSION, jar_paths, resolve_dir

ARCHIVE = "spark-classes.jsa"
STAMP = "spark-classes.stamp"


def archive_path(jars_dir: str) -> Path:
    return resolve_dir(jars_dir) / ARCHIVE


def java_options(jars_dir: str) -> str:
    """The driver JVM option that maps the archive, or "" when setup has not made one."""
    path = archive_path(jars_dir)
    return f"-XX:SharedArchiveFile={path}" if path.is_file() else ""


def stamp() -> str:
    """What the archive depends on: the JVM build, pyspark's and Delta's versions."""
    import pyspark

    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=False).stderr
    except OSError as exc:  # no java on PATH: Spark will say so; the archive is then never current
        java = str(exc)
    text = f"{java.strip()}\npyspark {pyspark.__version__}\ndelta {DELTA_VERSION}\n"
    return hashlib.sha256(text.encode()).hexdigest()


def is_current(jars_dir: str) -> bool:
    folder = resolve_dir(jars_dir)
    stamp_file = folder / STAMP
    return (folder / ARCHIVE).is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp()


def build(jars_dir: str) -> Path:
    """Dump the archive into ``jars_dir`` (atomically: a half-written one is never used)."""
    folder = resolve_dir(jars_dir)
    jars = ",".join(str(p) for p in jar_paths(jars_dir))
    submit = Path(sys.executable).parent / "spark-submit"
    with tempfile.TemporaryDirectory(dir=folder) as scratch:
        part = Path(scratch) / ARCHIVE
        cmd = [
            str(submit), "--master", "local[2]", "--driver-memory", "1g", "--jars", jars,
            "--driver-java-options", f"-XX:ArchiveClassesAtExit={part}",
            str(Path(__file__).resolve()), "--workload", scratch,
        ]
        env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "SPARK_LOCAL_IP": "127.0.0.1"}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0 or not part.is_file():
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise SetupError(f"the JVM class archive was not made: {' / '.join(tail)}")
        part.replace(folder / ARCHIVE)
    (folder / STAMP).write_text(stamp())
    return folder / ARCHIVE


def _workload(scratch: str) -> None:
    """What every job's driver loads: a Delta write, read and history, SQL with a join and a
    window, Arrow in both directions and a pandas UDF."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    from stpipe.config import SparkSettings
    from stpipe.session import build_session  # here: stpipe.session imports this module

    # the session every job builds (under spark-submit: its Delta, Arrow and time zone settings)
    spark = build_session(
        SparkSettings(shuffle_partitions=2, log_level="ERROR"), app_name="stpipe-jvm-archive"
    )
    lines = spark.createDataFrame(pd.DataFrame({
        "user_id": [f"u{i % 7}" for i in range(200)], "item_id": [f"i{i % 13}" for i in range(200)],
        "day": pd.date_range("2024-01-01", periods=200, freq="h").date, "qty": range(200),
    }))
    table = f"{scratch}/t"
    lines.write.format("delta").save(table)
    read = spark.read.format("delta").load(table)

    @F.pandas_udf("double")
    def halve(v: pd.Series) -> pd.Series:
        return v / 2.0

    ranked = (read.groupBy("user_id", "item_id").agg(F.sum("qty").alias("n"))
              .withColumn("r", F.row_number().over(Window.partitionBy("user_id").orderBy(F.desc("n")))))
    joined = ranked.join(read.select("item_id").distinct(), "item_id").withColumn("h", halve("n"))
    joined.toPandas()
    spark.sql(f"DESCRIBE HISTORY delta.`{table}`").collect()
    spark.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m stpipe.jvm_archive [--config conf/local.yaml]``: used by ``make setup``."""
    from stpipe.config import load_settings

    parser = argparse.ArgumentParser(description="Make the driver JVM's class archive once.")
    parser.add_argument("--config", default=None)
    parser.add_argument("--workload", metavar="SCRATCH", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.workload:
        _workload(args.workload)
        return 0
    jars_dir = load_settings(args.config).spark.jars_dir
    if is_current(jars_dir):
        print(f"ok {archive_path(jars_dir)}")
        return 0
    try:
        print(f"made {build(jars_dir)}")
    except SetupError as exc:  # an optimisation: every job still runs without it, seconds slower
        print(f"setup: warning: {exc}; Spark sessions start without it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
