"""Erase people: every row of theirs from every table, and kept out of later ingests.

    python -m jobs.forget --warehouse ./warehouse --source online_retail --user 17850
    python -m jobs.forget --source olist --users-file ids.txt   # one raw id per line

Ids are given as the source spells them; the job turns them into pseudonyms with the
warehouse's key and records only those (``erasures``). Running it again is a no-op. The
stage is ``stpipe.stages.forget``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from stpipe.cli import main_for
from stpipe.config import Settings
from stpipe.errors import InputError
from stpipe.stages.base import Stage
from stpipe.stages.forget import FORGET, forget_stage


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="the source the ids belong to (default: ingest.source)")
    parser.add_argument("--user", action="append", default=[], help="a raw user id (repeatable)")
    parser.add_argument("--users-file", help="a file of raw user ids, one per line")


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {"ingest.source": args.source}


def bind(args: argparse.Namespace, settings: Settings) -> Stage:
    ids = list(args.user)
    if args.users_file:
        path = Path(args.users_file).expanduser()
        if not path.is_file():
            raise InputError(f"--users-file: {path} not found")
        ids += path.read_text(encoding="utf-8").splitlines()
    return forget_stage(ids, settings.ingest.source)


def main(argv: list[str] | None = None) -> int:
    return main_for(
        FORGET, argv, description=__doc__,
        add_arguments=add_arguments, overrides=overrides, bind=bind,
    )


if __name__ == "__main__":
    raise SystemExit(main())
