"""The nightly pipeline: every stage for one run date, in order, in one Spark application.

    python -m jobs.nightly --date 2024-06-29
    python -m jobs.nightly --date 2024-06-29 --force-stage ingest
    spark-submit jobs/nightly.py --date 2024-06-29 --source olist --input PATH

Stages whose outputs for the date are complete (see ``stpipe.orchestrate``) are
skipped unless ``--force`` (all) or ``--force-stage NAME`` (that one and, because its
tables change, the ones after it). Every stage is recorded in ``run_log``; the last
step is Delta housekeeping (OPTIMIZE, VACUUM) as the ``storage`` config says.
"""

from __future__ import annotations

import argparse
import functools
import logging
from collections.abc import Iterable

from pyspark.sql import SparkSession

from jobs import ingest
from stpipe import orchestrate
from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.orchestrate import Stage
from stpipe.runlog import StageResult
from stpipe.summary import summary_text

log = logging.getLogger("stpipe.nightly")

# The single list of stages, in run order. A plain ("name", "jobs.module") pair works
# too; Stage(..., config=(sections,)) narrows which config changes make it rerun.
STAGES: list[Stage | tuple[str, str]] = [
    Stage("ingest", "jobs.ingest", config=("ingest",), reads_source=True),
    Stage("features", "jobs.features", config=("features",), inputs=("orders_clean", "items")),
    Stage("series", "jobs.series", config=("features",), inputs=("orders_clean", "items")),
    Stage("granger", "jobs.granger", config=("granger",), inputs=("sales_series",)),
    Stage(
        "embed", "jobs.embed", config=("model", "features", "recommend"),
        inputs=("orders_clean", "items"),
    ),
    Stage(
        "recommend", "jobs.recommend", config=("recommend", "features", "model"),
        inputs=("orders_clean", "items", "item_embeddings", "granger_stats"),
    ),
]


def run(
    spark: SparkSession,
    settings: Settings,
    *,
    force: bool = False,
    force_stages: Iterable[str] = (),
) -> StageResult:
    """Every stage of STAGES for ``settings.date``, then housekeeping; print a summary."""
    result = orchestrate.run_pipeline(
        spark, settings, STAGES, force=force, force_stages=force_stages
    )
    print(summary_text(spark, settings.storage.warehouse), flush=True)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ingest.add_arguments(parser)
    _add_force_arguments(parser)


def _add_force_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--force", action="store_true", help="rerun every stage even when complete"
    )
    parser.add_argument(
        "--force-stage", action="append", default=[], metavar="NAME",
        help="rerun this stage (and the ones after it) even when complete (repeatable)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    _add_force_arguments(parser)
    forced, _ = parser.parse_known_args(argv)
    fn = functools.partial(run, force=forced.force, force_stages=tuple(forced.force_stage))
    return main_for(
        "nightly", fn, argv, description=__doc__, add_arguments=add_arguments,
        overrides=ingest.overrides,
    )


if __name__ == "__main__":
    raise SystemExit(main())
