"""Offline evaluation: temporal split at a cutoff, our model and strong baselines, a report.

    python -m jobs.evaluate --source online_retail \\
        --input ../shared/datasets/uci_online_retail_2011h1/online_retail_2011h1.csv.gz \\
        --cutoff 2011-06-01 --horizon-days 28 --k 10 --warehouse ./warehouse --json

Writes the Delta table ``eval_metrics`` (slice run_date, source, cutoff replaced on rerun) and
``<evaluate.report_dir>/<source>-<cutoff>/report.md`` with PNG plots. With ``--json`` it prints
one JSON object per model and variant on stdout (logs go to stderr).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe import tables
from stpipe.cli import main_for
from stpipe.config import Settings, parse_date, replace
from stpipe.errors import ConfigError
from stpipe.evaluate import full as full_model
from stpipe.evaluate.baselines import BASELINES, AlsGrid, Model
from stpipe.evaluate.report import write_report
from stpipe.evaluate.runner import EVAL_METRICS, EvaluationResult, evaluate_split, metrics_rows
from stpipe.runlog import StageResult

log = logging.getLogger("stpipe.evaluate")

EVAL_TABLE = "eval_metrics"
MODEL_ORDER = [
    "pop_global", "pop_region", "own_history", "cooc", "als",
    "full", "full_no_bert", "full_no_causal", "full_no_timespace", "full_no_cooc",
]


def model_registry(
    spark: SparkSession, settings: Settings, names: list[str], *, orders: DataFrame, items: DataFrame,
    cutoff: dt.date,
) -> dict[str, Model]:
    """Name -> model function; `full` and its ablations run the pipeline as of the cutoff."""
    ev = settings.evaluate
    list_length = max(ev.category_candidates, 10 * max([*ev.ks, ev.k]))
    known = {
        **BASELINES,
        **full_model.models(spark, settings, orders=orders, items=items, cutoff=cutoff, list_length=list_length),
    }
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"evaluate.models: unknown model {unknown[0]!r} (known: {', '.join(known)})")
    return {name: known[name] for name in names}


def run(spark: SparkSession, settings: Settings) -> StageResult:
    ev = settings.evaluate
    if not ev.cutoff:
        raise ConfigError("evaluate.cutoff: required (--cutoff YYYY-MM-DD)")
    cutoff = parse_date(ev.cutoff, "evaluate.cutoff")
    source = settings.ingest.source
    warehouse = settings.storage.warehouse
    if ev.ingest:
        from jobs import ingest

        # the run date of the ingest lies after the window, so no order counts as future
        ingest_date = max(settings.date, cutoff + dt.timedelta(days=ev.horizon_days))
        ingest.run(spark, replace(settings, run_date=ingest_date.isoformat()))
    orders = tables.read(spark, warehouse, "orders_clean").where(F.col("source") == source)
    items = tables.read(spark, warehouse, "items").where(F.col("source") == source)
    registry = model_registry(spark, settings, ev.models, orders=orders, items=items, cutoff=cutoff)
    result = evaluate_split(
        spark, orders, items.select("item_id", "category").toPandas(), registry,
        cutoff=cutoff, horizon_days=ev.horizon_days, ks=ev.ks, k=ev.k,
        pop_window_days=ev.pop_window_days, decay_days=ev.decay_days,
        als=AlsGrid(tuple(ev.als_ranks), tuple(ev.als_reg_params), tuple(ev.als_alphas), ev.als_max_iter, ev.seed),
        category_level=source in ev.category_sources, category_candidates=ev.category_candidates,
    )
    rows = metrics_rows(result.metrics, run_date=settings.date, source=source, cutoff=cutoff)
    df = spark.createDataFrame(rows, EVAL_METRICS)
    written = tables.write(df, warehouse, EVAL_TABLE, replace={"run_date": settings.date, "source": source,
                                                              "cutoff": cutoff})
    report = write_report(
        result.metrics, Path(ev.report_dir) / f"{source}-{cutoff.isoformat()}",
        source=source, cutoff=cutoff.isoformat(), horizon_days=ev.horizon_days, k=ev.k,
        model_order=MODEL_ORDER, facts=result.facts, unavailable=result.unavailable,
    )
    log.info("evaluate: report at %s", report)
    if ev.json:
        for line in json_lines(result, source=source, cutoff=cutoff):
            print(json.dumps(line, sort_keys=False), flush=True)
    return StageResult(
        rows_in=int(result.facts.get("history interactions (user, item, day)", 0)),
        rows_out=written,
        tables=[EVAL_TABLE],
        details={"report": str(report), "unavailable": result.unavailable},
    )


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="synthetic, olist, online_retail or canonical")
    parser.add_argument("--input", help="input file or folder (not for synthetic)")
    parser.add_argument("--cutoff", help="split date YYYY-MM-DD: history before, truth from it on")
    parser.add_argument("--horizon-days", type=int, help="days of truth after the cutoff")
    parser.add_argument("--k", type=int, help="the K the report leads with (added to evaluate.ks)")
    parser.add_argument("--json", action="store_true", help="one JSON object per model and variant on stdout")
    parser.add_argument("--no-ingest", action="store_true", help="use the orders_clean already in the warehouse")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ingest.source": args.source,
        "ingest.input": args.input,
        "evaluate.cutoff": args.cutoff,
        "evaluate.horizon_days": args.horizon_days,
        "evaluate.k": args.k,
    }
    if args.json:
        out["evaluate.json"] = True
    if args.no_ingest:
        out["evaluate.ingest"] = False
    return out


def main(argv: list[str] | None = None) -> int:
    return main_for(
        "evaluate", run, argv, description=__doc__, add_arguments=add_arguments, overrides=overrides
    )


if __name__ == "__main__":
    raise SystemExit(main())
