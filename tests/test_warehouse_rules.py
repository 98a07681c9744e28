"""A warehouse holds one source unless asked; dated tables keep keep_days of slices."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import deltalake
import pytest

from jobs.nightly import nightly_stages
from stpipe import catalogue, tables
from stpipe.config import load_settings, replace
from stpipe.errors import ConfigError
from stpipe.runlog import StageResult
from stpipe.stages import INGEST, NIGHTLY, Stage, StageContext, orchestrate, run_stage

ROOT = Path(__file__).resolve().parent.parent
CANONICAL = ROOT / "tests" / "bad_inputs" / "canonical" / "with_items"


def _settings(warehouse: str, **extra):
    return replace(load_settings(), **{
        "storage.warehouse": warehouse, "run_date": "2024-06-01", "ingest.rows": 300,
        "ingest.synthetic_start": "2024-05-01", "ingest.synthetic_days": 20,
        "storage.optimize": False, "storage.vacuum": False, **extra,
    })


def test_the_default_synthetic_source_never_lands_beside_a_real_one(spark, warehouse):
    shop = _settings(warehouse, **{"ingest.source": "canonical", "ingest.input": str(CANONICAL)})
    run_stage(spark, shop, INGEST)
    orders = Path(warehouse) / catalogue.ORDERS_CLEAN.name
    version = deltalake.DeltaTable(str(orders)).version()
    with pytest.raises(ConfigError, match=(
        rf"warehouse {warehouse} holds source canonical; ingesting synthetic would mix them: "
        r"name it \(--source canonical --input PATH\), run the stages on what is there \(--no-ingest\)"
    )):
        run_stage(spark, _settings(warehouse), INGEST)
    assert deltalake.DeltaTable(str(orders)).version() == version  # refused before writing
    assert set(deltalake.DeltaTable(str(orders)).to_pandas().source) == {"canonical"}
    # the same source again is fine, and a second one when asked
    run_stage(spark, shop, INGEST)
    run_stage(spark, _settings(warehouse, **{"ingest.mixed_sources": True}), INGEST)
    sources = set(deltalake.DeltaTable(str(orders)).to_pandas().source)
    assert sources == {"canonical", "synthetic"}


def test_no_ingest_runs_every_stage_but_ingest():
    assert [s.name for s in nightly_stages(False)] == [s.name for s in NIGHTLY if s is not INGEST]
    assert nightly_stages(True) == NIGHTLY


@pytest.mark.slow
def test_many_nights_keep_keep_days_of_slices_and_a_bounded_layout(spark, warehouse):
    """Ten simulated nights of a dated table with keep_days 3 (the layout reaches its steady
    state after keep_days + 1 nights): slices older than keep_days are deleted and vacuumed, one
    file per kept night remains, and the folder stops growing over the last four nights."""
    table = catalogue.USER_EMBEDDINGS
    keep, nights = 3, 10
    first = dt.date(2024, 1, 1)
    sizes = []

    def night(ctx: StageContext) -> StageResult:
        rows = [(ctx.run_date, "s", f"u{i}", [0.1 * i, 1.0], 2, "m") for i in range(30)]
        return StageResult(rows_out=ctx.write(table, ctx.spark.createDataFrame(rows, table.schema)))

    writer = Stage("embed", night, outputs=(table,))
    for n in range(nights):
        settings = _settings(warehouse, **{
            "run_date": (first + dt.timedelta(days=n)).isoformat(), "storage.optimize": True,
            "storage.vacuum": True, "storage.vacuum_retention_hours": 0, "storage.keep_days": keep,
        })
        run_stage(spark, settings, writer)
        ctx = StageContext(spark, settings, Stage(orchestrate.HOUSEKEEPING, lambda c: None))
        orchestrate.housekeep(ctx, [table.name])
        folder = Path(warehouse) / table.name
        sizes.append(sum(p.stat().st_size for p in _data_files(folder)))
    last = first + dt.timedelta(days=nights - 1)
    got = deltalake.DeltaTable(str(Path(warehouse) / table.name)).to_pandas()
    assert sorted(set(got.run_date)) == [last - dt.timedelta(days=d) for d in range(keep, -1, -1)]
    files = _data_files(Path(warehouse) / table.name)
    assert len(files) == keep + 1  # one file per kept night, nothing else on disk
    assert max(sizes[keep + 3:]) <= 1.1 * sizes[keep + 1]  # no growth once the window is full
    # the retention DELETE is not a data change for the stages that read the table
    versions = [h for h in deltalake.DeltaTable(str(Path(warehouse) / table.name)).history()
                if h["operation"] == "DELETE"]
    assert versions and tables.data_version(spark, warehouse, table.name) < max(
        h["version"] for h in versions
    )


def _data_files(folder: Path) -> list[Path]:
    """The table's data files (the Delta log's checkpoints are parquet too, and not data)."""
    return [p for p in folder.rglob("*.parquet") if "_delta_log" not in p.parts]
