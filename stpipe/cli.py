"""The command-line contract shared by every job.

``python -m jobs.<name>`` and ``spark-submit jobs/<name>.py`` accept ``--config``,
``--warehouse DIR``, ``--date YYYY-MM-DD`` and ``--set KEY=VALUE`` (any config
key). Exit code 0 on success; on failure one line on stderr and exit code 2
(``--verbose`` adds the stack trace).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable
from typing import Any

from stpipe.config import Settings, load_settings, parse_date, parse_override
from stpipe.errors import PipelineError
from stpipe.lease import acquire
from stpipe.stages.base import Stage, one_line, run_stage

log = logging.getLogger("stpipe")

ArgsToOverrides = Callable[[argparse.Namespace], dict[str, Any]]


def base_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=None, help="YAML config (default conf/local.yaml)")
    parser.add_argument("--warehouse", default=None, help="folder holding the Delta tables")
    parser.add_argument("--date", default=None, help="run date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set granger.max_lag=5 (repeatable)",
    )
    parser.add_argument("--verbose", action="store_true", help="stack traces on failure")
    return parser


def settings_from_args(args: argparse.Namespace, extra: dict[str, Any] | None = None) -> Settings:
    overrides: dict[str, Any] = dict(parse_override(text) for text in args.overrides)
    if args.warehouse:
        overrides["storage.warehouse"] = args.warehouse
    if args.date:
        parse_date(args.date, "--date")
        overrides["run_date"] = args.date
    overrides.update({k: v for k, v in (extra or {}).items() if v is not None})
    return load_settings(args.config, overrides)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("py4j", "matplotlib", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main_for(
    stage: Stage,
    argv: list[str] | None,
    *,
    description: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    overrides: ArgsToOverrides | None = None,
    adjust: Callable[[Settings], Settings] | None = None,
    bind: Callable[[argparse.Namespace, Settings], Stage] | None = None,
    preflight: Callable[[Settings], None] | None = None,
) -> int:
    """Parse arguments, build the session, run ``stage``; return the exit code.

    ``adjust`` turns the parsed settings into the ones the stage runs with (the evaluation:
    its own warehouse); the lease is taken on the warehouse it then names. ``bind`` builds
    the stage from the arguments (one of the same name: the erasure's ids). ``preflight``
    checks the settings before the lease and the Spark session (a missing input fails at once).
    """
    parser = base_parser(description)
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    spark = None
    lease = None
    try:
        settings = settings_from_args(args, overrides(args) if overrides else None)
        if adjust is not None:
            settings = adjust(settings)
        if bind is not None:
            stage = bind(args, settings)
        if preflight is not None:
            preflight(settings)
        storage = settings.storage
        lease = acquire(
            storage.warehouse, job=stage.name, ttl_seconds=storage.lease_ttl_seconds,
            wait_seconds=storage.lease_wait_seconds,
        )
        from stpipe.session import build_session  # imported late: keeps --help fast

        spark = build_session(settings.spark, app_name=f"stpipe-{stage.name}")
        result = run_stage(spark, settings, stage)
        summary = {"stage": stage.name, "run_date": str(settings.date), **dataclasses.asdict(result)}
        log.info("summary %s", summary)
        return 0
    except PipelineError as exc:
        print(f"{stage.name}: error: {one_line(exc)}", file=sys.stderr)
        if args.verbose:
            raise
        return 2
    except Exception as exc:  # unexpected: still one readable line
        print(f"{stage.name}: failed: {exc.__class__.__name__}: {one_line(exc)}", file=sys.stderr)
        if args.verbose:
            raise
        return 1
    finally:
        if spark is not None:
            spark.stop()
        if lease is not None:
            lease.release()
