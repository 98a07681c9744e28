"""Offline evaluation: temporal split at a cutoff, our model and strong baselines, a report.

    python -m jobs.evaluate --source online_retail \\
        --input ../shared/datasets/uci_online_retail_2011h1/online_retail_2011h1.csv.gz \\
        --cutoff 2011-06-01 --horizon-days 28 --k 10 --warehouse ./warehouse --json

Writes only to its own warehouse (``evaluate.warehouse``, default ``<warehouse>/_evaluate``: its
ingest, the stages as of the cutoff, ``run_log``), never to the warehouse a nightly uses; with
``--no-ingest`` it reads that warehouse's ``orders_clean``. Writes the Delta table
``eval_metrics``, ``eval_lists`` and ``eval_truth`` (slice run_date, source, cutoff replaced on
rerun) and ``<evaluate.report_dir>/<source>-<cutoff>/report.md`` with PNG plots; with
``--cutoffs D1,D2,...`` each cutoff is its own split, slice and report, the source is ingested
once and ``<report_dir>/<source>-cutoffs.md`` summarises them. With ``--json`` it prints
one JSON object per model and variant on stdout (logs go to stderr). The stage is
``stpipe.stages.evaluate``.
"""

from __future__ import annotations

import argparse
from typing import Any

from stpipe.cli import main_for
from stpipe.stages.evaluate import EVALUATE, evaluation_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="synthetic, olist, online_retail or canonical")
    parser.add_argument("--input", help="input file or folder (not for synthetic)")
    parser.add_argument("--cutoff", help="split date YYYY-MM-DD: history before, truth from it on")
    parser.add_argument("--cutoffs", help="several split dates D1,D2,... (rolling origin; replaces --cutoff)")
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
    if args.cutoffs:
        out["evaluate.cutoffs"] = [c.strip() for c in args.cutoffs.split(",") if c.strip()]
    if args.json:
        out["evaluate.json"] = True
    if args.no_ingest:
        out["evaluate.ingest"] = False
    return out


def main(argv: list[str] | None = None) -> int:
    return main_for(
        EVALUATE, argv, description=__doc__, add_arguments=add_arguments, overrides=overrides,
        adjust=evaluation_settings,
    )


if __name__ == "__main__":
    raise SystemExit(main())
