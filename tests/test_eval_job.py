"""The evaluate job end to end on generated data: table, report, JSON lines, rerun identical."""

import datetime as dt
import json
import math
from pathlib import Path

import deltalake
import numpy as np
import pandas as pd
import pytest
from pyspark.sql import types as T

from stpipe import catalogue, tables
from stpipe.adapters import synthetic
from stpipe.config import load_settings, replace
from stpipe.errors import ConfigError
from stpipe.stages import INGEST, evaluate, run_stage

CUTOFF = dt.date(2024, 2, 10)
HORIZON = 14
GEN = dict(rows=2000, seed=4, start="2024-01-01", days=60)


def _settings(warehouse, report_dir, **extra):
    return replace(
        load_settings(),
        **{
            "storage.warehouse": warehouse, "run_date": "2024-03-01", "ingest.source": "synthetic",
            "ingest.rows": GEN["rows"], "ingest.seed": GEN["seed"], "ingest.synthetic_start": GEN["start"],
            "ingest.synthetic_days": GEN["days"], "evaluate.cutoff": CUTOFF.isoformat(),
            "evaluate.horizon_days": HORIZON, "evaluate.ks": [5, 10], "evaluate.k": 5,
            "evaluate.report_dir": report_dir, "evaluate.models": ["pop_global", "own_history", "cooc"],
            "evaluate.json": True, **extra,
        },
    )


def _pandas_pop_global_hr5(lines: pd.DataFrame) -> tuple[float, int]:
    """pop_global's HR@5 (variant all) recomputed from the generated lines with pandas alone."""
    df = lines.assign(day=lines.ts.dt.date)
    cutoff, end = CUTOFF, CUTOFF + dt.timedelta(days=HORIZON)
    hist = df[df.day < cutoff]
    window = df[(df.day >= cutoff) & (df.day < end)]
    recent = hist[hist.day >= cutoff - dt.timedelta(days=90)]
    buyers = recent.groupby("item_id").user_id.nunique().reset_index()
    top5 = set(buyers.sort_values(["user_id", "item_id"], ascending=[False, True]).item_id[:5])
    users = sorted(set(window.user_id) & set(hist.user_id))
    hits = [bool(set(window[window.user_id == u].item_id) & top5) for u in users]
    return float(np.mean(hits)), len(users)


def _versions(warehouse: str) -> dict[str, int]:
    return {
        p.name: deltalake.DeltaTable(str(p)).version()
        for p in Path(warehouse).iterdir() if (p / "_delta_log").is_dir()
    }


def test_evaluate_job_twice_identical_with_report_and_json(spark, warehouse, tmp_path, capsys):
    # the user's warehouse holds the same orders, as after a nightly
    run_stage(spark, _settings(warehouse, str(tmp_path / "reports")), INGEST)
    nightly_tables = _versions(warehouse)
    settings = evaluate.evaluation_settings(_settings(warehouse, str(tmp_path / "reports")))
    own = settings.storage.warehouse
    assert own == str(Path(warehouse).resolve() / "_evaluate")
    first = run_stage(spark, settings, evaluate.EVALUATE)  # ingests into its own warehouse
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    before = tables.read(spark, own, catalogue.EVAL_METRICS.name).toPandas()
    # --no-ingest: the orders of the user's warehouse, read only
    run_stage(spark, replace(settings, **{"evaluate.ingest": False}), evaluate.EVALUATE)
    capsys.readouterr()
    after = tables.read(spark, own, catalogue.EVAL_METRICS.name).toPandas()
    assert _versions(warehouse) == nightly_tables  # the evaluation wrote nothing there

    key = ["level", "model", "variant", "k", "metric"]
    pd.testing.assert_frame_equal(
        before.sort_values(key).reset_index(drop=True), after.sort_values(key).reset_index(drop=True)
    )
    assert first.rows_out == len(after)
    # 3 models x 2 variants (own_history: `all` only) x 2 K x 6 metrics
    assert len(after) == 5 * 2 * 6
    assert set(after.source) == {"synthetic"} and set(after.cutoff) == {CUTOFF}
    assert set(after.level) == {"item"}

    pairs = {(x["model"], x["variant"]) for x in lines}
    assert pairs == {("pop_global", "all"), ("pop_global", "novel"), ("own_history", "all"),
                     ("cooc", "all"), ("cooc", "novel")}
    for x in lines:
        assert {"model", "variant", "users", "ndcg@5", "ndcg@10", "hr@5", "coverage@10"} <= set(x)

    lines_df, _ = synthetic.generate(**GEN)
    hr5, users = _pandas_pop_global_hr5(lines_df)
    pop = next(x for x in lines if x["model"] == "pop_global" and x["variant"] == "all")
    assert pop["users"] == users
    assert pop["hr@5"] == pytest.approx(hr5, abs=1e-6)
    row = after[(after.model == "pop_global") & (after.variant == "all") & (after.k == 5) & (after.metric == "hr")]
    assert row.value.iloc[0] == pytest.approx(hr5)
    assert row.stderr.iloc[0] == pytest.approx(math.sqrt(hr5 * (1 - hr5) / (users - 1)), rel=1e-6)

    report = Path(tmp_path / "reports" / f"synthetic-{CUTOFF}")
    text = (report / "report.md").read_text()
    assert "| own_history |" in text and "ndcg@5" in text
    assert (report / "item-all-vs-k.png").stat().st_size > 1000
    assert (report / "item-novel-models.png").stat().st_size > 1000


