"""Finetune stage: purchase pairs as of the run date -> a tuned encoder registered in MLflow.

It writes no catalogue table: its product is a registered model version, which ``embed`` uses
when ``model.encoder`` is ``latest`` (or that version's number). Cadence: it trains when
``model.finetune.enabled`` and no training is known, the last one is ``every_days`` old or more
(in run dates) or newer than the run date, or the base weights, the training settings or the
history it saw (the lines before its as-of date) changed; otherwise it reuses the last one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
from pathlib import Path

from stpipe.catalogue import ITEMS, ORDERS_CLEAN
from stpipe.config import Settings
from stpipe.finetune import registry
from stpipe.finetune.pairs import mine_pairs, orders_fingerprint
from stpipe.finetune.trainer import local_mode, run_training, training_device
from stpipe.recommend.signals import item_texts
from stpipe.runlog import StageResult
from stpipe.stages.base import Stage, StageContext
from stpipe.stages.orchestrate import weights_digest
from udfs.finetune import TrainParams

log = logging.getLogger("stpipe.finetune")

# model.finetune keys that do not change what a training produces
_NOT_TRAINING = ("enabled", "every_days", "registered_name")


def settings_digest(settings: Settings) -> str:
    """SHA-256 of everything a training's result depends on besides data and base weights."""
    ft = {k: v for k, v in dataclasses.asdict(settings.model.finetune).items() if k not in _NOT_TRAINING}
    values = {"finetune": ft, "text_template": settings.model.text_template,
              "timezone": settings.features.timezone}
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def train_params(settings: Settings, device: str) -> TrainParams:
    ft = settings.model.finetune
    names = {f.name for f in dataclasses.fields(TrainParams)} - {"device", "k"}
    return TrainParams(device=device, **{n: getattr(ft, n) for n in names})


def retrain_reason(ctx: StageContext, last: registry.Training | None, base: str, digest: str) -> str | None:
    """Why the encoder must be trained again, or None to reuse the last training."""
    every = ctx.settings.model.finetune.every_days
    if last is None:
        return "no training yet"
    if last.as_of > ctx.run_date:
        return f"the last training is as of {last.as_of}, after the run date"
    if (ctx.run_date - last.as_of).days >= every:
        return f"the last training is as of {last.as_of}, {every} days or more ago"
    if last.base_digest != base:
        return "the base weights changed"
    if last.settings_digest != digest:
        return "the training settings changed"
    seen = orders_fingerprint(ctx.read(ORDERS_CLEAN), as_of=last.as_of,
                              timezone=ctx.settings.features.timezone)
    if seen != last.data_fingerprint:
        return f"the order history before {last.as_of} changed"
    return None


def run(ctx: StageContext) -> StageResult:
    settings, warehouse = ctx.settings, ctx.warehouse
    model, ft = settings.model, settings.model.finetune
    if not ft.enabled:
        log.info("finetune: model.finetune.enabled is false; nothing to do")
        return StageResult(rows_in=None, rows_out=0, details={"trained": False, "reason": "disabled"})
    base, digest = weights_digest(model.model_dir), settings_digest(settings)
    reason = retrain_reason(ctx, registry.latest_training(warehouse), base, digest)
    if reason is None:
        log.info("finetune: the last training is still current; reused")
        return StageResult(rows_in=None, rows_out=0, details={"trained": False, "reason": "current"})
    log.info("finetune: training (%s)", reason)
    orders, timezone = ctx.read(ORDERS_CLEAN), settings.features.timezone
    pairs = mine_pairs(
        orders, as_of=ctx.run_date, timezone=timezone, validation_days=ft.validation_days,
        next_within_days=ft.next_within_days, kinds=ft.kinds, max_pairs=ft.max_pairs,
        max_validation_pairs=ft.max_validation_pairs, seed=ft.seed,
        lift_neighbours=ft.lift_neighbours, lift_min_baskets=ft.lift_min_baskets,
    ).toPandas()
    texts = item_texts(ctx.read(ITEMS), template=model.text_template).orderBy("item_id").toPandas()
    counts = pairs["split"].value_counts().to_dict()
    if counts.get("train", 0) < ft.batch_size or counts.get("validation", 0) < 1:
        log.warning("finetune: %s; too few pairs to train, base encoder kept", counts)
        return StageResult(rows_in=len(pairs), rows_out=0,
                           details={"trained": False, "reason": "too few pairs", "pairs": counts})
    device, use_gpu = training_device(ctx.spark, model.device)
    tags = {
        "stpipe.as_of": ctx.run_date.isoformat(),
        "stpipe.data_fingerprint": orders_fingerprint(orders, as_of=ctx.run_date, timezone=timezone),
        "stpipe.base_digest": base, "stpipe.settings_digest": digest,
    }
    on_driver = local_mode(ctx.spark)
    shared = None  # on a cluster the executor reads the pairs and writes the folder: the warehouse
    if not on_driver:
        shared = registry.mlflow_root(warehouse) / "work"
        shared.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="stpipe-finetune-", dir=shared) as tmp:
        work = Path(tmp)
        pairs.to_parquet(work / "pairs.parquet", index=False)
        texts[["item_id", "text"]].to_parquet(work / "texts.parquet", index=False)
        result = run_training(
            ctx.spark, pairs_path=str(work / "pairs.parquet"), texts_path=str(work / "texts.parquet"),
            model_dir=model.model_dir, out_dir=str(work / "encoder"),
            params=dataclasses.asdict(train_params(settings, device)), use_gpu=use_gpu,
        )
        version = registry.log_training(warehouse, name=ft.registered_name, result=result, tags=tags)
    details = {"trained": True, "reason": reason, "version": version, "pairs": counts,
               "trained_on": "driver" if on_driver else "executor",
               **{k: result[k] for k in ("before", "after", "steps", "seconds", "pairs_per_s", "device",
                                         "precision")}}
    return StageResult(rows_in=len(pairs), rows_out=0, details=details)


# Its inputs are optional: read only when model.finetune.enabled (the nightly's test checks
# that a stage opens every required input on every run).
FINETUNE = Stage("finetune", run, optional=(ORDERS_CLEAN, ITEMS), config=("model", "features"))
