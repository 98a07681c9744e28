"""Source adapters: each reads one kind of order log into a :class:`RawInput`.

An adapter module exposes ``read_source(spark, ingest: IngestSettings) -> RawInput``.
"""

from __future__ import annotations

import importlib

from pyspark.sql import SparkSession

from stpipe.adapters.base import RawInput
from stpipe.config import SOURCES, IngestSettings
from stpipe.errors import ConfigError, InputError

ADAPTERS = SOURCES


def read_source(spark: SparkSession, ingest: IngestSettings) -> RawInput:
    """Dispatch to the adapter named by ``ingest.source``."""
    if ingest.source not in ADAPTERS:
        raise ConfigError(f"ingest.source: unknown source {ingest.source!r} (known: {', '.join(ADAPTERS)})")
    if ingest.source != "synthetic" and not ingest.input:
        raise InputError(f"source {ingest.source} needs --input PATH")
    module = importlib.import_module(f"stpipe.adapters.{ingest.source}")
    return module.read_source(spark, ingest)