def test_evaluate_requires_a_cutoff(spark, warehouse, tmp_path):
    settings = _settings(warehouse, str(tmp_path), **{"evaluate.cutoff": None, "evaluate.ingest": False})
    with pytest.raises(ConfigError, match="cutoff"):
        run_stage(spark, settings, evaluate.EVALUATE)


def test_unknown_model_is_named(spark, warehouse, tmp_path):
    settings = _settings(warehouse, str(tmp_path), **{"evaluate.models": ["pop_global", "magic"]})
    with pytest.raises(ConfigError, match="magic"):
        evaluate.model_registry(spark, settings, settings.evaluate.models, orders=None, items=None,
                                cutoff=CUTOFF)


OLD_EVAL_METRICS = T.StructType([f for f in catalogue.EVAL_METRICS.schema.fields
                                 if f.name not in ("versus", "p_value")])


def _cornac_ndcg(lists: pd.DataFrame, truth: pd.DataFrame, k: int) -> float:
    """Mean NDCG@k over the truth's users, by cornac (an outside implementation)."""
    from cornac.metrics import NDCG

    metric = NDCG(k=k)
    ranked = {u: g.sort_values("rank").item_id.to_numpy() for u, g in lists.groupby("user_id")}
    scores = [metric.compute(gt_pos=g.item_id.to_numpy(), pd_rank=ranked.get(u, np.array([], dtype=object)))
              for u, g in truth.groupby("user_id")]
    return float(np.mean(scores))


