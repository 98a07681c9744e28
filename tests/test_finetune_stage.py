"""The finetune stage: no look-ahead, TorchDistributor + MLflow end to end, registration rule,
the encoder embed then uses."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from pyspark.sql import Row

from stpipe import tables
from stpipe.config import Settings, replace
from stpipe.finetune import registry
from stpipe.finetune.pairs import mine_pairs
from stpipe.schema import ITEMS, ORDERS_CLEAN
from stpipe.stages import FINETUNE, run_stage
from stpipe.stages.orchestrate import encoder_dir
from udfs.embed import Embedder
from udfs.finetune import TrainParams, state_digest, train, uses_bf16

AS_OF = dt.date(2024, 3, 1)
COLOURS = ["red", "blue", "green", "white", "black"]
OBJECTS = ["mug", "candle", "lantern", "bag", "frame", "clock"]
TEXTS = [f"{c} {o}" for c in COLOURS for o in OBJECTS for _ in (0, 1)]
N = len(TEXTS)  # 60 items; the description tells the twins apart
IDS = [f"i{n:02d}" for n in range(N)]


def item_rows():
    return [Row(item_id=IDS[n], title=TEXTS[n], category=("kitchen", "garden")[n % 2],
                description=None, source="s") for n in range(N)]


def order_lines(extra=()):
    """Orders of two items n and n+2 (one user each): days 1..40 of 2024 for n < 40 (training),
    the last week before AS_OF for n >= 40 (validation with validation_days=10)."""
    out = []
    for n in range(N):
        day = dt.datetime(2024, 1, 1) + dt.timedelta(days=n) if n < 40 else \
            dt.datetime(2024, 2, 23) + dt.timedelta(hours=n)
        out += [(f"u{n}", f"o{n}", IDS[n], day), (f"u{n}", f"o{n}", IDS[(n + 2) % N], day)]
    return out + list(extra)


def orders_frame(spark, lines):
    rows = [Row(order_id=o, line_no=k, user_id=u, item_id=i, quantity=1, unit_price=1.0, ts=t,
                region="r", city=None, lat=None, lon=None, source="s", order_date=t.date())
            for k, (u, o, i, t) in enumerate(lines)]
    return spark.createDataFrame(rows, ORDERS_CLEAN)


# Planted lines on and after the as-of date: pairs the training must never see.
PLANTED = [(f"p{k}", f"q{k}", IDS[k], dt.datetime(2024, 3, 1) + dt.timedelta(days=k)) for k in range(20)]
PLANTED += [(f"p{k}", f"q{k}", IDS[(k + 31) % N], dt.datetime(2024, 3, 1) + dt.timedelta(days=k))
            for k in range(20)]

PARAMS = TrainParams(batch_size=8, max_steps=4, eval_every_steps=2, seed=5, learning_rate=3e-4)


def pairs_arrays(spark, lines, as_of):
    got = mine_pairs(orders_frame(spark, lines), as_of=as_of, timezone="UTC", validation_days=10,
                     next_within_days=30, kinds=["order", "next"], max_pairs=1000,
                     max_validation_pairs=1000, seed=3).toPandas()
    number = {item: n for n, item in enumerate(IDS)}
    arrays = {}
    for split in ("train", "validation"):
        part = got[got.split == split]
        arrays[split] = np.array(sorted([number[a], number[b]] for a, b in zip(part.item_a, part.item_b, strict=True)))
    return arrays["train"], arrays["validation"]


def test_pairs_on_or_after_the_as_of_date_are_never_used(spark, tmp_path):
    texts = [f"{t}. {('kitchen', 'garden')[n % 2]}." for n, t in enumerate(TEXTS)]
    clean = train(None, tmp_path / "clean", texts, *pairs_arrays(spark, order_lines(), AS_OF), PARAMS)
    planted = train(None, tmp_path / "planted", texts,
                    *pairs_arrays(spark, order_lines(PLANTED), AS_OF), PARAMS)
    assert planted["curve"] == clean["curve"]
    assert state_digest(tmp_path / "planted") == state_digest(tmp_path / "clean")
    # the planted pairs would change the model: seen as of a later date, the losses differ
    train_later, _ = pairs_arrays(spark, order_lines(PLANTED), dt.date(2024, 4, 1))
    later = train(None, tmp_path / "later", texts, train_later,
                  pairs_arrays(spark, order_lines(), AS_OF)[1], PARAMS)
    assert later["curve"] != clean["curve"]


def fake_result(out_dir, before, after):
    return {"params": {"seed": 1}, "train_pairs": 10, "validation_pairs": 5,
            "curve": [(1, 2.0), (2, 1.5)], "evals": [(0, before), (2, after)],
            "before": before, "after": after, "pairs_per_s": 1.0, "seconds": 1.0,
            "out_dir": str(out_dir), "precision": "fp32"}


def test_a_version_not_better_than_base_is_never_registered(warehouse, tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    folder = tmp_path / "enc"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    tags = {"stpipe.as_of": "2024-03-01"}
    assert registry.log_training(warehouse, name="m", result=fake_result(folder, 0.5, 0.5), tags=tags) is None
    assert registry.log_training(warehouse, name="m", result=fake_result(folder, 0.5, 0.4), tags=tags) is None
    assert registry.registered_versions(warehouse, "m") == []
    assert registry.log_training(warehouse, name="m", result=fake_result(folder, 0.5, 0.6), tags=tags) == 1
    assert registry.registered_versions(warehouse, "m") == [(1, AS_OF)]
    last = registry.latest_training(warehouse)
    assert last.version == 1 and last.as_of == AS_OF
    assert (registry.mlflow_root(warehouse) / "mlflow.db").is_file()
    assert (registry.version_folder(warehouse, "m", 1) / "config.json").read_text() == "{}"


def stage_settings(warehouse, **extra) -> Settings:
    values = {
        "storage.warehouse": warehouse, "run_date": AS_OF.isoformat(),
        "model.finetune.enabled": True, "model.finetune.kinds": ["order"],
        "model.finetune.validation_days": 10, "model.finetune.batch_size": 8,
        "model.finetune.max_steps": 4, "model.finetune.eval_every_steps": 2,
        "model.finetune.seed": 5, "model.finetune.learning_rate": 3e-4,
        "model.device": "cpu",
    }
    values.update(extra)
    return replace(Settings(), **values)


def test_stage_trains_through_torch_distributor_registers_and_embed_uses_it(
    spark, warehouse, monkeypatch
):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    tables.commit(orders_frame(spark, order_lines(PLANTED)), warehouse, "orders_clean")
    tables.commit(spark.createDataFrame(item_rows(), ITEMS), warehouse, "items")
    settings = stage_settings(warehouse)
    first = run_stage(spark, settings, FINETUNE).details
    assert first["trained"] is True and first["reason"] == "no training yet"
    assert first["steps"] == 4 and first["device"] == "cpu"
    assert first["precision"] == ("bf16" if uses_bf16("cpu", "auto") else "fp32")
    assert first["after"] > first["before"] and first["version"] == 1
    # same run date, nothing changed: reused; a new setting: trained again
    assert run_stage(spark, settings, FINETUNE).details["reason"] == "current"
    again = run_stage(spark, stage_settings(warehouse, **{"model.finetune.seed": 6}), FINETUNE)
    assert again.details["reason"] == "the training settings changed"

    folder = encoder_dir(replace(settings, **{"model.encoder": "latest"}))
    assert folder is not None and folder.endswith(f"stpipe-encoder-v{again.details['version'] or 1}")
    # as of a date before the training: the base encoder
    assert encoder_dir(replace(settings, **{"model.encoder": "latest", "run_date": "2024-02-01"})) is None
    from sentence_transformers import SentenceTransformer

    v1 = encoder_dir(replace(settings, **{"model.encoder": "1"}))
    texts = ["red mug. kitchen.", "WHITE METAL LANTERN", "black clock. garden."]
    ours = Embedder(v1, device="cpu").encode(texts)
    theirs = SentenceTransformer(v1, device="cpu").encode(texts, normalize_embeddings=True)
    assert ((ours * theirs).sum(1) / np.linalg.norm(theirs, axis=1)).min() >= 0.9999


def test_disabled_stage_reads_nothing(spark, warehouse):
    result = run_stage(spark, replace(Settings(), **{"storage.warehouse": warehouse,
                                                     "run_date": "2024-03-01"}), FINETUNE)
    assert result.details["reason"] == "disabled" and result.details["reads"] == []


def test_unknown_encoder_is_a_config_error():
    from stpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="model.encoder"):
        replace(Settings(), **{"model.encoder": "newest"})


def test_an_unknown_precision_is_a_config_error():
    from stpipe.errors import ConfigError

    with pytest.raises(ConfigError, match="model.finetune.precision: expected one of auto, bf16, fp32"):
        replace(Settings(), **{"model.finetune.precision": "half"})


def test_the_trainers_defaults_are_the_stages_defaults():
    # udfs cannot import the settings (data flows one way), so the trainer repeats their defaults
    # for direct callers (tests, bench); the stage passes every value from model.finetune
    from stpipe.finetune.settings import FinetuneSettings

    trainer, stage = TrainParams(), FinetuneSettings()
    shared = [f for f in vars(trainer) if hasattr(stage, f)]
    assert len(shared) >= 12
    assert {f: getattr(trainer, f) for f in shared} == {f: getattr(stage, f) for f in shared}
