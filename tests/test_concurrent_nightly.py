"""Two nightlies started together on one warehouse: one writes, the other stops at the lease."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import deltalake
import pytest

from stpipe import catalogue

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_nightlies_together_one_writes_and_run_log_matches_the_delta_history(tmp_path):
    wh = tmp_path / "wh"
    cmd = [
        sys.executable, "-m", "jobs.nightly", "--warehouse", str(wh), "--date", "2024-02-10",
        "--rows", "1500", "--set", "ingest.synthetic_days=40", "--set",
        "ingest.synthetic_start=2024-01-01", "--set", "storage.lease_wait_seconds=0",
        "--set", "spark.shuffle_partitions=2", "--set", "spark.conf.spark.ui.enabled=false",
        # compaction and VACUUM have their own tests (test_nightly, test_upkeep); here they
        # would only lengthen the winner's run, and the checks below are about its writes
        "--set", "storage.optimize=false", "--set", "storage.vacuum=false",
    ]
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=1200) for p in procs]
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 2], [o[1][-2000:] for o in outs]
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    errors = [line for line in outs[loser][1].splitlines() if line.startswith("nightly:")]
    assert len(errors) == 1
    assert errors[0].startswith(
        f"nightly: error: warehouse {wh} is in use by nightly pid {procs[winner].pid}"
    )

    log = deltalake.DeltaTable(str(wh / catalogue.RUN_LOG.name)).to_pandas()
    ok = log[log.status == "ok"]
    assert sorted(ok.stage) == sorted(
        ["ingest", "features", "series", "granger", "finetune", "embed", "recommend", "nightly"]
    )  # one run's rows (no housekeeping row: it is off here): the second nightly recorded nothing
    recorded: dict[str, set[int]] = {}
    for message in ok.message:
        for name, version in json.loads(message).get("commits", {}).items():
            if version is not None:  # None: an empty slice replaced by nothing commits nothing
                recorded.setdefault(name, set()).add(version)
    for name in {t.name for t in catalogue.ALL} - {catalogue.RUN_LOG.name}:
        if not (wh / name).is_dir():
            continue
        history = deltalake.DeltaTable(str(wh / name)).history()
        writes = {h["version"] for h in history if h["operation"] == "WRITE"}
        assert writes == recorded.get(name, set()), name  # each write is one the log vouches for
        for h in history:
            if h["version"] in writes:
                assert "stpipe_write" in json.loads(h["userMetadata"]), name
