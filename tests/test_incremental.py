"""Incremental nights: the ingest reads what is new and merges it on the order-line key.

Inputs are tiny canonical CSV files written here; every expected value is counted by hand
from those lines. Tables are read back with deltalake (not Spark, not stpipe).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import deltalake
import pandas as pd
import pytest

from jobs import ingest as ingest_job
from stpipe import catalogue
from stpipe.cli import base_parser
from stpipe.config import load_settings
from stpipe.incremental import FileStamp, new_files, since_date, stamp
from stpipe.stages import INGEST, run_stage
from tests.helpers import read_sorted

HEADER = "order_id,line_no,user_id,item_id,quantity,unit_price,ts,region\n"
A = "o1,1,u1,i1,1,10.0,2024-03-01 10:00:00,north\n"
B = "o2,1,u2,i2,2,5.0,2024-03-02 11:00:00,south\n"
B_FIXED = "o2,1,u2,i2,3,5.0,2024-03-02 11:00:00,south\n"  # a late correction of B's quantity
BAD = "o9,1,u9,i9,x,5.0,2024-03-02 12:00:00,south\n"  # bad_quantity
C = "o3,1,u3,i1,4,10.0,2024-03-03 09:00:00,east\n"
D = "o4,1,u1,i3,1,7.5,2024-03-04 08:00:00,north\n"
D2 = "o4,2,u1,i2,2,5.0,2024-03-04 08:00:00,north\n"
E = "o6,1,u2,i3,1,7.5,2024-03-05 08:00:00,south\n"


def _settings(warehouse: str, input_path: Path, date: str, **extra):
    return load_settings(None, {
        "storage.warehouse": warehouse, "run_date": date, "ingest.source": "canonical",
        "ingest.input": str(input_path), "privacy.pseudonymize": False, **extra,
    })


def _orders(warehouse: str) -> pd.DataFrame:
    return read_sorted(warehouse, catalogue.ORDERS_CLEAN.name)


def _quantities(warehouse: str) -> dict[str, int]:
    df = _orders(warehouse)
    return {f"{r.order_id}/{r.line_no}": int(r.quantity) for r in df.itertuples()}


def _version(warehouse: str, name: str) -> int:
    return deltalake.DeltaTable(str(Path(warehouse) / name)).version()


def _run_log_details(warehouse: str) -> list[dict]:
    log = deltalake.DeltaTable(str(Path(warehouse) / catalogue.RUN_LOG.name)).to_pandas()
    log = log[(log.stage == "ingest") & (log.status == "ok")].sort_values("finished")
    return [json.loads(m) for m in log.message]


def test_a_changed_quantity_is_applied_and_a_redelivered_file_changes_nothing(spark, tmp_path):
    wh = str(tmp_path / "wh")
    orders = tmp_path / "orders.csv"
    orders.write_text(HEADER + A + B + BAD)
    first = run_stage(spark, _settings(wh, orders, "2024-03-03"), INGEST)
    assert first.details["mode"] == "full"
    assert _quantities(wh) == {"o1/1": 1, "o2/1": 2}

    # the next delivery: B corrected, C new; A and the bad line delivered again
    orders.write_text(HEADER + A + B_FIXED + BAD + C)
    second = run_stage(spark, _settings(wh, orders, "2024-03-04"), INGEST)
    assert _quantities(wh) == {"o1/1": 1, "o2/1": 3, "o3/1": 4}
    # last order date 03-02 minus 3 late days: every line (from 03-01) is read again
    assert second.details["since"] == "2024-02-28"
    assert second.rows_in == 4
    assert (second.details["inserted"], second.details["updated"], second.details["unchanged"]) == (1, 1, 1)
    assert second.details["quarantined"] == 1
    quarantine = read_sorted(wh, catalogue.ORDERS_QUARANTINE.name)
    assert quarantine.reason.tolist() == ["bad_quantity"]  # not quarantined twice

    # the same delivery again: nothing inserted or updated, no table committed to
    versions = {n: _version(wh, n) for n in (catalogue.ORDERS_CLEAN.name, catalogue.ORDERS_QUARANTINE.name)}
    before = _orders(wh)
    third = run_stage(spark, _settings(wh, orders, "2024-03-04"), INGEST)
    assert (third.details["inserted"], third.details["updated"], third.details["unchanged"]) == (0, 0, 3)
    assert third.tables == []
    assert {n: _version(wh, n) for n in versions} == versions
    pd.testing.assert_frame_equal(_orders(wh), before)
    logged = _run_log_details(wh)
    assert [d.get("inserted") for d in logged] == [None, 1, 0]


def test_late_days_bound_what_a_file_source_reads_again(spark, tmp_path):
    wh = str(tmp_path / "wh")
    orders = tmp_path / "orders.csv"
    orders.write_text(HEADER + A + B + C)
    run_stage(spark, _settings(wh, orders, "2024-03-04"), INGEST)
    # A (03-01) and C (03-03) corrected, D new; with one late day only dates after 03-02 are read
    a_fixed = A.replace(",1,10.0,", ",5,10.0,")
    c_fixed = C.replace(",4,10.0,", ",6,10.0,")
    orders.write_text(HEADER + a_fixed + B + c_fixed + D)
    night = run_stage(spark, _settings(wh, orders, "2024-03-05", **{"ingest.late_days": 1}), INGEST)
    assert night.details["since"] == "2024-03-02"
    assert night.rows_in == 2  # C and D
    assert (night.details["inserted"], night.details["updated"], night.details["unchanged"]) == (1, 1, 0)
    assert _quantities(wh) == {"o1/1": 1, "o2/1": 2, "o3/1": 6, "o4/1": 1}  # A outside the window


def test_since_date():
    assert since_date(None, 3) is None
    assert since_date(dt.date(2024, 3, 2), 3) == dt.date(2024, 2, 28)
    assert since_date(dt.date(2024, 3, 2), 0) == dt.date(2024, 3, 2)


def test_a_file_is_new_until_its_path_size_and_time_are_recorded(tmp_path):
    old, grown = tmp_path / "a.csv", tmp_path / "b.csv"
    old.write_text("x\n")
    grown.write_text("y\n")
    recorded = [FileStamp(str(old.resolve()), 2, old.stat().st_mtime_ns), stamp(grown)]
    assert new_files([old, grown], recorded) == []
    grown.write_text("y\nz\n")  # appended to: a new size
    fresh = tmp_path / "c.csv"
    fresh.write_text("w\n")
    assert new_files([old, grown, fresh], recorded) == [grown, fresh]


def _scramble_keeping_stamp(path: Path) -> None:
    """Overwrite a file with bytes of the same length and restore its mtime: if ingest read it
    again, its lines would change the tables."""
    st = path.stat()
    garbage = b"#" * (st.st_size - 1) + b"\n"
    path.write_bytes(garbage)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_folder_source_reads_only_new_files_and_equals_a_full_refresh(spark, tmp_path):
    wh = str(tmp_path / "wh")
    folder = tmp_path / "orders"
    folder.mkdir()
    (folder / "part-0001.csv").write_text(HEADER + A + B + BAD)
    run_stage(spark, _settings(wh, folder, "2024-03-03"), INGEST)
    kept = (folder / "part-0001.csv").read_text()
    _scramble_keeping_stamp(folder / "part-0001.csv")
    # A delivered again, B corrected
    (folder / "part-0002.csv").write_text(HEADER + C + D + D2 + A + B_FIXED)
    night = run_stage(spark, _settings(wh, folder, "2024-03-05"), INGEST)
    assert night.details["files_read"] == 1 and night.rows_in == 5
    assert (night.details["inserted"], night.details["updated"], night.details["unchanged"]) == (3, 1, 1)
    assert _quantities(wh) == {"o1/1": 1, "o2/1": 3, "o3/1": 4, "o4/1": 1, "o4/2": 2}
    listed = deltalake.DeltaTable(str(Path(wh) / catalogue.INGEST_FILES.name)).to_pandas()
    assert sorted(Path(p).name for p in listed.path) == ["part-0001.csv", "part-0002.csv"]

    # nothing new: nothing read, nothing committed
    again = run_stage(spark, _settings(wh, folder, "2024-03-05"), INGEST)
    assert again.rows_in == 0 and again.details["files_read"] == 0 and again.tables == []

    # a line appended to part 2 (a new size): the file is read again, its row in the list updated
    with (folder / "part-0002.csv").open("a") as fh:
        fh.write(E)
    grown = run_stage(spark, _settings(wh, folder, "2024-03-06"), INGEST)
    assert grown.details["files_read"] == 1 and grown.rows_in == 6
    assert (grown.details["inserted"], grown.details["updated"], grown.details["unchanged"]) == (1, 0, 5)
    listed = deltalake.DeltaTable(str(Path(wh) / catalogue.INGEST_FILES.name)).to_pandas()
    sizes = dict(zip(listed.path.map(lambda p: Path(p).name), listed["size"], strict=True))
    assert sizes == {"part-0001.csv": len(kept), "part-0002.csv": (folder / "part-0002.csv").stat().st_size}

    # a full refresh of the same files in a fresh warehouse: the same orders_clean (part 2's
    # B supersedes part 1's, A's second copy is a duplicate)
    (folder / "part-0001.csv").write_text(kept)
    fresh = str(tmp_path / "fresh")
    full = run_stage(spark, _settings(fresh, folder, "2024-03-06", **{"ingest.incremental": False}), INGEST)
    assert full.details["reasons"] == {"bad_quantity": 1, "duplicate_row": 1, "superseded": 1}
    pd.testing.assert_frame_equal(_orders(fresh), _orders(wh))


def test_a_folder_source_whose_orders_table_is_gone_is_read_whole_again(spark, tmp_path):
    """The file list says what was read, the orders table what was kept: without the latter the
    listed files must be read again (merging only the new ones would lose the old lines)."""
    wh = str(tmp_path / "wh")
    folder = tmp_path / "orders"
    folder.mkdir()
    (folder / "part-0001.csv").write_text(HEADER + A + B)
    run_stage(spark, _settings(wh, folder, "2024-03-03"), INGEST)
    shutil.rmtree(Path(wh) / catalogue.ORDERS_CLEAN.name)
    (folder / "part-0002.csv").write_text(HEADER + C)
    night = run_stage(spark, _settings(wh, folder, "2024-03-04"), INGEST)
    assert night.details["mode"] == "full" and night.details["files_read"] == 2
    assert _quantities(wh) == {"o1/1": 1, "o2/1": 2, "o3/1": 4}


def test_full_refresh_after_incremental_nights_gives_the_same_orders(spark, tmp_path):
    wh, fresh = str(tmp_path / "wh"), str(tmp_path / "fresh")
    orders = tmp_path / "orders.csv"
    nights = [("2024-03-03", A + B + BAD), ("2024-03-04", A + B_FIXED + BAD + C), ("2024-03-05", A + B_FIXED + BAD + C + D + D2)]
    for date, lines in nights:
        orders.write_text(HEADER + lines)
        run_stage(spark, _settings(wh, orders, date), INGEST)
    run_stage(spark, _settings(fresh, orders, nights[-1][0], **{"ingest.incremental": False}), INGEST)
    pd.testing.assert_frame_equal(_orders(wh), _orders(fresh))
    assert len(_orders(wh)) == 5
    # and a full refresh of the incremental warehouse itself leaves it as it was
    before = _orders(wh)
    refreshed = run_stage(spark, _settings(wh, orders, nights[-1][0], **{"ingest.incremental": False}), INGEST)
    assert refreshed.details["mode"] == "full"
    pd.testing.assert_frame_equal(_orders(wh), before)


@pytest.mark.parametrize("argv, expected", [([], None), (["--full-refresh"], False)])
def test_full_refresh_flag_turns_incremental_off(argv, expected):
    parser = base_parser("t")
    ingest_job.add_arguments(parser)
    assert ingest_job.overrides(parser.parse_args(argv))["ingest.incremental"] is expected
