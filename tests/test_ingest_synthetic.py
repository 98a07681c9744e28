import datetime as dt

import pandas as pd
import pytest

from stpipe import catalogue, tables
from stpipe.adapters import synthetic
from stpipe.config import load_settings, replace
from stpipe.stages import INGEST, run_stage


@pytest.fixture(scope="module")
def generated():
    return synthetic.generate(rows=3000, seed=5, start="2024-01-01", days=60)


def test_generator_is_deterministic_and_seed_dependent(generated):
    again, _ = synthetic.generate(rows=3000, seed=5, start="2024-01-01", days=60)
    other, _ = synthetic.generate(rows=3000, seed=6, start="2024-01-01", days=60)
    pd.testing.assert_frame_equal(generated[0], again)
    assert not generated[0].equals(other)


def test_generator_plants_regional_tastes(generated):
    lines, items = generated
    df = lines.merge(items, on="item_id")
    for region, favourite in synthetic.REGION_TASTES.items():
        share_here = (df[df.region == region].category == favourite).mean()
        share_market = (df.category == favourite).mean()
        assert share_here > 1.3 * share_market, region


def test_generator_plants_evening_peak(generated):
    hours = generated[0].ts.dt.hour.value_counts(normalize=True).sort_index()
    assert hours.loc[19:21].sum() > hours.loc[2:4].sum() * 5


def _settings(warehouse, rows=2000):
    return replace(
        load_settings(),
        **{"storage.warehouse": warehouse, "run_date": "2024-03-01", "ingest.rows": rows,
           "ingest.synthetic_days": 60, "ingest.seed": 3},
    )


def test_ingest_twice_leaves_identical_tables(spark, warehouse):
    s = _settings(warehouse)
    first = run_stage(spark, s, INGEST)
    before = tables.read(spark, warehouse, catalogue.ORDERS_CLEAN.name).toPandas()
    second = run_stage(spark, s, INGEST)
    after = tables.read(spark, warehouse, catalogue.ORDERS_CLEAN.name).toPandas()
    assert first.rows_in == first.rows_out + first.details["quarantined"]
    key = ["order_id", "line_no"]
    pd.testing.assert_frame_equal(
        before.sort_values(key).reset_index(drop=True), after.sort_values(key).reset_index(drop=True)
    )
    lines, _ = synthetic.generate(rows=2000, seed=3, start="2024-01-01", days=60)
    assert len(after) == len(lines)  # generated data is clean: nothing quarantined
    assert after.order_date.min() == dt.date(2024, 1, 1)
    # the second run is incremental: it reads the lines dated after the last order date minus
    # ingest.late_days (3), finds each already there, and commits nothing
    since = lines.ts.dt.date.max() - dt.timedelta(days=3)
    assert second.details["since"] == since.isoformat()
    assert second.rows_in == second.details["unchanged"] == (lines.ts.dt.date > since).sum() > 0
    assert second.details["inserted"] == second.details["updated"] == 0 and second.tables == []
    history = spark.sql(f"DESCRIBE HISTORY delta.`{tables.table_path(warehouse, catalogue.ORDERS_CLEAN.name)}`")
    assert history.count() == 1


def test_staged_lines_equal_the_generator_and_are_reused(tmp_path):
    s = replace(
        load_settings(),
        **{"ingest.rows": 1500, "ingest.seed": 5, "ingest.synthetic_days": 30,
           "ingest.synthetic_staging": str(tmp_path)},
    ).ingest
    lines, items = synthetic.generate(rows=1500, seed=5, start="2024-01-01", days=30)
    incomplete = synthetic.staging_folder(s, "x")
    incomplete.mkdir(parents=True)  # a folder without _COMPLETE (a killed run) is not trusted
    folder, staged_items = synthetic.stage(s, "x")
    assert folder == incomplete and (folder / "_COMPLETE").exists()
    staged = pd.read_parquet(folder).sort_values("source_row").reset_index(drop=True)
    assert staged["source_row"].tolist() == list(range(len(lines)))
    assert staged["order_id"].tolist() == lines["order_id"].tolist()
    assert staged["ts"].tolist() == lines["ts"].dt.strftime("%Y-%m-%d %H:%M:%S").tolist()
    assert staged["quantity"].tolist() == lines["quantity"].astype(str).tolist()
    pd.testing.assert_frame_equal(staged_items, items)
    mtime = (folder / "_COMPLETE").stat().st_mtime_ns
    again, again_items = synthetic.stage(s, "x")  # reused, not rewritten
    assert again == folder and (folder / "_COMPLETE").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(again_items, items)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]
