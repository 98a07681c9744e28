"""The nightly pipeline: every stage for one run date, in order, in one Spark application.

    python -m jobs.nightly --date 2024-06-29
    python -m jobs.nightly --date 2024-06-29 --force-stage ingest
    python -m jobs.nightly --date 2011-11-10 --no-ingest    # the stages on what is there
    python -m jobs.nightly --date 2024-06-29 --full-refresh # re-read the whole source
    spark-submit jobs/nightly.py --date 2024-06-29 --source olist --input PATH

Stages whose outputs for the date are complete (see ``stpipe.stages.orchestrate``) are
skipped unless ``--force`` (all) or ``--force-stage NAME`` (that one and, because its
tables change, the ones after it). Every stage is recorded in ``run_log``; the last
step is Delta housekeeping (retention, OPTIMIZE, VACUUM) as the ``storage`` config says. The
stage graph is ``stpipe.stages.NIGHTLY``. The source comes from ``--source``/``--input`` or the
config (``ingest.source``; the embedded default is ``synthetic``); a warehouse that holds another
source is refused before anything is written, and ``--no-ingest`` runs the other stages on the
orders already there.
"""

from __future__ import annotations

import argparse

from jobs import ingest
from stpipe.cli import main_for
from stpipe.runlog import StageResult
from stpipe.stages import INGEST, NIGHTLY, Stage, StageContext, run_nightly
from stpipe.stages.ingest import check_input
from stpipe.summary import summary_text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    ingest.add_arguments(parser)
    parser.add_argument(
        "--force", action="store_true", help="rerun every stage even when complete"
    )
    parser.add_argument(
        "--force-stage", action="append", default=[], metavar="NAME",
        help="rerun this stage (and the ones after it) even when complete (repeatable)",
    )
    parser.add_argument(
        "--no-ingest", action="store_true", help="skip ingest: run the stages on the orders there"
    )


def nightly_stages(ingest_too: bool = True) -> tuple[Stage, ...]:
    """The stage graph, without ingest for ``--no-ingest``."""
    return NIGHTLY if ingest_too else tuple(s for s in NIGHTLY if s is not INGEST)


def nightly_stage(force: bool, force_stages: tuple[str, ...], ingest_too: bool = True) -> Stage:
    """The whole pipeline as one unit for the command line (it records a ``nightly`` row)."""
    stages = nightly_stages(ingest_too)

    def run(ctx: StageContext) -> StageResult:
        result = run_nightly(
            ctx.spark, ctx.settings, force=force, force_stages=force_stages, stages=stages
        )
        print(summary_text(ctx.spark, ctx.warehouse), flush=True)
        return result

    return Stage("nightly", run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--force-stage", action="append", default=[])
    parser.add_argument("--no-ingest", action="store_true")
    parser.add_argument("--full-refresh", action="store_true")
    forced, _ = parser.parse_known_args(argv)
    # a full refresh is asked for a reason (corrections): ingest runs even when complete
    refresh = forced.full_refresh and not forced.no_ingest
    force_stages = (*forced.force_stage, *((INGEST.name,) if refresh else ()))
    stage = nightly_stage(forced.force, tuple(force_stages), not forced.no_ingest)
    return main_for(
        stage, argv, description=__doc__, add_arguments=add_arguments, overrides=ingest.overrides,
        preflight=None if forced.no_ingest else check_input,
    )


if __name__ == "__main__":
    raise SystemExit(main())
