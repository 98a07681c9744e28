"""``model.finetune``: how the encoder is tuned on purchase pairs (plain values, no Spark)."""

from __future__ import annotations

from dataclasses import dataclass, field

from stpipe.errors import ConfigError


@dataclass(frozen=True)
class FinetuneSettings:
    # Off by default: a useful training takes minutes on 2 CPU cores (README: Fine-tuning).
    enabled: bool = False
    # Retrain when the latest registered encoder is this old (or settings, base model or data
    # changed); otherwise the stage reuses it.
    every_days: int = 7
    # Validation pairs: dated in the last validation_days before the as-of date; training pairs
    # strictly before those.
    validation_days: int = 14
    # Pair kinds: one order, one user-day, an item with the user's next purchase within
    # next_within_days, and lift (each item with its lift_neighbours partners of highest lift among
    # those sharing lift_min_baskets orders). Lift is the default: in the recipe study on Online
    # Retail (README: Fine-tuning) strong co-purchase pairs made the text model better and
    # next-purchase pairs made it worse.
    kinds: list[str] = field(default_factory=lambda: ["lift"])
    next_within_days: int = 30
    lift_neighbours: int = 5
    lift_min_baskets: int = 5
    # Distinct training pairs kept (lowest hash of pair and seed), and validation pairs.
    max_pairs: int = 20_000
    max_validation_pairs: int = 3_000
    # "all", or the number of top transformer layers trained (plus the pooler); the rest frozen.
    train_layers: str = "2"
    batch_size: int = 64
    epochs: int = 8
    # Stop after this many optimiser steps at most (0: epochs decide).
    max_steps: int = 0
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    # Cosine scale of the multiple-negatives ranking loss (sentence-transformers' default).
    scale: float = 20.0
    # One mined hard negative per item of a pair besides the in-batch ones: drawn from the item's
    # hard_negative_pool nearest non-partner items by the current model (udfs/hard_negatives.py).
    # Off: on the validation cutoff 2011-03-09 of Online Retail they helped the text model alone
    # (+0.0060 ± 0.0037 NDCG@10 novel), but with them `full` was worse at the evaluation cutoffs
    # (README: Fine-tuning), and training is ~1.8x slower.
    hard_negatives: bool = False
    hard_negative_pool: int = 20
    # Validation recall@10 every eval_every_steps; stop after patience intervals without gain.
    eval_every_steps: int = 50
    patience: int = 6
    # Tokens per text in training (titles are short; the base model allows 256).
    max_length: int = 64
    seed: int = 13
    # torch threads of a CPU training: 1 gives the same weights for a seed run after run (tested);
    # more is faster. The training runs in its own torchrun process, not in a Spark task.
    threads: int = 1
    # auto | bf16 | fp32: bf16 autocast of the training steps (weights, optimiser and loss stay
    # float32). auto: on a GPU, and on a CPU with AMX matrix units (Intel Sapphire Rapids and
    # later), where a training is about 1.5x faster; fp32 elsewhere (README: Fine-tuning).
    precision: str = "auto"
    # Name of the registered model in MLflow.
    registered_name: str = "stpipe-encoder"


PAIR_KINDS = ("order", "user_day", "next", "lift")
PRECISIONS = ("auto", "bf16", "fp32")


def check_finetune(encoder: str, ft: FinetuneSettings) -> None:
    """ConfigError naming the first ``model.encoder`` / ``model.finetune`` value out of range."""
    if encoder not in ("base", "latest") and not (encoder.isdigit() and int(encoder) > 0):
        raise ConfigError(f"model.encoder: expected base, latest or a version number, got {encoder!r}")
    unknown = [k for k in ft.kinds if k not in PAIR_KINDS]
    if unknown or not ft.kinds:
        raise ConfigError(
            f"model.finetune.kinds: expected some of {', '.join(PAIR_KINDS)}, got {ft.kinds!r}"
        )
    if ft.precision not in PRECISIONS:
        raise ConfigError(
            f"model.finetune.precision: expected one of {', '.join(PRECISIONS)}, got {ft.precision!r}"
        )
    if ft.train_layers != "all" and not (ft.train_layers.isdigit() and int(ft.train_layers) > 0):
        raise ConfigError(
            f"model.finetune.train_layers: expected all or a positive number, got {ft.train_layers!r}"
        )
    positive = ("every_days", "validation_days", "next_within_days", "max_pairs",
                "max_validation_pairs", "batch_size", "epochs", "eval_every_steps", "max_length", "threads",
                "lift_neighbours", "lift_min_baskets", "hard_negative_pool")
    for name in positive:
        if getattr(ft, name) < 1:
            raise ConfigError(f"model.finetune.{name}: expected 1 or more, got {getattr(ft, name)}")
    if ft.batch_size < 2:
        raise ConfigError("model.finetune.batch_size: in-batch negatives need 2 or more pairs a batch")
    if not 0.0 <= ft.warmup_ratio < 1.0 or ft.learning_rate <= 0 or ft.max_steps < 0 or ft.patience < 0:
        raise ConfigError(
            "model.finetune: warmup_ratio must be in [0, 1), learning_rate above 0, max_steps and "
            f"patience 0 or more; got {ft.warmup_ratio}, {ft.learning_rate}, {ft.max_steps}, {ft.patience}"
        )
