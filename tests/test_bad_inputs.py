"""The bad-input corpus (tests/bad_inputs/cases.yaml): each kind of malformed input either
stops the job before anything is written, with a one-line message naming the file, column
or key, or sends its bad rows to quarantine with a reason while the good rows go through.
Expected counts are hand-counted in the manifest; rows read = clean + quarantined always.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stpipe.adapters import read_source
from stpipe.config import load_settings
from stpipe.errors import PipelineError
from stpipe.stages import INGEST, StageContext, ingest, run_stage

CORPUS = Path(__file__).parent / "bad_inputs"
MANIFEST = yaml.safe_load((CORPUS / "cases.yaml").read_text())
CASES = MANIFEST["cases"]
ROOT = Path(__file__).resolve().parent.parent


def _settings(case: dict, warehouse: str):
    overrides = {
        "storage.warehouse": str(CORPUS / case["warehouse"]) if "warehouse" in case else warehouse,
        "run_date": case.get("date", MANIFEST["defaults"].get(case["source"], {}).get("date", "2024-06-01")),
        "ingest.source": case["source"],
        "ingest.input": str(CORPUS / case["input"]),
        **case.get("set", {}),
    }
    return load_settings(None, overrides)


def test_corpus_is_big_enough():
    assert len(CASES) >= 25
    assert len({c["name"] for c in CASES}) == len(CASES)
    for case in CASES:
        assert ("error" in case) != ("rows" in case), case["name"]


@pytest.mark.parametrize("case", [c for c in CASES if "error" in c], ids=lambda c: c["name"])
def test_bad_input_stops_before_writing(spark, warehouse, case):
    with pytest.raises(PipelineError) as info:
        INGEST.run(StageContext(spark, _settings(case, warehouse), INGEST))  # no run_log row either
    message = str(info.value)
    assert case["error"] in message
    assert "\n" not in message and "Traceback" not in message
    assert os.listdir(warehouse) == []  # nothing written


@pytest.mark.parametrize("case", [c for c in CASES if "rows" in c], ids=lambda c: c["name"])
def test_bad_rows_are_quarantined_good_rows_pass(spark, warehouse, case):
    settings = _settings(case, warehouse)
    prepared = ingest.prepare(read_source(spark, settings.ingest), run_date=settings.date, ingest=settings.ingest)
    try:
        clean, quarantine = [], []
        for row in prepared.orders.unionByName(prepared.quarantine, allowMissingColumns=True).collect():
            (quarantine if row["reason"] else clean).append(row)
        reasons: dict[str, int] = {}
        for row in quarantine:
            reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        assert prepared.rows_read == case["rows"]
        assert len(clean) + len(quarantine) == case["rows"]
        assert len(clean) == case["clean"]
        assert reasons == case["reasons"]
        assert prepared.reasons == case["reasons"]
        for row in quarantine:  # every quarantined row keeps its origin
            assert row["raw_record"] and row["source_file"] and row["detail"]
        for column, expected in case.get("values", {}).items():
            got = [str(r[column]) for r in clean if r[column] is not None]
            assert sorted(got) == sorted(expected), column
        if "items" in case:
            assert prepared.items.count() == case["items"]
        if "reviews" in case:
            assert prepared.reviews is not None and prepared.reviews.count() == case["reviews"]
    finally:
        prepared.checked.unpersist()


def test_olist_tiny_items_and_reviews(spark, warehouse):
    case = next(c for c in CASES if c["name"] == "olist_tiny")
    settings = _settings(case, warehouse)
    prepared = ingest.prepare(read_source(spark, settings.ingest), run_date=settings.date, ingest=settings.ingest)
    try:
        items = {r["item_id"]: (r["title"], r["category"]) for r in prepared.items.collect()}
        assert items == {
            "pA": ("health_beauty", "health_beauty"),  # English name
            "pB": ("pc_gamer", "pc_gamer"),  # no translation: the Portuguese slug
            "pC": ("unknown", "unknown"),  # no category
        }
        reviews = {r["order_id"]: r for r in prepared.reviews.collect()}
        assert reviews["o1"]["text"] == "Otimo\nChegou rapido.\nRecomendo."
        assert reviews["o1"]["score"] == 5 and reviews["o1"]["user_id"] == "p1"
        assert reviews["o2"]["text"] is None
        assert str(reviews["o1"]["ts"]) == "2018-01-20 02:00:00"  # midnight in Sao Paulo (UTC-2, summer time)
    finally:
        prepared.checked.unpersist()


def test_written_tables_reconcile_and_rerun_is_identical(spark, warehouse):
    from stpipe import tables

    case = next(c for c in CASES if c["name"] == "online_retail_quirks")
    settings = _settings(case, warehouse)
    first = run_stage(spark, settings, INGEST)
    before = {n: sorted(map(tuple, tables.read(spark, warehouse, n).collect())) for n in first.tables}
    second = run_stage(spark, settings, INGEST)
    after = {n: sorted(map(tuple, tables.read(spark, warehouse, n).collect())) for n in first.tables}
    assert before == after
    assert second.tables == []  # the rerun (incremental) found nothing to change: no commit
    assert first.rows_in == 11 and first.rows_out == 3 and first.details["quarantined"] == 8
    assert ingest.counts_by_reason(spark, warehouse, "online_retail") == case["reasons"]


def _run_cli(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "jobs.ingest", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def _error_lines(stderr: str) -> list[str]:
    """stderr lines that are not Spark/JVM start-up chatter or log records."""
    noise = ("WARN", "Using Spark's default", "To adjust logging", "Setting default log level", "INFO")
    return [line for line in stderr.splitlines() if line.strip() and not any(n in line for n in noise)]


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, expected",
    [
        (["--source", "canonical", "--input", str(CORPUS / "canonical/missing_column.csv")], "missing required column unit_price"),
        (["--source", "canonical", "--input", str(CORPUS / "canonical/no_such_file.csv")], "no_such_file.csv"),
        (["--source", "canonical", "--input", str(CORPUS / "canonical/bom.csv"), "--set", "ingest.max_quantity=lots"], "ingest.max_quantity"),
    ],
    ids=["missing_column", "missing_file", "config_wrong_type"],
)
def test_cli_fails_with_one_line(tmp_path, args, expected):
    result = _run_cli([*args, "--warehouse", str(tmp_path / "wh"), "--date", "2024-06-01"])
    assert result.returncode != 0
    lines = _error_lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ingest: error:") and expected in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("job", ["jobs.ingest", "jobs.nightly"])
def test_a_missing_input_fails_before_the_lease_and_spark(tmp_path, job):
    wh = tmp_path / "wh"
    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", job, "--source", "online_retail", "--input", str(tmp_path / "gone.csv"),
         "--warehouse", str(wh), "--date", "2024-06-01"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    name = job.split(".")[1]
    assert _error_lines(result.stderr) == [f"{name}: error: input not found: {tmp_path / 'gone.csv'}"]
    assert not wh.exists()  # no lease was taken there and no Spark session started
