"""Values from the command line never reach SQL or the file system unchecked."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import read_sorted

from stpipe import tables
from stpipe.config import load_settings
from stpipe.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
HOSTILE = "x' OR true --"


def test_unknown_sources_and_climbing_report_folders_are_refused():
    with pytest.raises(ConfigError, match=r"ingest.source: unknown source \"x' OR true --\""):
        load_settings(overrides={"ingest.source": HOSTILE})
    with pytest.raises(ConfigError, match=r"evaluate.report_dir: '\.\./\.\./etc' climbs out"):
        load_settings(overrides={"evaluate.report_dir": "../../etc"})


@pytest.mark.parametrize("args, expected", [
    (["--source", HOSTILE, "--no-ingest", "--cutoff", "2024-05-01"], "ingest.source: unknown source"),
    (["--source", "synthetic", "--cutoff", "2024-05-01", "--set", "evaluate.report_dir=reports/../../x"],
     "evaluate.report_dir"),
], ids=["source", "report_dir"])
def test_the_evaluate_cli_refuses_them_in_one_line(tmp_path, args, expected):
    result = subprocess.run(
        [sys.executable, "-m", "jobs.evaluate", "--warehouse", str(tmp_path / "wh"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("evaluate: error:") and expected in lines[0]
    assert not (tmp_path / "wh").exists()


def test_a_slice_value_with_quotes_and_backslashes_replaces_only_its_slice(spark, warehouse):
    values = [HOSTILE, "a\\b", "plain"]
    rows = [(v, i) for v in values for i in range(2)]
    tables.write(spark.createDataFrame(rows, "source string, n int"), warehouse, "sliced")
    for value in (HOSTILE, "a\\b"):
        new = spark.createDataFrame([(value, 10)], "source string, n int")
        tables.write(new, warehouse, "sliced", replace={"source": value})
    got = read_sorted(warehouse, "sliced")
    assert sorted(map(tuple, got[["source", "n"]].to_numpy().tolist())) == sorted(
        [(HOSTILE, 10), ("a\\b", 10), ("plain", 0), ("plain", 1)]
    )
