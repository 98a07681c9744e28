"""Evaluate stage: temporal splits at one or more cutoffs, our model and strong baselines, reports.

Per cutoff it writes ``eval_metrics`` (with the paired rows of `full` against each model),
``eval_lists`` and ``eval_truth`` (each slice run_date, source, cutoff replaced on rerun) and
``<evaluate.report_dir>/<source>-<cutoff>/report.md`` with PNG plots; with several cutoffs
(``evaluate.cutoffs``) the source is ingested once and ``<source>-cutoffs.md`` summarises
them. `full` and its
ablations run the series, Granger, finetune (``evaluate.finetune``) and embed stages into a
scratch warehouse holding only the orders before the cutoff (:func:`prepare_scratch`); the
tuned encoder's validation curve is drawn into the cutoff's report.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe import tables
from stpipe.catalogue import (
    EVAL_LISTS,
    EVAL_METRICS,
    EVAL_TRUTH,
    GRANGER_STATS,
    ITEM_EMBEDDINGS,
    ITEMS,
    ORDERS_CLEAN,
)
from stpipe.config import EvaluateSettings, Settings, parse_date, replace
from stpipe.errors import ConfigError
from stpipe.evaluate import full as full_model
from stpipe.evaluate.context import AlsGrid, EaseGrid, Model
from stpipe.evaluate.names import MODEL_ORDER
from stpipe.evaluate.registry import BASELINES
from stpipe.evaluate.report import write_cutoffs_summary, write_report
from stpipe.evaluate.runner import EvaluationResult, evaluate_split, metrics_rows
from stpipe.recommend import RecommendOptions
from stpipe.recommend.shared import SharedWork
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext, run_stage
from stpipe.stages.embed import EMBED
from stpipe.stages.finetune import FINETUNE
from stpipe.stages.granger import GRANGER
from stpipe.stages.ingest import INGEST
from stpipe.stages.series import SERIES

log = logging.getLogger("stpipe.evaluate")


def evaluation_settings(settings: Settings) -> Settings:
    """The settings an evaluation runs with: it writes only to its own warehouse.

    ``storage.warehouse`` becomes ``evaluate.warehouse`` (default ``<warehouse>/_evaluate``),
    where the evaluation ingests (several sources side by side), writes ``eval_metrics`` and
    its ``run_log``; ``evaluate.orders_warehouse`` keeps the warehouse named by the user,
    read (never written) with ``evaluate.ingest: false``. Applying it twice changes nothing.
    """
    ev = settings.evaluate
    if ev.orders_warehouse is not None:
        return settings
    main = settings.storage.warehouse
    own = ev.warehouse or tables.table_path(main, "_evaluate")
    return replace(settings, **{
        "storage.warehouse": own, "evaluate.orders_warehouse": main, "ingest.mixed_sources": True,
    })


def scratch_path(settings: Settings, source: str, cutoff: dt.date) -> str:
    base = settings.evaluate.scratch_warehouse or settings.storage.warehouse
    return tables.table_path(base, f"{source}-{cutoff.isoformat()}")


def _write_history(orders: DataFrame, items: DataFrame, cutoff: dt.date) -> Stage:
    """A stage that writes the orders before ``cutoff`` and the items they bought."""

    def run(ctx: StageContext) -> StageResult:
        history = orders.where(F.col("ts") < F.lit(dt.datetime.combine(cutoff, dt.time())))
        bought = history.select("item_id").distinct()
        source = ctx.settings.ingest.source
        n = ctx.write(ORDERS_CLEAN, history, source=source)
        ctx.write(ITEMS, items.join(bought, "item_id", "left_semi"), source=source)
        return StageResult(rows_out=n)

    return Stage("evaluate_history", run, outputs=(ORDERS_CLEAN, ITEMS))


def prepare_scratch(
    spark: SparkSession, settings: Settings, orders: DataFrame, items: DataFrame, *,
    cutoff: dt.date, scratch: str, encoder: dict[str, Any] | None = None,
) -> full_model.Prepared:
    """Write the history into ``scratch``, run series, Granger, finetune (when
    ``evaluate.finetune``) and embed there, return the inputs (see :mod:`stpipe.evaluate.full`).

    The base encoder's vectors are read first (``base_item_embeddings``); ``encoder`` receives
    what the tuning did (:func:`encoder_summary`)."""
    stage_settings = replace(settings, run_date=cutoff.isoformat(), **{"storage.warehouse": scratch})
    if settings.evaluate.finetune:  # the base vectors first; the tuned ones replace them below
        stage_settings = replace(stage_settings, **{"model.encoder": "base"})
    for stage in (_write_history(orders, items, cutoff), SERIES, GRANGER, EMBED):
        run_stage(spark, stage_settings, stage)
    read = Stage("evaluate_inputs", lambda ctx: StageResult(),
                 inputs=(ORDERS_CLEAN, ITEMS, ITEM_EMBEDDINGS, GRANGER_STATS))
    ctx = StageContext(spark, stage_settings, read)
    base_vectors = None
    if settings.evaluate.finetune:
        base = ctx.read(ITEM_EMBEDDINGS).select("item_id", "embedding").toPandas()
        base_vectors = spark.createDataFrame(base, "item_id string, embedding array<float>")
        tuning = replace(stage_settings, **{
            "model.finetune.enabled": True, "model.finetune.threads": settings.evaluate.finetune_threads,
        })
        summary = encoder_summary(scratch, run_stage(spark, tuning, FINETUNE).details)
        # embed with this training's version (an older one of the scratch warehouse, trained with
        # other settings, never stands in), or the base when it did not beat the base
        version = summary["version"]
        tuned = replace(tuning, **{"model.encoder": str(version) if version else "base"})
        run_stage(spark, tuned, EMBED)
        if encoder is not None:
            encoder.update(summary)
        ctx = StageContext(spark, tuned, read)
    return full_model.Prepared(
        orders=ctx.read(ORDERS_CLEAN),
        items=ctx.read(ITEMS),
        item_embeddings=ctx.read(ITEM_EMBEDDINGS),
        granger_stats=ctx.read(GRANGER_STATS).where(F.col("run_date") == F.lit(cutoff)),
        base_item_embeddings=base_vectors,
    )


def encoder_summary(scratch: str, details: dict[str, Any]) -> dict[str, Any]:
    """The tuning's validation curve (step, recall@10), whether a version was registered, and
    whether it trained now or reused an earlier training of this scratch warehouse."""
    from stpipe.finetune import registry

    last = registry.latest_training(scratch)
    if last is None:  # too few pairs: nothing trained
        return {"curve": [], "version": None, "trained": False, "reason": details.get("reason")}
    return {"curve": registry.validation_curve(scratch, last.run_id), "version": last.version,
            "trained": bool(details.get("trained")), "reason": details.get("reason"),
            "as_of": last.as_of.isoformat()}


def model_registry(
    spark: SparkSession, settings: Settings, names: list[str], *, orders: DataFrame, items: DataFrame,
    cutoff: dt.date, work: SharedWork | None = None, encoder: dict[str, Any] | None = None,
) -> dict[str, Model]:
    """Name -> model function; `full` and its ablations run the pipeline as of the cutoff
    (``work``: their features and catalogues, computed once for all of them)."""
    ev = settings.evaluate
    list_length = max(ev.category_candidates, 10 * max([*ev.ks, ev.k]))
    scratch = scratch_path(settings, settings.ingest.source, cutoff)
    full = full_model.models(
        spark,
        prepare=lambda: prepare_scratch(
            spark, settings, orders, items, cutoff=cutoff, scratch=scratch, encoder=encoder
        ),
        cutoff=cutoff, list_length=list_length,
        opts=RecommendOptions.from_settings(settings.recommend, settings.features), shared=work,
    )
    known = {**BASELINES, **full}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"evaluate.models: unknown model {unknown[0]!r} (known: {', '.join(known)})")
    return {name: known[name] for name in names}


def evaluation_cutoffs(ev: EvaluateSettings) -> list[dt.date]:
    """``evaluate.cutoffs`` when given (rolling origin), else the one ``evaluate.cutoff``."""
    if ev.cutoffs:
        dates = [parse_date(c, "evaluate.cutoffs") for c in ev.cutoffs]
        if len(set(dates)) != len(dates):
            raise ConfigError(f"evaluate.cutoffs: a date is given twice in {ev.cutoffs}")
        return sorted(dates)
    if not ev.cutoff:
        raise ConfigError("evaluate.cutoff: required (--cutoff YYYY-MM-DD or --cutoffs D1,D2,...)")
    return [parse_date(ev.cutoff, "evaluate.cutoff")]


def run(ctx: StageContext) -> StageResult:
    spark, settings = ctx.spark, ctx.settings
    ev = settings.evaluate
    cutoffs = evaluation_cutoffs(ev)
    source = settings.ingest.source
    if ev.ingest:  # once for every cutoff
        # the run date of the ingest lies after the last window, so no order counts as future
        ingest_date = max(settings.date, cutoffs[-1] + dt.timedelta(days=ev.horizon_days))
        run_stage(spark, replace(settings, run_date=ingest_date.isoformat()), INGEST)
        given = ctx
    else:  # the orders already in the user's warehouse, read only
        there = replace(settings, **{"storage.warehouse": ev.orders_warehouse or ctx.warehouse})
        given = StageContext(spark, there, ctx.stage)
    orders = given.read(ORDERS_CLEAN).where(F.col("source") == source)
    items = given.read(ITEMS).where(F.col("source") == source)
    tables.add_missing_columns(spark, ctx.warehouse, EVAL_METRICS.name, EVAL_METRICS.schema)
    results: dict[dt.date, EvaluationResult] = {}
    written, reports = 0, []
    shared: dict[Any, Any] = {}  # fits and matrices reused across the cutoffs (same orders)
    for cutoff in cutoffs:
        result, rows, report = evaluate_cutoff(ctx, orders, items, cutoff=cutoff, shared=shared)
        results[cutoff] = result
        written += rows
        reports.append(str(report))
    if len(cutoffs) > 1:
        summary = write_cutoffs_summary(
            {c.isoformat(): (r.metrics, r.paired) for c, r in results.items()},
            Path(ev.report_dir) / f"{source}-cutoffs.md", source=source, horizon_days=ev.horizon_days,
            k=ev.k, model_order=list(MODEL_ORDER),
        )
        reports.append(str(summary))
        log.info("evaluate: summary over %d cutoffs at %s", len(cutoffs), summary)
    return StageResult(
        rows_in=sum(int(r.facts.get("history interactions (user, item, day)", 0)) for r in results.values()),
        rows_out=written,
        details={"report": reports[-1], "reports": reports,
                 "unavailable": {c.isoformat(): r.unavailable for c, r in results.items() if r.unavailable}},
    )


def evaluate_cutoff(
    ctx: StageContext, orders: DataFrame, items: DataFrame, *, cutoff: dt.date, shared: dict[Any, Any],
) -> tuple[EvaluationResult, int, Path]:
    """One split: its models, its slice of eval_metrics, eval_lists and eval_truth, its report."""
    spark, settings = ctx.spark, ctx.settings
    ev, source = settings.evaluate, settings.ingest.source
    work = SharedWork()  # the recommender's features and catalogues as of this cutoff
    encoder: dict[str, Any] = {}  # the tuning as of this cutoff, when `full` ran one
    try:
        registry = model_registry(
            spark, settings, ev.models, orders=orders, items=items, cutoff=cutoff, work=work,
            encoder=encoder,
        )
        result = evaluate_split(
            spark, orders, items.select("item_id", "category").toPandas(), registry,
            cutoff=cutoff, horizon_days=ev.horizon_days, ks=ev.ks, k=ev.k,
            pop_window_days=ev.pop_window_days, decay_days=ev.decay_days,
            als=AlsGrid(tuple(ev.als_ranks), tuple(ev.als_reg_params), tuple(ev.als_alphas), ev.als_max_iter, ev.seed),
            ease=EaseGrid(tuple(ev.ease_l2s), tuple(ev.ease_history_weights), ev.ease_max_items),
            category_level=source in ev.category_sources, category_candidates=ev.category_candidates,
            seed=ev.seed, shared=shared,
        )
    finally:
        work.close()
    rows = metrics_rows(result.metrics, run_date=settings.date, source=source, cutoff=cutoff, paired=result.paired)
    written = ctx.write(EVAL_METRICS, spark.createDataFrame(rows, EVAL_METRICS.schema), source=source, cutoff=cutoff)
    keys = {"run_date": settings.date, "source": source, "cutoff": cutoff}
    for table, frame in ((EVAL_LISTS, result.lists), (EVAL_TRUTH, result.truth)):
        pdf = frame.assign(**keys)[table.columns()]
        ctx.write(table, spark.createDataFrame(pdf, table.schema), source=source, cutoff=cutoff)
    report = write_report(
        result.metrics, Path(ev.report_dir) / f"{source}-{cutoff.isoformat()}",
        source=source, cutoff=cutoff.isoformat(), horizon_days=ev.horizon_days, k=ev.k,
        model_order=list(MODEL_ORDER), facts=result.facts, unavailable=result.unavailable,
        paired=result.paired, encoder=encoder or None,
    )
    log.info("evaluate: report at %s", report)
    if ev.json:
        for line in json_lines(result, source=source, cutoff=cutoff):
            print(json.dumps(line, sort_keys=False), flush=True)
    return result, written, report


def json_lines(result: EvaluationResult, *, source: str, cutoff: dt.date) -> list[dict[str, Any]]:
    """One object per (model, variant); the category level uses variant ``category``."""

    def num(x: float) -> float | None:
        return None if x is None or math.isnan(x) else round(float(x), 6)

    out = []
    m = result.metrics
    for (level, model, variant), part in m.groupby(["level", "model", "variant"], sort=False):
        line: dict[str, Any] = {
            "model": model,
            "variant": "category" if level == "category" else variant,
            "users": int(part.users.iloc[0]),
            "level": level,
            "source": source,
            "cutoff": cutoff.isoformat(),
        }
        for r in part.sort_values(["metric", "k"]).itertuples():
            line[f"{r.metric}@{r.k}"] = num(r.value)
        line["stderr"] = {f"{r.metric}@{r.k}": num(r.stderr) for r in part.itertuples()}
        out.append(line)
    for model, why in result.unavailable.items():
        out.append({"model": model, "variant": "all", "users": 0, "available": False, "reason": why,
                    "source": source, "cutoff": cutoff.isoformat()})
    return out


EVALUATE = Stage(
    "evaluate", run, inputs=(ORDERS_CLEAN, ITEMS), outputs=(EVAL_METRICS, EVAL_LISTS, EVAL_TRUTH),
    config=("evaluate",),
)
