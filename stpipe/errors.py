"""Errors the pipeline reports to a person as one line, without a stack trace."""

from __future__ import annotations


class PipelineError(Exception):
    """A failure with a message meant for the person running the job."""


class ConfigError(PipelineError):
    """Bad configuration: unknown key, wrong type, unreadable file."""


class InputError(PipelineError):
    """Input that cannot be read at all: missing file, missing required column, bad header."""


class TableMissingError(PipelineError):
    """A stage needs a table that an earlier stage has not written yet."""


class ReconciliationError(PipelineError):
    """Rows read do not equal rows clean + rows quarantined."""


class SetupError(PipelineError):
    """The environment is incomplete (for example Delta Lake's jars are not available)."""
