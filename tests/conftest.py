"""One Spark session for the whole test run: local[2], few shuffle partitions, UI off."""

from __future__ import annotations

import hashlib
import hmac
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from stpipe.runlog import StageResult

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
OLIST_DIR = SHARED / "olist_brazilian_ecommerce"
RETAIL_FILE = SHARED / "uci_online_retail_2011h1" / "online_retail_2011h1.csv.gz"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The jobs the tests start in processes of their own (nightlies, spark-submit, notebooks) are
# short-lived JVMs on two busy cores: HotSpot's first compiler alone (no C2) spends 13% less CPU
# on a whole nightly (docs/experiments.md). The session this process keeps for the whole run
# (the `spark` fixture) runs hot code for minutes and compiles fully: its own option comes later
# on its command line and wins.
SHORT_LIVED_JVM = "-XX:TieredStopAtLevel=1"
os.environ["SPARK_SUBMIT_OPTS"] = f"{os.environ.get('SPARK_SUBMIT_OPTS', '')} {SHORT_LIVED_JVM}".strip()

# The pseudonym key every test run uses (subprocess jobs inherit it); tests compute the
# pseudonyms they expect with the standard library's hmac, independently of stpipe.privacy.
TEST_KEY = "stpipe-tests-pseudonym-key-0001"
os.environ["STPIPE_PSEUDONYM_KEY"] = TEST_KEY


def pseudonym_of(source: str, user_id: str) -> str:
    """HMAC-SHA256(key, source + US + id), first 32 hex digits (README: Privacy)."""
    message = f"{source}\x1f{user_id}".encode()
    return hmac.new(TEST_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is absent")

# `make test` runs two pytest-xdist workers that each take whole modules (--dist loadfile). The
# suite keeps both cores busy, so its time is its CPU work over two plus what one worker runs
# alone at the end. xdist would by default hand out the modules with the most tests first, which
# leaves the heaviest ones (one or two long tests each) for last; the Makefile turns that off
# (--no-loadscope-reorder) and these modules, the longest (seconds one took in a two-worker run,
# 2026-12-06: 310, 222, 340, 255, 199, 151, 131, 117, 110, 98, 97, 88, 83), go first, the rest in
# collection order behind them (longest processing time first). The cluster test, which needs
# the shared nightly, starts beside the tuned evaluation, which does not: the nightly is built
# while the other worker works.
LONGEST_FIRST = (
    "test_cluster_nightly.py", "test_eval_job.py", "test_nightly.py", "test_bad_inputs.py",
    "test_kill_nightly.py", "test_incremental.py", "test_notebooks.py",
    "test_concurrent_nightly.py", "test_adapters_real.py", "test_features.py",
    "test_shared_work.py", "test_feature_layer.py", "test_warehouse_rules.py",
)


def pytest_collection_modifyitems(items) -> None:
    """The modules of :data:`LONGEST_FIRST` first, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


@pytest.fixture(scope="session")
def spark():
    from stpipe.config import SparkSettings
    from stpipe.session import build_session

    session = build_session(
        SparkSettings(
            master="local[2]",
            shuffle_partitions=2,
            log_level="ERROR",
            conf={
                "spark.ui.enabled": "false",
                "spark.sql.warehouse.dir": str(ROOT / ".cache" / "spark-warehouse"),
                "spark.driver.memory": "2g",
                "spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=4",  # every tier (above)
                "spark.databricks.delta.snapshotPartitions": "2",
                "spark.default.parallelism": "2",
                # VACUUM lists files with this many tasks; Spark's default (10000) costs minutes.
                "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
                # tiny tables: interpreted expressions, as conf/local.yaml
                "spark.sql.codegen.wholeStage": "false",
                "spark.sql.codegen.factoryMode": "NO_CODEGEN",
            },
        ),
        app_name="stpipe-tests",
    )
    yield session
    session.stop()


@pytest.fixture
def warehouse(tmp_path) -> str:
    path = tmp_path / "warehouse"
    path.mkdir()
    return str(path)


@dataclass(frozen=True)
class CompletedNightly:
    """A nightly of ``helpers.nightly_settings`` run once: its warehouse (a template no test
    writes to), what ``run_nightly`` returned, and the template's files when it finished."""

    folder: Path
    result: StageResult
    stamp: dict[str, tuple[int, int]]

    def check_untouched(self) -> None:
        """Fail if anything under the template was added, removed or rewritten."""
        from helpers import tree_stamp

        assert tree_stamp(self.folder) == self.stamp, f"a test modified the template {self.folder}"

    def copy_to(self, target: Path) -> str:
        """A private copy of the template at ``target``, as if the nightly had run there.

        Delta logs name data files relative to the table folder, the run log and fingerprints
        hold no warehouse path (test_nightly checks both), the synthetic staging lives outside
        the warehouse, and copytree keeps mtimes (Delta commit times, VACUUM ages).
        """
        self.check_untouched()
        shutil.copytree(self.folder, target)
        return str(target)


def _once_per_run(tmp_path_factory, name: str, build) -> CompletedNightly:
    """``build(folder)`` run once per test run, not once per pytest-xdist worker.

    Under xdist the first worker to ask builds the warehouse in the run's shared temporary
    folder (the parent of every worker's own) and pickles what it returned beside it; the others
    wait on a file lock and load that. The suite is CPU-bound on 2 cores, so a nightly built
    twice costs a nightly's time. In one process it is simply built.
    """
    import pickle

    from filelock import FileLock

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name) / "warehouse")
    shared = tmp_path_factory.getbasetemp().parent / f"shared-{name}"
    done = shared / "completed.pickle"
    with FileLock(str(shared) + ".lock"):
        if not done.is_file():
            if shared.exists():  # a worker that failed while building it: start again
                shutil.rmtree(shared)
            shared.mkdir()
            built = build(shared / "warehouse")
            done.write_bytes(pickle.dumps(built))
        return pickle.loads(done.read_bytes())


