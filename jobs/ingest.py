"""Ingest and clean: source adapter -> ``orders_clean``, ``orders_quarantine``, ``items`` (``reviews``).

    python -m jobs.ingest --source olist --input ../shared/datasets/olist_brazilian_ecommerce
    python -m jobs.ingest --source online_retail --input ../shared/datasets/uci_online_retail_2011h1
    spark-submit jobs/ingest.py --source synthetic --rows 20000 --seed 42
    python -m jobs.ingest --source canonical --input orders/ --full-refresh

Every row read ends in ``orders_clean`` or in ``orders_quarantine`` (with a reason code);
the job fails when rows read != clean + quarantined. A night reads and merges only what is new
(``ingest.incremental``); ``--full-refresh`` rebuilds the source's slices from the whole input.
The stage is ``stpipe.stages.ingest``.
"""

from __future__ import annotations

import argparse
from typing import Any

from stpipe.cli import main_for
from stpipe.stages import INGEST
from stpipe.stages.ingest import check_input


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--source", help="synthetic, olist, online_retail or canonical")
    parser.add_argument("--input", help="input file or folder (not for synthetic)")
    parser.add_argument("--rows", type=int, help="synthetic: number of order lines")
    parser.add_argument("--seed", type=int, help="synthetic: random seed")
    parser.add_argument(
        "--full-refresh", action="store_true",
        help="read the whole source and replace its slices (default: read and merge what is new)",
    )


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "ingest.source": args.source,
        "ingest.input": args.input,
        "ingest.rows": args.rows,
        "ingest.seed": args.seed,
        "ingest.incremental": False if args.full_refresh else None,
    }


def main(argv: list[str] | None = None) -> int:
    return main_for(INGEST, argv, description=__doc__, add_arguments=add_arguments, overrides=overrides,
                    preflight=check_input)


if __name__ == "__main__":
    raise SystemExit(main())
