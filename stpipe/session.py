"""The one place that creates a SparkSession (tests use their own fixture)."""

from __future__ import annotations

import os
import re
import sys

from pyspark.sql import SparkSession

from stpipe import jvm_archive
from stpipe.config import SparkSettings
from stpipe.jars import jar_paths

# On one machine, Spark's defaults suit clusters and huge tables: 10000 tasks to list the
# files VACUUM may delete (minutes per table) and 50 partitions to replay a Delta log.
# settings.conf overrides these.
LOCAL_DEFAULTS = {
    "spark.sql.sources.parallelPartitionDiscovery.parallelism": "4",
    "spark.databricks.delta.snapshotPartitions": "2",
}
DRIVER_JAVA_OPTIONS = "spark.driver.extraJavaOptions"
# In local mode the driver's JVM runs every task too: batch work, where the throughput collector
# costs less than the JVM's default G1 (the embedded default's nightly: 75 s and 128 CPU-seconds
# against 80 s and 139; README: Benchmarks). A collector named in the user's own options wins.
LOCAL_COLLECTOR = "-XX:+UseParallelGC"
_NAMES_A_COLLECTOR = re.compile(r"-XX:\+Use\w*GC\b")


def build_session(settings: SparkSettings, *, app_name: str | None = None) -> SparkSession:
    """A SparkSession with Delta Lake's SQL extension and catalog, UTC session time zone.

    When the job runs under ``spark-submit``, master and packaging flags given on the
    command line win over ``settings.master``.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    submitted = _submitted_with_master()
    builder = SparkSession.builder.appName(app_name or settings.app_name)
    if not submitted:
        builder = builder.master(settings.master)
    for key, value in session_conf(settings, submitted=submitted).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(settings.log_level)
    return spark


def session_conf(settings: SparkSettings, *, submitted: bool) -> dict[str, str]:
    """The session's Spark settings; ``submitted``: the JVM was started by ``spark-submit``."""
    conf = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
    }
    if submitted:
        # The JVM is already running: the master, --jars and its options came from the command line.
        return {**conf, **settings.conf}
    local = settings.master.startswith("local")
    if local:
        conf.update(LOCAL_DEFAULTS)
    # In a plain Python process the builder starts the JVM: Delta's jars must be on it from
    # the start, and the class archive setup made (if any) saves seconds of its start-up.
    conf["spark.jars"] = ",".join(str(p) for p in jar_paths(settings.jars_dir))
    conf.update(settings.conf)
    options = [conf.get(DRIVER_JAVA_OPTIONS, "")]
    if local and not _NAMES_A_COLLECTOR.search(options[0]):
        options.insert(0, LOCAL_COLLECTOR)
    options.append(jvm_archive.java_options(settings.jars_dir))
    joined = " ".join(o for o in options if o)
    if joined:
        conf[DRIVER_JAVA_OPTIONS] = joined
    return conf


def _submitted_with_master() -> bool:
    # Under spark-submit the JVM is already running (it started this Python process and
    # passed its gateway port): the master and --jars came from the command line.
    return bool(os.environ.get("PYSPARK_GATEWAY_PORT"))