@pytest.fixture(scope="session")
def completed_nightly(spark, tmp_path_factory) -> CompletedNightly:
    """One whole nightly (about a minute of fixed Spark cost) shared by the tests that start
    from the same completed warehouse; they get copies of it (``nightly_warehouse``)."""
    from helpers import nightly_settings, tree_stamp

    from stpipe.stages import run_nightly

    def build(folder: Path) -> CompletedNightly:
        result = run_nightly(spark, nightly_settings(folder))
        return CompletedNightly(folder, result, tree_stamp(folder))

    done = _once_per_run(tmp_path_factory, "nightly-template", build)
    yield done
    done.check_untouched()


@pytest.fixture(scope="session")
def refreshed_nightly(spark, completed_nightly, tmp_path_factory) -> CompletedNightly:
    """The shared nightly's warehouse after the same date's nightly again, now with a changed
    source (seed ``helpers.REFRESHED_SEED``) re-read whole (``ingest.incremental: false``, what
    ``--full-refresh`` sets). test_nightly checks that a changed source reruns the stages; the
    kill test uses it as what its killed run would have written."""
    from helpers import REFRESHED_SEED, nightly_settings, tree_stamp

    from stpipe.stages import run_nightly

    def build(folder: Path) -> CompletedNightly:
        completed_nightly.copy_to(folder)
        overrides = {"ingest.seed": REFRESHED_SEED, "ingest.incremental": False}
        result = run_nightly(spark, nightly_settings(folder, **overrides))
        return CompletedNightly(folder, result, tree_stamp(folder))

    done = _once_per_run(tmp_path_factory, "refreshed", build)
    yield done
    done.check_untouched()


@pytest.fixture
def nightly_warehouse(completed_nightly, tmp_path) -> str:
    """A private copy of the completed nightly's warehouse (``CompletedNightly.copy_to``)."""
    return completed_nightly.copy_to(tmp_path / "warehouse")
