"""The stage graph: every stage declared once, and the nightly's order.

Each stage (``stpipe/stages/<name>.py``) declares the catalogue tables it reads and writes
and the config sections it depends on; ``jobs/<name>.py`` only parses arguments and runs it.
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import SparkSession

from stpipe.config import Settings
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext, run_stage
from stpipe.stages.embed import EMBED
from stpipe.stages.features import FEATURES
from stpipe.stages.finetune import FINETUNE
from stpipe.stages.granger import GRANGER
from stpipe.stages.ingest import INGEST
from stpipe.stages.orchestrate import run_pipeline
from stpipe.stages.recommend import RECOMMEND
from stpipe.stages.series import SERIES

# The nightly, in run order: each stage's inputs are written by the stages before it.
NIGHTLY: tuple[Stage, ...] = (INGEST, FEATURES, SERIES, GRANGER, FINETUNE, EMBED, RECOMMEND)

__all__ = [
    "EMBED", "FEATURES", "FINETUNE", "GRANGER", "INGEST", "NIGHTLY", "RECOMMEND", "SERIES",
    "Stage", "StageContext", "run_nightly", "run_stage",
]


def run_nightly(
    spark: SparkSession,
    settings: Settings,
    *,
    force: bool = False,
    force_stages: Iterable[str] = (),
    stages: Iterable[Stage] = NIGHTLY,
) -> StageResult:
    """Every stage of the nightly for ``settings.date`` (complete ones skipped), then housekeeping."""
    return run_pipeline(spark, settings, list(stages), force=force, force_stages=force_stages)
