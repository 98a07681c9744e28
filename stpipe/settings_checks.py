"""Checks of configuration values that name things or bound numbers, run after the typed build.

:func:`stpipe.config.load_settings` and :func:`stpipe.config.replace` call :func:`check_values`;
the typed build (``stpipe.typed``) has already checked every key's type.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from stpipe.errors import ConfigError
from stpipe.finetune.settings import check_finetune

if TYPE_CHECKING:
    from stpipe.config import Settings

SOURCES = ("synthetic", "olist", "online_retail", "canonical")
ITEM_MODELS = ("ease", "jaccard")
FUSION_OBJECTIVES = ("listwise", "pointwise")


def _one_of(value: str, known: tuple[str, ...], key: str, what: str) -> None:
    if value not in known:
        raise ConfigError(f"{key}: unknown {what} {value!r} (known: {', '.join(known)})")


def check_values(settings: Settings) -> Settings:
    """Values that name things: a known source, a report folder without ``..``."""
    _one_of(settings.ingest.source, SOURCES, "ingest.source", "source")
    _one_of(settings.recommend.item_model, ITEM_MODELS, "recommend.item_model", "model")
    _one_of(settings.recommend.fusion_objective, FUSION_OBJECTIVES, "recommend.fusion_objective", "objective")
    from stpipe.catalogue import BY_NAME  # here: the catalogue's schemas import pyspark

    unknown = sorted(set(settings.storage.keep_days_by_table) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"storage.keep_days_by_table: unknown table {unknown[0]!r}")
    if settings.storage.compact_min_files < 2 or settings.storage.vacuum_every_days < 0:
        raise ConfigError(
            "storage: compact_min_files must be 2 or more and vacuum_every_days 0 or more, got "
            f"{settings.storage.compact_min_files} and {settings.storage.vacuum_every_days}"
        )
    check_finetune(settings.model.encoder, settings.model.finetune)
    rec = settings.recommend
    for key, value, ok, need in (
        ("recommend.recent_half_life_days", rec.recent_half_life_days, rec.recent_half_life_days > 0, "above 0"),
        ("recommend.rebuy_prior_buyers", rec.rebuy_prior_buyers, rec.rebuy_prior_buyers >= 0, "0 or more"),
        ("recommend.bert_kernel_power", rec.bert_kernel_power, rec.bert_kernel_power >= 0, "0 or more"),
        ("recommend.history_days", rec.history_days, rec.history_days >= rec.validation_days,
         f"at least recommend.validation_days ({rec.validation_days})"),
        ("evaluate.finetune_threads", settings.evaluate.finetune_threads, settings.evaluate.finetune_threads >= 1, "1 or more"),
        ("ingest.late_days", settings.ingest.late_days, settings.ingest.late_days >= 0, "0 or more"),
        ("model.embed_rows_per_task", settings.model.embed_rows_per_task,
         settings.model.embed_rows_per_task >= 1, "1 or more"),
    ):
        if not ok:
            raise ConfigError(f"{key}: must be {need}, got {value}")
    if ".." in Path(settings.evaluate.report_dir).parts:
        raise ConfigError(
            f"evaluate.report_dir: {settings.evaluate.report_dir!r} climbs out with '..'; name the "
            "reports folder itself"
        )
    return settings
