"""The driver JVM's class archive (stpipe.jvm_archive): setup makes one the JVM maps, and every
session a Python process starts uses it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stpipe import jvm_archive
from stpipe.config import SparkSettings
from stpipe.jars import jar_name, required_jars
from stpipe.session import DRIVER_JAVA_OPTIONS, LOCAL_COLLECTOR, session_conf


def _jars_dir(tmp_path: Path, *, archive: bool) -> str:
    for _, artifact, version in required_jars():
        (tmp_path / jar_name(artifact, version)).write_bytes(b"")
    if archive:
        (tmp_path / jvm_archive.ARCHIVE).write_bytes(b"")
    return str(tmp_path)


def test_a_session_started_here_maps_the_archive_after_the_users_own_options(tmp_path):
    jars = _jars_dir(tmp_path, archive=True)
    option = f"-XX:SharedArchiveFile={tmp_path / jvm_archive.ARCHIVE}"
    plain = session_conf(SparkSettings(jars_dir=jars), submitted=False)
    assert plain[DRIVER_JAVA_OPTIONS] == f"-XX:+UseParallelGC {option}"
    own = SparkSettings(jars_dir=jars, conf={DRIVER_JAVA_OPTIONS: "-Dstpipe.x=1"})
    assert session_conf(own, submitted=False)[DRIVER_JAVA_OPTIONS] == (
        f"-XX:+UseParallelGC -Dstpipe.x=1 {option}"
    )
    # under spark-submit the JVM runs already: its options came from the command line
    assert DRIVER_JAVA_OPTIONS not in session_conf(SparkSettings(jars_dir=jars), submitted=True)


def test_without_an_archive_the_session_starts_as_before(tmp_path):
    conf = session_conf(SparkSettings(jars_dir=_jars_dir(tmp_path, archive=False)), submitted=False)
    assert conf[DRIVER_JAVA_OPTIONS] == LOCAL_COLLECTOR and conf["spark.jars"].count(".jar") == 2


def test_a_local_driver_gets_the_throughput_collector_unless_its_options_name_one(tmp_path):
    jars = _jars_dir(tmp_path, archive=False)

    def options(master: str, own: str | None = None) -> str | None:
        conf = {DRIVER_JAVA_OPTIONS: own} if own is not None else {}
        settings = SparkSettings(master=master, jars_dir=jars, conf=conf)
        return session_conf(settings, submitted=False).get(DRIVER_JAVA_OPTIONS)

    assert options("local[2]") == options("local[*]") == "-XX:+UseParallelGC"
    # two collectors would stop the JVM at start: the user's own choice is kept alone
    assert options("local[2]", "-Xss4m -XX:+UseG1GC") == "-Xss4m -XX:+UseG1GC"
    assert options("local[2]", "-XX:+UseZGC") == "-XX:+UseZGC"
    assert options("local[2]", "-XX:-UseCompressedOops") == "-XX:+UseParallelGC -XX:-UseCompressedOops"
    # a cluster's driver only plans: its JVM keeps the JVM's own default
    assert options("spark://127.0.0.1:7077") is None
    assert options("spark://127.0.0.1:7077", "-Dstpipe.x=1") == "-Dstpipe.x=1"


def test_the_tests_local_session_runs_on_the_throughput_collector_and_compiles_fully(spark):
    management = spark.sparkContext._jvm.java.lang.management.ManagementFactory
    beans = management.getGarbageCollectorMXBeans()
    assert sorted(b.getName() for b in beans) == ["PS MarkSweep", "PS Scavenge"]
    # SPARK_SUBMIT_OPTS gives the tests' short-lived jobs the first compiler alone (conftest);
    # this long-lived session's own option comes later on its command line and wins
    assert "-XX:TieredStopAtLevel=1" in os.environ["SPARK_SUBMIT_OPTS"].split()
    hotspot = management.getPlatformMXBean(
        spark.sparkContext._jvm.java.lang.Class.forName("com.sun.management.HotSpotDiagnosticMXBean")
    )
    assert hotspot.getVMOption("TieredStopAtLevel").getValue() == "4"


def _maps(archive: Path) -> subprocess.CompletedProcess:
    """Start the driver's JVM (the class path every local session has) with sharing required."""
    submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable}
    return subprocess.run(
        [str(submit), "--driver-java-options", f"-Xshare:on -XX:SharedArchiveFile={archive}",
         "--version"], capture_output=True, text=True, env=env, check=False,
    )


def test_the_archive_setup_made_is_current_and_the_jvm_maps_it(tmp_path):
    archive = jvm_archive.archive_path(".jars")
    assert archive.is_file(), f"{archive} is missing: run `make setup`"
    assert jvm_archive.is_current(".jars")
    done = _maps(archive)
    assert done.returncode == 0, done.stderr[-2000:]
    broken = tmp_path / "broken.jsa"  # the same check refuses an archive the JVM cannot map
    broken.write_bytes(b"\0" * 4096 + archive.read_bytes()[4096:65536])
    refused = _maps(broken)
    assert refused.returncode != 0 and "shared archive" in refused.stdout + refused.stderr


def test_the_test_sessions_jvm_runs_with_the_archive(spark):
    args = spark.sparkContext._jvm.java.lang.management.ManagementFactory.getRuntimeMXBean()
    flags = list(args.getInputArguments())
    assert f"-XX:SharedArchiveFile={jvm_archive.archive_path('.jars')}" in flags
