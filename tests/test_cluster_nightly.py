"""The nightly submitted with spark-submit to a real standalone cluster equals a local run; the
finetune stage trains there through TorchDistributor in a barrier task on the worker.

The cluster is started and stopped with scripts/cluster.sh (what `make cluster-up` runs)
on free ports; the job goes through `make nightly` so it uses the Makefile's
SPARK_SUBMIT_FLAGS. Executors run this checkout's .venv python (DEPLOY=venv): packing the
7 GB environment into env.tar.gz (DEPLOY=packed) takes minutes and gigabytes per run,
and on one machine the unpacked archive would run the very same interpreter anyway.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import yaml
from helpers import NIGHTLY_DATE, nightly_settings, read_sorted

from stpipe import catalogue
from stpipe.config import load_settings, replace
from stpipe.finetune import registry

ROOT = Path(__file__).resolve().parent.parent
RUN_DATE = NIGHTLY_DATE  # the session's shared nightly (conftest completed_nightly) is the local run
ROWS = 2000
# conf/local.yaml (what the shared local nightly reads) with these keys replaced
CONFIG = """\
spark:
  shuffle_partitions: 2
  log_level: ERROR
  conf:
    spark.ui.enabled: "false"
    spark.executor.memory: 1g
storage:
  optimize: false
  vacuum: false
ingest:
  synthetic_start: "2024-01-01"
  synthetic_days: 40
model:
  finetune:  # a few steps, in the same submission: the local run has the stage off, and embed
    enabled: true  # uses the base encoder either way (model.encoder: base), so tables still match
    kinds: [order]
    batch_size: 8
    max_steps: 4
    eval_every_steps: 2
    validation_days: 7
    learning_rate: 3.0e-4
"""

pytestmark = pytest.mark.cluster


def _merged(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merged(out.get(key) or {}, value) if isinstance(value, dict) else value
    return out


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@pytest.fixture
def cluster(tmp_path):
    port, webui, worker_webui = _free_ports(3)
    folder = tmp_path / "cluster"
    script = str(ROOT / "scripts" / "cluster.sh")
    up = subprocess.run(
        [script, "up", "--port", str(port), "--webui-port", str(webui),
         "--worker-webui-port", str(worker_webui), "--dir", str(folder)],
        capture_output=True, text=True,
    )
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout.strip().splitlines()[-1] == f"spark://127.0.0.1:{port}"
        yield f"spark://127.0.0.1:{port}", folder / "logs"
    finally:
        subprocess.run([script, "down", "--dir", str(folder)], capture_output=True)


def _make(*args: str) -> subprocess.CompletedProcess:
    # -o: the venv counts as installed (CI's `make test` has just run setup)
    return subprocess.run(
        ["make", "-o", ".venv/.installed", *args], cwd=ROOT, capture_output=True, text=True
    )


_table = read_sorted


def test_nightly_on_a_standalone_cluster_equals_a_local_run(cluster, completed_nightly, tmp_path):
    master, logs = cluster
    config = tmp_path / "cluster.yaml"
    local_yaml = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    config.write_text(yaml.safe_dump(_merged(local_yaml, yaml.safe_load(CONFIG))))
    remote = tmp_path / "remote"
    # the cluster runs what the shared local nightly ran: the same data, date and settings (only
    # Spark's own settings differ)
    ours = replace(
        load_settings(config),
        **{"storage.warehouse": "w", "run_date": RUN_DATE, "ingest.rows": ROWS, "ingest.seed": 42},
    )
    local_settings = nightly_settings("w")
    for section in ("run_date", "ingest", "features", "granger", "recommend", "privacy"):
        assert getattr(ours, section) == getattr(local_settings, section), section
    assert dataclasses.replace(ours.model, finetune=local_settings.model.finetune) == local_settings.model
    assert ours.model.encoder == "base" and not local_settings.model.finetune.enabled
    assert (ours.storage.optimize, ours.storage.vacuum) == (False, False)
    assert (local_settings.storage.optimize, local_settings.storage.vacuum) == (False, False)

    built = _make("package", "PACKAGE_ARGS=--wheel-only")
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    submitted = _make(
        "nightly", f"MASTER={master}", "DEPLOY=venv", f"CONFIG={config}",
        f"WAREHOUSE={remote}", f"DATE={RUN_DATE}", f"ROWS={ROWS}", "SEED=42",
    )
    assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
    assert f"--master {master}" in submitted.stdout and "--py-files dist/stpipe-" in submitted.stdout

    # The work really ran on the cluster: the master registered the app, the worker ran executors.
    master_log = next(logs.glob("*Master*.out")).read_text()
    worker_log = next(logs.glob("*Worker*.out")).read_text()
    assert "Registering app stpipe-nightly" in master_log
    assert "Asked to launch executor" in worker_log

    local = completed_nightly.folder
    names = sorted(p.name for p in local.iterdir() if (p / "_delta_log").is_dir())
    assert sorted(p.name for p in remote.iterdir() if (p / "_delta_log").is_dir()) == names
    for name in names:
        if name == catalogue.RUN_LOG.name:
            continue
        pd.testing.assert_frame_equal(_table(remote, name), _table(local, name), obj=name)

    # The finetune stage ran in the same submission, on the orders the cluster nightly wrote: the
    # training ran on the worker (TorchDistributor, local_mode off), its encoder is in MLflow.
    log = _table(remote, catalogue.RUN_LOG.name)
    row = log[log.stage == "finetune"].sort_values("started").iloc[-1]
    details = json.loads(row.message)
    assert row.status == "ok" and details["trained"] is True, details
    assert details["trained_on"] == "executor" and details["steps"] == 4
    last = registry.latest_training(str(remote))
    assert last is not None and str(last.as_of) == RUN_DATE
