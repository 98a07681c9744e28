"""One Spark session for the whole test run: local[2], few shuffle partitions, UI off."""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "datasets"
OLIST_DIR = SHARED / "olist_brazilian_ecommerce"
RETAIL_FILE = SHARED / "uci_online_retail_2011h1" / "online_retail_2011h1.csv.gz"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# The pseudonym key every test run uses (subprocess jobs inherit it); tests compute the
# pseudonyms they expect with the standard library's hmac, independently of stpipe.privacy.
TEST_KEY = "stpipe-tests-pseudonym-key-0001"
os.environ["STPIPE_PSEUDONYM_KEY"] = TEST_KEY


def pseudonym_of(source: str, user_id: str) -> str:
    """HMAC-SHA256(key, source + US + id), first 32 hex digits (README: Privacy)."""
    message = f"{source}\x1f{user_id}".encode()
    return hmac.new(TEST_KEY.encode(), message, hashlib.sha256).hexdigest()[:32]


needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets is absent")


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
                "spark.databricks.delta.snapshotPartitions": "2",
                "spark.default.parallelism": "2",
                # VACUUM lists files with this many tasks; Spark's default (10000) costs minutes.
                "spark.sql.sources.parallelPartitionDiscovery.parallelism": "2",
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
