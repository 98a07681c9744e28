"""One writer per warehouse: the lease (atomic create, heartbeat, stale takeover, CLI message)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from stpipe.lease import LEASE_FILE, LeaseHeld, acquire, crashed_since_housekeeping, local_folder

ROOT = Path(__file__).resolve().parent.parent


def test_a_second_job_is_refused_with_the_holders_name_until_the_first_releases(tmp_path):
    wh = str(tmp_path / "wh")
    first = acquire(wh, job="nightly", wait_seconds=0)
    with pytest.raises(LeaseHeld, match=rf"warehouse {wh} is in use by nightly pid {os.getpid()}"):
        acquire(wh, job="evaluate", wait_seconds=0)
    first.release()
    assert not (Path(wh) / LEASE_FILE).exists()
    with acquire(wh, job="evaluate", wait_seconds=0):
        assert (Path(wh) / LEASE_FILE).exists()


@pytest.mark.parametrize("round_", range(10))
def test_of_many_jobs_started_together_exactly_one_gets_the_lease(tmp_path, round_):
    wh = str(tmp_path / "wh")
    won, refused = [], []
    start = threading.Barrier(8)

    def contend(i: int) -> None:
        start.wait()
        try:
            won.append(acquire(wh, job=f"job{i}", wait_seconds=0))
        except LeaseHeld as exc:
            refused.append(str(exc))

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and len(refused) == 7
    # every refusal names the holder: a contender never reads a lease still being written
    holder = won[0].owner
    assert all(f"is in use by {holder} (lease" in message for message in refused), refused
    won[0].release()
    assert sorted(p.name for p in Path(wh).iterdir()) == []  # no draft left behind


def test_a_waiting_job_gets_the_lease_when_the_holder_releases(tmp_path):
    wh = str(tmp_path / "wh")
    first = acquire(wh, job="first", wait_seconds=0)
    threading.Timer(0.5, first.release).start()
    t0 = time.monotonic()
    with acquire(wh, job="second", wait_seconds=10, poll_seconds=0.05):
        assert 0.4 < time.monotonic() - t0 < 5


def test_the_heartbeat_keeps_a_live_lease_from_going_stale(tmp_path):
    wh = str(tmp_path / "wh")
    with acquire(wh, job="long", ttl_seconds=0.6, wait_seconds=0):
        time.sleep(1.5)  # 2.5 ttls: only the heartbeat keeps it fresh
        with pytest.raises(LeaseHeld):
            acquire(wh, job="other", wait_seconds=0)


def test_the_lease_of_a_killed_holder_is_taken_over_after_its_ttl(tmp_path, caplog):
    wh = str(tmp_path / "wh")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from stpipe.lease import acquire; "
         f"acquire({wh!r}, job='doomed', ttl_seconds=2, wait_seconds=0); "
         "print('held', flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
        with pytest.raises(LeaseHeld, match="in use by doomed"):
            acquire(wh, job="too-early", wait_seconds=0)  # not expired yet
        assert not crashed_since_housekeeping(wh)
        with caplog.at_level(logging.WARNING, logger="stpipe.lease"):
            lease = acquire(wh, job="next", wait_seconds=10, poll_seconds=0.1)
        assert any("taking over the stale lease of doomed" in r.getMessage() for r in caplog.records)
        lease.release()
        # the dead holder may have left files outside any commit: the next housekeeping looks
        assert crashed_since_housekeeping(wh, clear=True)
        assert not crashed_since_housekeeping(wh)
        acquire(wh, job="after", wait_seconds=0).release()  # a clean hand-over marks nothing
        assert not crashed_since_housekeeping(wh)
    finally:
        if holder.poll() is None:
            holder.kill()


def test_remote_warehouses_are_not_leased_and_local_uris_are(tmp_path):
    assert local_folder("s3a://bucket/wh") is None
    assert local_folder(f"file://{tmp_path}/wh") == tmp_path / "wh"
    assert local_folder(f"file:{tmp_path}/wh") == tmp_path / "wh"
    lease = acquire("s3a://bucket/wh", job="x", wait_seconds=0)
    assert lease.path is None
    lease.release()


@pytest.mark.slow
def test_a_job_started_while_the_warehouse_is_held_stops_with_one_line(tmp_path):
    wh = tmp_path / "wh"
    with acquire(str(wh), job="the nightly", wait_seconds=0):
        result = subprocess.run(
            [sys.executable, "-m", "jobs.ingest", "--warehouse", str(wh), "--date", "2024-06-01",
             "--rows", "500", "--set", "storage.lease_wait_seconds=0"],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)},
        )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("ingest:")]
    assert errors == [
        f"ingest: error: warehouse {wh} is in use by the nightly pid {os.getpid()} on "
        f"{os.uname().nodename} (lease {wh / LEASE_FILE}); waited 0s (storage.lease_wait_seconds)"
    ]
    assert sorted(p.name for p in wh.iterdir()) == []  # nothing written, the lease given back
