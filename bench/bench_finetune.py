"""Fine-tuning throughput: the finetune stage's trainer against sentence-transformers' own.

The same pairs (adjacent lines of one Online Retail invoice, or seeded random pairs of synthetic
titles without ../shared), the same model (all-MiniLM-L6-v2), batch size, learning rate, trained
layers and CPU threads: :func:`udfs.finetune.train` (what the stage runs through TorchDistributor)
against ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss``, whose bottom layers
are frozen alike. Both rates are training pairs per second of the training loop, one run each; ours
also covers its last validation pass (recall@10 over the catalogue), so it is the conservative one.
Run for the top-2-layer setting (ours caches the frozen layers) and for all layers (no cache), each
in float32 and with bf16 autocast on both sides (``precision`` for ours, ``bf16=True`` for theirs;
ours picks bf16 by itself on a CPU with AMX or AVX512-BF16, so that pair is what the stage runs
there).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_embed import RETAIL_FILE, load_texts

N_ITEMS = int(os.environ.get("BENCH_FINETUNE_ITEMS", "1500"))
STEPS = int(os.environ.get("BENCH_FINETUNE_STEPS", "16"))
BATCH = int(os.environ.get("BENCH_FINETUNE_BATCH", "32"))
THREADS = int(os.environ.get("BENCH_FINETUNE_THREADS", "2"))


def load_pairs(n_pairs: int) -> tuple[list[str], np.ndarray, str]:
    """(catalogue texts, pairs of indices into them, what they are)."""
    import pandas as pd

    if RETAIL_FILE.is_file():
        raw = pd.read_csv(RETAIL_FILE, usecols=["InvoiceNo", "Description"], dtype=str).dropna()
        raw["Description"] = raw["Description"].str.strip()
        texts = raw["Description"].drop_duplicates().head(N_ITEMS).tolist()
        number = {t: i for i, t in enumerate(texts)}
        raw = raw[raw["Description"].isin(number)]
        a = raw["Description"].map(number).to_numpy()
        same = raw["InvoiceNo"].to_numpy()
        keep = (same[1:] == same[:-1]) & (a[1:] != a[:-1])
        pairs = np.stack([a[:-1][keep], a[1:][keep]], axis=1)
        rng = np.random.default_rng(7)
        return texts, pairs[rng.permutation(len(pairs))[:n_pairs]], "online_retail same-invoice pairs"
    texts, _ = load_texts(N_ITEMS)
    rng = np.random.default_rng(7)
    pairs = rng.integers(0, len(texts), size=(n_pairs * 2, 2))
    return texts, pairs[pairs[:, 0] != pairs[:, 1]][:n_pairs], "random pairs of synthetic titles"


def ours(texts: list[str], pairs: np.ndarray, layers: str, precision: str, out: Path) -> dict:
    from udfs.finetune import TrainParams, train

    params = TrainParams(train_layers=layers, batch_size=BATCH, max_steps=STEPS, learning_rate=1e-4,
                         eval_every_steps=STEPS, threads=THREADS, seed=13, precision=precision,
                         hard_negatives=False)  # the same loss as the reference: in-batch only
    valid = pairs[:64]
    result = train(None, out, texts, pairs, valid, params)
    return {"pairs_per_s": result["pairs_per_s"], "steps": result["steps"],
            "frozen_layers_cached": result["frozen_layers_cached"]}


def sentence_transformers(texts: list[str], pairs: np.ndarray, layers: str, precision: str,
                          out: Path) -> dict:
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from udfs.embed import default_model_dir
    from udfs.finetune import set_trainable

    torch.set_num_threads(THREADS)
    model = SentenceTransformer(str(default_model_dir()), device="cpu")
    set_trainable(model[0].auto_model, layers)
    n = STEPS * BATCH
    data = Dataset.from_dict({"anchor": [texts[i] for i in pairs[:n, 0]],
                              "positive": [texts[i] for i in pairs[:n, 1]]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), per_device_train_batch_size=BATCH, max_steps=STEPS, learning_rate=1e-4,
        warmup_ratio=0.1, save_strategy="no", report_to="none", logging_steps=STEPS, use_cpu=True,
        seed=13, dataloader_num_workers=0, bf16=precision == "bf16",
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    return {"pairs_per_s": n / seconds, "steps": STEPS}


def main(out_dir: Path) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts, pairs, what = load_pairs(STEPS * BATCH)
    result: dict = {"pairs": int(len(pairs)), "catalogue": len(texts), "source": what,
                    "batch_size": BATCH, "steps": STEPS, "threads": THREADS,
                    "model": "all-MiniLM-L6-v2"}
    with tempfile.TemporaryDirectory(prefix="bench-finetune-") as tmp:
        for layers, precision in (("2", "fp32"), ("all", "fp32"), ("2", "bf16"), ("all", "bf16")):
            name = f"{layers}-{precision}"
            st = sentence_transformers(texts, pairs, layers, precision, Path(tmp) / f"st-{name}")
            us = ours(texts, pairs, layers, precision, Path(tmp) / f"ours-{name}")
            key = f"layers_{layers}" + ("_bf16" if precision == "bf16" else "")
            result[key] = {
                "ours_pairs_per_s": round(us["pairs_per_s"], 1),
                "sentence_transformers_pairs_per_s": round(st["pairs_per_s"], 1),
                "ratio_ours_over_st": round(us["pairs_per_s"] / st["pairs_per_s"], 3),
                "frozen_layers_cached": us["frozen_layers_cached"],
            }
    result["load_average_1m"] = round(os.getloadavg()[0], 1)
    return result
