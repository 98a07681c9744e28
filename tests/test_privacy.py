"""Privacy: pseudonymous ids from ingest on, coarse positions, redacted quarantine, erasure.

Expected pseudonyms come from the standard library's hmac (tests/conftest.py), not from
stpipe.privacy; expected positions from the geohash bisection in tests/test_geo.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path

import deltalake
import pandas as pd
import pytest
from pyspark.sql import functions as F

from stpipe import catalogue, privacy
from stpipe.config import load_settings, replace
from stpipe.errors import ConfigError
from stpipe.stages import FEATURES, INGEST, run_stage
from stpipe.stages.forget import forget_stage
from tests.conftest import pseudonym_of
from tests.test_geo import reference_cell_centre

HEADER = "order_id,line_no,user_id,item_id,quantity,unit_price,ts,region,city,lat,lon,email\n"
LINES = [
    "O1,1,alice,I1,2,9.99,2024-03-01 10:00:00,North,Hamburg,53.5511,9.9937,alice@example.org",
    "O1,2,alice,I2,1,5.00,2024-03-01 10:00:00,North,Hamburg,53.5511,9.9937,alice@example.org",
    "O2,1,bob,I2,1,5.00,2024-03-02 11:30:00,South,Munich,48.1374,11.5755,bob@example.org",
    "O3,1,carol,I1,1,9.99,2024-03-03 09:00:00,North,Kiel,54.3233,10.1228,carol@example.org",
    "O4,1,alice,I2,1,5.00,2024-03-04 09:00:00,North,Hamburg,53.5511,9.9937,alice@example.org",
    # quarantined (a quantity that is not a number): its record keeps the known columns only
    "O5,1,bob,I1,many,5.00,2024-03-05 09:00:00,South,Munich,48.1374,11.5755,bob@example.org",
]
RAW_IDS = {"alice", "bob", "carol"}
EMAILS = {"alice@example.org", "bob@example.org", "carol@example.org"}
RAW_POSITIONS = {53.5511, 9.9937, 48.1374, 11.5755, 54.3233, 10.1228}


def _settings(warehouse: str, folder: Path, **extra):
    return replace(load_settings(), **{
        "storage.warehouse": warehouse, "run_date": "2024-03-10", "ingest.source": "canonical",
        "ingest.input": str(folder), "storage.optimize": False, "storage.vacuum": False, **extra,
    })


@pytest.fixture
def shop(tmp_path) -> Path:
    folder = tmp_path / "shop"
    folder.mkdir()
    (folder / "orders.csv").write_text(HEADER + "\n".join(LINES) + "\n")
    return folder


def _tables(warehouse: str) -> dict[str, pd.DataFrame]:
    out = {}
    for t in catalogue.ALL:
        path = Path(warehouse) / t.name
        if path.is_dir():
            out[t.name] = deltalake.DeltaTable(str(path)).to_pandas()
    return out


def _values(frames: dict[str, pd.DataFrame]) -> set[str]:
    """Every value of every column of every table as text, JSON records opened."""
    found: set[str] = set()
    for df in frames.values():
        for column in df.columns:
            for v in df[column].dropna():
                found.add(str(v))
                if isinstance(v, str) and v.startswith("{"):
                    found.update(str(x) for x in json.loads(v).values())
    return found


def test_the_spark_pseudonym_is_rfc_2104_hmac_sha256(spark):
    ids = ["17850", "alice", "Zoë ☕", "x" * 300, ""]
    df = spark.createDataFrame([(i,) for i in ids], "user_id string")
    for key in (b"short key", b"k" * 100):  # a key longer than SHA-256's block is hashed first
        got = [r[0] for r in df.select(privacy.pseudonym_col(key, "shop", F.col("user_id"))).collect()]
        want = [hmac.new(key, f"shop\x1f{i}".encode(), hashlib.sha256).hexdigest()[:32] for i in ids[:-1]]
        assert got == [*want, ""]  # a blank id stays blank (the cleaner quarantines it)
        assert privacy.pseudonym(key, "shop", "alice") == want[1]


def test_ingest_writes_pseudonyms_coarse_positions_and_only_known_columns(spark, warehouse, shop, caplog):
    with caplog.at_level(logging.INFO):
        result = run_stage(spark, _settings(warehouse, shop), INGEST)
    assert result.details["dropped_columns"] == ["email"]
    frames = _tables(warehouse)
    values = _values(frames)
    assert not (RAW_IDS | EMAILS) & values  # no raw id, no e-mail, in any column or record
    assert not {str(p) for p in RAW_POSITIONS} & values
    orders = frames[catalogue.ORDERS_CLEAN.name]
    assert set(orders.user_id) == {pseudonym_of("canonical", u) for u in RAW_IDS}
    hamburg = orders[orders.user_id == pseudonym_of("canonical", "alice")].iloc[0]
    assert (hamburg.lat, hamburg.lon) == pytest.approx(reference_cell_centre(53.5511, 9.9937, 5))
    record = json.loads(frames[catalogue.ORDERS_QUARANTINE.name].raw_record.iloc[0])
    assert record["user_id"] == pseudonym_of("canonical", "bob") and record["quantity"] == "many"
    assert not {"email", "lat", "lon"} & set(record)
    text = caplog.text
    assert not [s for s in RAW_IDS | EMAILS if s in text]


def test_forget_erases_a_person_everywhere_once_and_keeps_them_out(spark, warehouse, shop, caplog):
    settings = _settings(warehouse, shop)
    run_stage(spark, settings, INGEST)
    run_stage(spark, settings, FEATURES)
    before = _tables(warehouse)
    alice = pseudonym_of("canonical", "alice")
    with caplog.at_level(logging.INFO):
        result = run_stage(spark, settings, forget_stage([" alice "], "canonical"))
    assert "alice" not in caplog.text
    after = _tables(warehouse)
    for name, df in after.items():
        if "user_id" in df.columns and name != catalogue.ERASURES.name:
            assert alice not in set(df.user_id), name
    orders_before, orders_after = before[catalogue.ORDERS_CLEAN.name], after[catalogue.ORDERS_CLEAN.name]
    kept = orders_before[orders_before.user_id != alice]
    assert len(orders_after) == len(kept) == len(orders_before) - 3  # exactly her three lines
    key = ["order_id", "line_no"]
    pd.testing.assert_frame_equal(  # everyone else's lines untouched
        orders_after.sort_values(key).reset_index(drop=True), kept.sort_values(key).reset_index(drop=True)
    )
    assert result.details["deleted"][catalogue.ORDERS_CLEAN.name] == 3
    users = after[catalogue.USER_TIME_FEATURES.name]
    assert set(users.user_id) == {pseudonym_of("canonical", u) for u in ("bob", "carol")}
    erasures = after[catalogue.ERASURES.name]
    assert list(erasures.user_id) == [alice] and "alice" not in erasures.to_string()

    # a second request changes nothing: no commit in any table (run_log records the run)
    data = [n for n in after if n != catalogue.RUN_LOG.name]
    versions = {n: deltalake.DeltaTable(str(Path(warehouse) / n)).version() for n in data}
    again = run_stage(spark, settings, forget_stage(["alice"], "canonical"))
    assert again.rows_out == 0
    assert versions == {n: deltalake.DeltaTable(str(Path(warehouse) / n)).version() for n in data}

    # the next ingest of the same input keeps her out, and every line is accounted for
    rerun = run_stage(spark, settings, INGEST)
    assert rerun.details["erased"] == 3
    assert rerun.rows_in == rerun.rows_out + rerun.details["quarantined"] + 3
    orders = deltalake.DeltaTable(str(Path(warehouse) / catalogue.ORDERS_CLEAN.name)).to_pandas()
    assert alice not in set(orders.user_id) and len(orders) == len(kept)


def test_the_default_key_is_created_once_beside_the_tables_with_a_warning(
    spark, warehouse, shop, monkeypatch, caplog
):
    monkeypatch.delenv("STPIPE_PSEUDONYM_KEY")
    settings = _settings(warehouse, shop)
    with caplog.at_level(logging.WARNING):
        first = privacy.load_key(settings.privacy, warehouse)
    assert "no pseudonym key configured" in caplog.text
    key_file = Path(warehouse) / privacy.LOCAL_KEY
    assert key_file.stat().st_mode & 0o077 == 0  # readable by its owner only
    assert privacy.load_key(settings.privacy, warehouse) == first
    with pytest.raises(ConfigError, match="privacy.key_file: .* not found"):
        privacy.load_key(replace(settings, **{"privacy.key_file": "/nonexistent/key"}).privacy, warehouse)
    with pytest.raises(ConfigError, match="not a local folder; set privacy.key_env"):
        privacy.load_key(settings.privacy, "s3a://bucket/warehouse")


def test_the_id_map_exists_only_when_asked(spark, warehouse, shop):
    run_stage(spark, _settings(warehouse, shop), INGEST)
    assert not (Path(warehouse) / catalogue.USER_ID_MAP.name).exists()
    run_stage(spark, _settings(warehouse, shop, **{"privacy.keep_id_map": True}), INGEST)
    ids = deltalake.DeltaTable(str(Path(warehouse) / catalogue.USER_ID_MAP.name)).to_pandas()
    assert dict(zip(ids.raw_user_id, ids.user_id, strict=True)) == {
        u: pseudonym_of("canonical", u) for u in RAW_IDS
    }


def test_forget_without_ids_is_refused_in_one_line(spark, warehouse, shop):
    with pytest.raises(ConfigError, match=r"^no user id given \(--user ID or --users-file FILE\)$"):
        run_stage(spark, _settings(warehouse, shop), forget_stage(["", "  "], "canonical"))