def test_rolling_cutoffs_lists_tables_outside_ndcg_and_old_eval_metrics(spark, warehouse, tmp_path):
    settings = evaluate.evaluation_settings(_settings(
        warehouse, str(tmp_path / "reports"),
        **{"evaluate.cutoffs": ["2024-02-10", "2024-02-03"], "evaluate.models": ["pop_global", "cooc"]},
    ))
    own = settings.storage.warehouse
    # an eval_metrics table written by the code before versus/p_value existed, another cutoff
    old_row = (dt.date(2024, 3, 1), "pop_global", "all", 5, "hr", 0.5, 0.1, 7, "item", "synthetic",
               dt.date(2024, 1, 20))
    tables.write(spark.createDataFrame([old_row], OLD_EVAL_METRICS), own, catalogue.EVAL_METRICS.name)
    run_stage(spark, settings, evaluate.EVALUATE)

    runs = tables.read(spark, own, catalogue.RUN_LOG.name).toPandas()
    assert (runs.stage == "ingest").sum() == 1  # one ingest for both cutoffs
    metrics = tables.read(spark, own, catalogue.EVAL_METRICS.name).toPandas()
    assert sorted(set(metrics.cutoff)) == [dt.date(2024, 1, 20), dt.date(2024, 2, 3), CUTOFF]
    old = metrics[metrics.cutoff == dt.date(2024, 1, 20)]
    assert len(old) == 1 and old.versus.isna().all() and old.p_value.isna().all() and old.value.iloc[0] == 0.5
    assert metrics.versus.isna().all()  # no `full` evaluated: no paired rows

    lists = tables.read(spark, own, catalogue.EVAL_LISTS.name).toPandas()
    truth = tables.read(spark, own, catalogue.EVAL_TRUTH.name).toPandas()
    assert list(lists.columns) == catalogue.EVAL_LISTS.columns()
    checked = 0
    for (cutoff, variant, model), part in lists.groupby(["cutoff", "variant", "model"]):
        want = metrics[(metrics.cutoff == cutoff) & (metrics.variant == variant) & (metrics.model == model)
                       & (metrics.k == 10) & (metrics.metric == "ndcg") & (metrics.level == "item")]
        t = truth[(truth.cutoff == cutoff) & (truth.variant == variant)]
        assert t.user_id.nunique() == want.users.iloc[0]
        assert _cornac_ndcg(part, t, 10) == pytest.approx(want.value.iloc[0], abs=1e-9)
        checked += 1
    assert checked == 2 * 2 * 2  # cutoffs x variants x models
    # novel truth holds no history item of its user
    novel = truth[(truth.variant == "novel") & (truth.cutoff == CUTOFF)]
    all_ = truth[(truth.variant == "all") & (truth.cutoff == CUTOFF)]
    assert set(map(tuple, novel[["user_id", "item_id"]].values)) < set(map(tuple, all_[["user_id", "item_id"]].values))

    summary = (tmp_path / "reports" / "synthetic-cutoffs.md").read_text()
    assert "| model | 2024-02-03 | 2024-02-10 | mean |" in summary
    for cutoff in ("2024-02-03", "2024-02-10"):
        assert (tmp_path / "reports" / f"synthetic-{cutoff}" / "report.md").is_file()
    pop = metrics[(metrics.model == "pop_global") & (metrics.variant == "all") & (metrics.k == 5)
                  & (metrics.metric == "ndcg") & (metrics.level == "item")].set_index("cutoff").value
    mean = (pop[dt.date(2024, 2, 3)] + pop[CUTOFF]) / 2
    assert f"| pop_global | {pop[dt.date(2024, 2, 3)]:.4f} ± " in summary and f"| {mean:.4f} |" in summary


TINY_TUNING = {
    "model.finetune.kinds": ["order"], "model.finetune.batch_size": 8, "model.finetune.max_steps": 4,
    "model.finetune.eval_every_steps": 2, "model.finetune.validation_days": 7,
    "model.finetune.learning_rate": 3e-4, "model.finetune.seed": 5,
}


def test_full_runs_with_an_encoder_tuned_as_of_the_cutoff(spark, warehouse, tmp_path):
    from stpipe.finetune import registry

    # full_base_encoder's use of the base vectors is checked in test_evaluate_full (no Spark run)
    models = ["full", "content_base", "content_tuned"]
    settings = evaluate.evaluation_settings(_settings(
        warehouse, str(tmp_path / "reports"), **{"evaluate.models": models, "evaluate.json": False,
                                                 **TINY_TUNING},
    ))
    run_stage(spark, settings, evaluate.EVALUATE)
    scratch = evaluate.scratch_path(settings, "synthetic", CUTOFF)
    last = registry.latest_training(scratch)
    assert last is not None and last.as_of == CUTOFF  # trained on the orders before the cutoff only
    curve = registry.validation_curve(scratch, last.run_id)
    assert [step for step, _ in curve] == [0, 2, 4]
    labels = {r["model"] for r in tables.read(spark, scratch, catalogue.ITEM_EMBEDDINGS.name)
              .select("model").distinct().collect()}
    # embed used the registered version, or the base when the tuning did not beat it
    assert labels == ({f"stpipe-encoder-v{last.version}"} if last.version else {"all-MiniLM-L6-v2"})
    metrics = tables.read(spark, settings.storage.warehouse, catalogue.EVAL_METRICS.name).toPandas()
    assert set(models) <= set(metrics.model)
    paired = metrics[metrics.versus.notna()]
    assert {"content_base", "content_tuned"} <= set(paired.versus)
    assert set(paired[paired.model == "content_tuned"].versus) == {"content_base"}
    report = Path(tmp_path / "reports" / f"synthetic-{CUTOFF}")
    text = (report / "report.md").read_text()
    assert "## Encoder tuned as of the cutoff" in text and "| content_tuned |" in text
    assert (report / "encoder-validation.png").stat().st_size > 1000
