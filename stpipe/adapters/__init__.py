"""Source adapters: each reads one kind of order log into a :class:`RawInput`.

An adapter module exposes ``read_source(spark, ingest: IngestSettings) -> RawInput``; one
that reads folder sources (canonical) also takes ``skip``, the stamps of the files ingested
before, and reads only the others.
"""

from __future__ import annotations

import importlib
from collections.abc import Collection

from pyspark.sql import SparkSession

from stpipe.adapters.base import RawInput
from stpipe.config import IngestSettings
from stpipe.errors import ConfigError, InputError
from stpipe.incremental import FileStamp
from stpipe.settings_checks import SOURCES

ADAPTERS = SOURCES


def read_source(
    spark: SparkSession, ingest: IngestSettings, *, skip: Collection[FileStamp] | None = None
) -> RawInput:
    """Dispatch to the adapter named by ``ingest.source`` (``skip``: see the module doc)."""
    if ingest.source not in ADAPTERS:
        raise ConfigError(f"ingest.source: unknown source {ingest.source!r} (known: {', '.join(ADAPTERS)})")
    if ingest.source != "synthetic" and not ingest.input:
        raise InputError(f"source {ingest.source} needs --input PATH")
    module = importlib.import_module(f"stpipe.adapters.{ingest.source}")
    if skip and ingest.source == "canonical":
        return module.read_source(spark, ingest, skip=skip)
    return module.read_source(spark, ingest)
