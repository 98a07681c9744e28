"""The nightly pipeline: every stage for one run date, in order, in one Spark application.

    python -m jobs.nightly --date 2024-06-29
    spark-submit jobs/nightly.py --date 2024-06-29 --source olist --input PATH
"""

from __future__ import annotations

import importlib
import logging

from pyspark.sql import SparkSession

from jobs import ingest
from stpipe.cli import main_for, run_stage
from stpipe.config import Settings
from stpipe.runlog import StageResult
from stpipe.summary import summary_text

log = logging.getLogger("stpipe.nightly")

# (stage name, module with run(spark, settings) -> StageResult), in run order.
STAGES: list[tuple[str, str]] = [
    ("ingest", "jobs.ingest"),
]


def run(spark: SparkSession, settings: Settings) -> StageResult:
    done = []
    for name, module_name in STAGES:
        module = importlib.import_module(module_name)
        run_stage(spark, settings, name, module.run)
        done.append(name)
    print(summary_text(spark, settings.storage.warehouse), flush=True)
    return StageResult(tables=[], details={"stages": done})


def main(argv: list[str] | None = None) -> int:
    return main_for(
        "nightly",
        run,
        argv,
        description=__doc__,
        add_arguments=ingest.add_arguments,
        overrides=ingest.overrides,
    )


if __name__ == "__main__":
    raise SystemExit(main())
