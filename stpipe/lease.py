"""One writer per warehouse: a lease file that every job writing the warehouse holds.

The lease is ``<warehouse>/_stpipe_lease.json``: owner (host, pid, job), a random token, and
a heartbeat that a background thread renews every ``ttl / 3`` seconds. Creating it is atomic
and appears with its content (a hard link of a written file: ``link`` fails if the name exists),
so of two jobs started together exactly one gets it, and the other never reads a half-written
holder; the other
waits up to ``wait_seconds`` and then stops with a one-line message naming the holder. A
lease whose heartbeat is older than its ``ttl`` (its holder was killed) is taken over, with
a log line: the stale file is first renamed away (only one contender can rename it), then
created anew like a fresh one. A takeover also leaves ``_stpipe_crashed`` beside it: the dead
holder may have left data files outside any commit, and the next housekeeping vacuums every
table once to find them (:func:`crashed_since_housekeeping`).

Local folders and ``file:`` URIs only: an object store has no atomic create-if-absent here,
so for ``s3a:``, ``abfss:`` and ``gs:`` warehouses the lease is skipped with a warning (run
one writer per warehouse by scheduling).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stpipe.errors import ConfigError, PipelineError
from stpipe.tables import local_folder

log = logging.getLogger("stpipe.lease")

LEASE_FILE = "_stpipe_lease.json"
CRASH_MARKER = "_stpipe_crashed"


class LeaseHeld(PipelineError):
    """Another job holds the warehouse's lease."""


@dataclass
class Lease:
    """A held lease; :meth:`release` (or leaving the ``with`` block) gives it back."""

    path: Path | None
    owner: str
    token: str
    ttl_seconds: float
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: bool = False

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {"owner": self.owner, "token": self.token, "heartbeat": now,
                "expires": now + self.ttl_seconds, "ttl_seconds": self.ttl_seconds}

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_seconds / 3):
            current = _read(self.path)
            if current is None or current.get("token") != self.token:
                self.lost = True
                log.error("lease %s was taken over by %s; this run no longer holds it",
                          self.path, (current or {}).get("owner", "nobody"))
                return
            _write_atomic(self.path, self._record())

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.path is not None and (_read(self.path) or {}).get("token") == self.token:
            self.path.unlink(missing_ok=True)


def crashed_since_housekeeping(warehouse: str, *, clear: bool = False) -> bool:
    """Whether a lease was taken over from a dead holder since the marker was last cleared."""
    folder = local_folder(warehouse)
    marker = folder / CRASH_MARKER if folder is not None else None
    if marker is None or not marker.exists():
        return False
    if clear:
        marker.unlink(missing_ok=True)
    return True


def acquire(
    warehouse: str,
    *,
    job: str,
    ttl_seconds: float = 60.0,
    wait_seconds: float = 60.0,
    poll_seconds: float = 0.5,
) -> Lease:
    """Take the warehouse's lease, waiting up to ``wait_seconds`` for its holder to finish."""
    owner = f"{job} pid {os.getpid()} on {socket.gethostname()}"
    token = secrets.token_hex(8)
    folder = local_folder(warehouse)
    if folder is None:
        log.warning("warehouse %s is not a local folder: no lease, one writer is not enforced",
                    warehouse)
        return Lease(None, owner, token, ttl_seconds)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        raise ConfigError(f"storage.warehouse: {warehouse} is not a writable folder") from None
    path = folder / LEASE_FILE
    lease = Lease(path, owner, token, ttl_seconds)
    deadline = time.monotonic() + wait_seconds
    waited = False
    while True:
        if _create(path, lease._record()):
            break
        holder = _read(path)
        if holder is not None and time.time() > float(holder.get("expires", 0)):
            stale = path.with_name(f"{LEASE_FILE}.stale-{token}")
            try:
                path.rename(stale)  # only one contender renames it; the others see it gone
            except FileNotFoundError:
                continue
            log.warning("taking over the stale lease of %s (no heartbeat since %s)",
                        holder.get("owner"), time.strftime("%Y-%m-%d %H:%M:%S",
                                                           time.gmtime(holder.get("heartbeat", 0))))
            stale.unlink(missing_ok=True)
            (folder / CRASH_MARKER).touch()
            continue
        if time.monotonic() >= deadline:
            who = (holder or {}).get("owner", "another job")
            raise LeaseHeld(
                f"warehouse {warehouse} is in use by {who} (lease {path}); waited "
                f"{wait_seconds:g}s (storage.lease_wait_seconds)"
            )
        if not waited:
            log.info("warehouse %s is in use by %s: waiting up to %gs",
                     warehouse, (holder or {}).get("owner"), wait_seconds)
            waited = True
        time.sleep(poll_seconds)
    lease._thread = threading.Thread(target=lease._beat, name="stpipe-lease", daemon=True)
    lease._thread.start()
    log.info("lease %s taken by %s", path, owner)
    return lease


def _create(path: Path, record: dict[str, Any]) -> bool:
    """Create ``path`` holding ``record`` unless it exists, atomically and whole: the record is
    written to a private file first and linked to the name (``O_CREAT | O_EXCL`` would show a
    contender an empty file until the record is written, and it could not name the holder)."""
    draft = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}.new")
    draft.write_text(json.dumps(record))
    try:
        os.link(draft, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # a file system without hard links: exclusive create, then write
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            json.dump(record, out)
        return True
    finally:
        draft.unlink(missing_ok=True)


def _read(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None  # gone, or being written this instant


def _write_atomic(path: Path, record: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, path)
