"""Contrastive fine-tuning of the text encoder on item pairs: plain torch, no Spark.

Each batch holds ``batch_size`` pairs (item a, item b) of items bought together. Both items
are embedded with the embedding core's pooling (:func:`udfs.embed.mean_pool`), and the loss is
the symmetric multiple-negatives ranking loss of :mod:`udfs.contrastive_loss` (in-batch
negatives, a row's partners masked; optionally mined hard negatives, :mod:`udfs.hard_negatives`).
Only the top ``train_layers`` transformer layers and the pooler learn (or ``all``); AdamW with
linear warmup and decay.

Validation: recall@10 of the partner item among all catalogue items, both directions,
measured before training and every ``eval_every_steps``; the latest weights within one standard
error of the best are kept (:func:`within_noise`), training stops after ``patience`` intervals
without a new best. On CPU a seed gives the same weights every
time (seeded shuffling and dropout, deterministic algorithms, ``threads`` torch threads: one by
default). When only the top layers train, the frozen ones run once per item
(:class:`udfs.frozen_stack.FrozenStack`), not once per step.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from udfs.contrastive_loss import symmetric_mnrl
from udfs.embed import length_batches, mean_pool, pick_device, resolve_model_dir
from udfs.frozen_stack import FrozenStack
from udfs.hard_negatives import HardNegatives

log = logging.getLogger("stpipe.finetune")

# sentence-transformers' files of the base folder, copied so the tuned folder loads there too
_ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class TrainParams:
    """The training settings (``model.finetune`` as plain values)."""

    train_layers: str = "2"
    batch_size: int = 64
    epochs: int = 8
    max_steps: int = 0
    learning_rate: float = 2e-4
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    scale: float = 20.0
    hard_negatives: bool = False
    hard_negative_pool: int = 20
    eval_every_steps: int = 50
    patience: int = 6
    max_length: int = 64
    seed: int = 13
    threads: int = 1
    # auto | bf16 | fp32: bf16 autocast of the training steps (see :func:`uses_bf16`)
    precision: str = "auto"
    device: str = "cpu"
    k: int = 10


def set_trainable(model: Any, train_layers: str) -> int:
    """Freeze all but the top ``train_layers`` encoder layers and the pooler (``all``: none);
    return the number of trainable parameters."""
    layers = model.encoder.layer
    if train_layers == "all":
        keep = {id(p) for p in model.parameters()}
    else:
        n = int(train_layers)
        if not 1 <= n <= len(layers):
            raise ValueError(
                f"model.finetune.train_layers: {n} is not between 1 and the model's {len(layers)} layers"
            )
        modules = list(layers)[-n:] + ([model.pooler] if getattr(model, "pooler", None) else [])
        keep = {id(p) for m in modules for p in m.parameters()}
    for p in model.parameters():
        p.requires_grad = id(p) in keep
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def encode_ids(model: Any, tokenizer: Any, ids: Sequence[Sequence[int]], device: str,
               batch_size: int = 128) -> Any:
    """Unit vectors (float32, CPU) of pre-tokenised texts, in length-sorted batches, no grad."""
    import torch

    out = torch.zeros((len(ids), model.config.hidden_size))
    with torch.inference_mode():
        for idx in length_batches([len(x) for x in ids], batch_size=batch_size, token_budget=8192):
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            batch = {k: v.to(device) for k, v in batch.items()}
            with _autocast(device, device.startswith("cuda")):
                hidden = model(**batch).last_hidden_state
            out[torch.as_tensor(idx)] = mean_pool(hidden, batch["attention_mask"]).cpu()
    return out


def recall_at_k(vectors: Any, pairs: np.ndarray, k: int = 10) -> float:
    """Share of (query, partner) directions of ``pairs`` (item numbers, both ways) whose partner
    is among the query's ``k`` nearest catalogue items by cosine, the query item left out."""
    import torch

    if len(pairs) == 0:
        return float("nan")
    queries = np.concatenate([pairs[:, 0], pairs[:, 1]])
    targets = torch.as_tensor(np.concatenate([pairs[:, 1], pairs[:, 0]]))
    q = torch.as_tensor(queries)
    scores = vectors[q] @ vectors.T
    scores[torch.arange(len(q)), q] = float("-inf")
    top = scores.topk(min(k, vectors.shape[0] - 1), dim=1).indices
    return float((top == targets[:, None]).any(dim=1).float().mean())


def within_noise(value: float, best: float, before: float, directions: int) -> bool:
    """Whether weights with validation recall ``value`` may be kept: better than the base
    encoder's ``before`` and within one standard error of the ``best`` so far (the binomial error
    of a recall over ``directions`` queries). After warm-up the curve's steps are mostly noise, and
    later weights have gone further down the annealed schedule, so the latest such weights are kept
    rather than the noisiest peak."""
    return value > before and value >= best - math.sqrt(best * (1.0 - best) / max(directions, 1))


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively: AMX tiles (Intel Sapphire Rapids and
    later) or AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake)."""
    import torch

    checks = (getattr(torch.cpu, name, None) for name in
              ("_is_amx_tile_supported", "_is_avx512_bf16_supported"))
    try:
        return any(bool(check()) for check in checks if check is not None)
    except (RuntimeError, AttributeError):
        return False


def uses_bf16(device: str, precision: str) -> bool:
    """Whether the training steps run under bf16 autocast: ``bf16`` always, ``fp32`` never,
    ``auto`` on a GPU and on a CPU with bf16 matrix instructions, where the matrix products of a
    step are faster in bf16 (a training 0.7-0.76x the time on 2 cores: README). Weights,
    optimiser and loss stay float32, and with the frozen-layer cache the validation too."""
    if precision != "auto":
        return precision == "bf16"
    return device.startswith("cuda") or (device == "cpu" and cpu_has_bf16())


def _autocast(device: str, bf16: bool) -> Any:
    import torch

    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)


def _batches(n_pairs: int, batch_size: int, epochs: int, seed: int) -> list[np.ndarray]:
    """Pair indices per step: a seeded shuffle per epoch, cut into full batches (a short tail of
    two or more pairs is kept)."""
    rng = np.random.default_rng(seed)
    steps: list[np.ndarray] = []
    for _ in range(epochs):
        order = rng.permutation(n_pairs)
        for start in range(0, n_pairs, batch_size):
            chunk = order[start:start + batch_size]
            if len(chunk) >= 2:
                steps.append(chunk)
    return steps


def train(
    model_dir: str | Path | None,
    out_dir: str | Path,
    texts: Sequence[str],
    train_pairs: np.ndarray,
    valid_pairs: np.ndarray,
    params: TrainParams,
) -> dict[str, Any]:
    """Tune the encoder of ``model_dir`` on ``train_pairs`` (rows of two indices into ``texts``,
    the catalogue), keep the latest weights within one standard error of the best on
    ``valid_pairs`` (:func:`within_noise`), save them to ``out_dir`` as a Hugging Face folder;
    return the before/after recall, loss curve and timings."""
    import torch
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    base = resolve_model_dir(model_dir)
    device, _ = pick_device(params.device)
    bf16 = uses_bf16(device, params.precision)
    if len(train_pairs) < 2:
        raise ValueError(f"fine-tuning needs 2 or more training pairs, got {len(train_pairs)}")
    deterministic = torch.are_deterministic_algorithms_enabled()
    threads = torch.get_num_threads()
    torch.manual_seed(params.seed)
    if device == "cpu":
        torch.use_deterministic_algorithms(True)
        torch.set_num_threads(params.threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base), local_files_only=True)
        model = AutoModel.from_pretrained(str(base), local_files_only=True, dtype=torch.float32)
        model.to(device)
        n_trainable = set_trainable(model, params.train_layers)
        ids = tokenizer(list(texts), truncation=True, max_length=params.max_length)["input_ids"]
        # the frozen layers' outputs, once per item (None: the whole model runs each step)
        stack = FrozenStack.build(model, tokenizer, ids, params.train_layers, device)
        steps = _batches(len(train_pairs), params.batch_size, params.epochs, params.seed)
        if params.max_steps:
            steps = steps[: params.max_steps]
        decay = [p for n, p in model.named_parameters() if p.requires_grad and not _no_decay(n)]
        flat = [p for n, p in model.named_parameters() if p.requires_grad and _no_decay(n)]
        optimiser = torch.optim.AdamW(
            [{"params": decay, "weight_decay": params.weight_decay},
             {"params": flat, "weight_decay": 0.0}],
            lr=params.learning_rate,
        )
        schedule = get_linear_schedule_with_warmup(
            optimiser, math.ceil(params.warmup_ratio * len(steps)), len(steps)
        )

        mined = (HardNegatives(train_pairs, params.hard_negative_pool, params.seed)
                 if params.hard_negatives else None)

        def validate() -> float:
            model.eval()
            vectors = stack.encode_all() if stack else encode_ids(model, tokenizer, ids, device)
            value = recall_at_k(vectors, valid_pairs, params.k)
            if mined is not None:
                mined.refresh(vectors)
            model.train()
            return value

        before = validate()
        directions = 2 * len(valid_pairs)  # recall_at_k asks both ways
        best, stale = before, 0
        kept, kept_step, kept_state = before, 0, _trainable_state(model)
        curve: list[tuple[int, float]] = []
        evals: list[tuple[int, float]] = [(0, before)]
        log.info("finetune: %d pairs, %d steps, %d trainable parameters, %s, %s%s; recall@%d before %.4f",
                 len(train_pairs), len(steps), n_trainable, device, "bf16 autocast" if bf16 else "fp32",
                 ", frozen layers cached" if stack else "", params.k, before)
        t0 = time.perf_counter()
        t_interval, seen, losses = t0, 0, []
        model.train()
        for step, chunk in enumerate(steps, 1):
            pair = torch.as_tensor(train_pairs[chunk])
            loss = _step_loss(model, tokenizer, ids, pair, params, device, stack, mined, bf16)
            loss.backward()
            optimiser.step()
            schedule.step()
            optimiser.zero_grad(set_to_none=True)
            step_loss = loss.detach().item()
            curve.append((step, step_loss))
            losses.append(step_loss)
            seen += len(chunk)
            if step % params.eval_every_steps and step != len(steps):
                continue
            value = validate()
            evals.append((step, value))
            now = time.perf_counter()
            rate = seen / max(now - t_interval, 1e-9)
            eta = (len(steps) - step) * params.batch_size / max(rate, 1e-9)
            log.info("finetune: step %d/%d loss %.4f %.1f pairs/s eta %.0fs recall@%d %.4f (best %.4f)",
                     step, len(steps), float(np.mean(losses)), rate, eta, params.k, value, max(best, value))
            t_interval, seen, losses = time.perf_counter(), 0, []
            if value > best:
                best, stale = value, 0
            else:
                stale += 1
            # the best so far qualifies, so the weights kept are never older than the best's
            if within_noise(value, best, before, directions):
                kept, kept_step, kept_state = value, step, _trainable_state(model)
            if stale > params.patience:
                log.info("finetune: no gain in %d intervals, stopping at step %d", stale, step)
                break
        seconds = time.perf_counter() - t0
        log.info("finetune: keeping the weights of step %d (recall@%d %.4f; best %.4f)",
                 kept_step, params.k, kept, best)
        model.load_state_dict(kept_state, strict=False)
        save_folder(model, tokenizer, base, Path(out_dir))
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(threads)
    done = len(curve)
    return {
        "before": before, "after": kept, "kept_step": kept_step, "best": best, "steps": done,
        "planned_steps": len(steps), "seconds": seconds,
        "pairs_per_s": done * params.batch_size / max(seconds, 1e-9),
        "curve": curve, "evals": evals, "device": device, "out_dir": str(out_dir),
        "precision": "bf16" if bf16 else "fp32",
        "frozen_layers_cached": stack is not None,
        "train_pairs": int(len(train_pairs)), "validation_pairs": int(len(valid_pairs)),
        "params": asdict(params),
    }


def _step_loss(model: Any, tokenizer: Any, ids: Sequence[Sequence[int]], pair: Any,
               params: TrainParams, device: str, stack: FrozenStack | None,
               mined: HardNegatives | None, bf16: bool) -> Any:
    """The loss of one batch of pairs (n, 2 item numbers), with one mined hard negative per
    item when ``mined`` is given; every distinct item of the batch is embedded once."""
    import torch

    a, b = pair[:, 0].numpy(), pair[:, 1].numpy()
    negatives = [] if mined is None else [mined.draw(a), mined.draw(b)]
    # the pairs' items first, interleaved (a0, b0, a1, ...), then the negatives: without
    # negatives this is the same computation, in the same order, as before they existed
    wanted = torch.cat([pair.flatten(), *(torch.as_tensor(x) for x in negatives)])
    items, inverse = torch.unique(wanted, return_inverse=True)
    with _autocast(device, bf16):
        vectors = _pooled(model, tokenizer, ids, items.tolist(), device, stack)
    vectors = vectors.float()[inverse.to(device)]  # the loss in float32 (a no-op without autocast)
    n = len(a)
    extra: dict[str, Any] = {}
    if mined is not None:
        extra = {
            "neg_a": vectors[2 * n:3 * n], "neg_b": vectors[3 * n:],
            "neg_mask_a": torch.as_tensor(mined.mask(a, negatives[0]), device=device),
            "neg_mask_b": torch.as_tensor(mined.mask(b, negatives[1]), device=device),
        }
        vectors = vectors[: 2 * n]
    vectors = vectors.view(n, 2, -1)
    return symmetric_mnrl(vectors[:, 0], vectors[:, 1], scale=params.scale,
                          ids_a=pair[:, 0].to(device), ids_b=pair[:, 1].to(device), **extra)


def _pooled(model: Any, tokenizer: Any, ids: Sequence[Sequence[int]], items: list[int],
            device: str, stack: FrozenStack | None) -> Any:
    """Unit vectors of catalogue ``items`` in training mode: through the trained layers from
    the cache, or through the whole model."""
    if stack is not None:
        return stack.pooled(items)
    batch = tokenizer.pad({"input_ids": [ids[i] for i in items]}, return_tensors="pt")
    batch = {k: v.to(device) for k, v in batch.items()}
    return mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])


def _no_decay(name: str) -> bool:
    return name.endswith("bias") or "LayerNorm" in name


def _trainable_state(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def save_folder(model: Any, tokenizer: Any, base: Path, out_dir: Path) -> None:
    """A Hugging Face folder (weights, config, tokenizer) plus the base folder's
    sentence-transformers files (pooling, normalisation), so either library loads it."""
    import shutil

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    for name in _ST_FILES:
        if (base / name).is_file():
            shutil.copy2(base / name, out_dir / name)
    for sub in ("1_Pooling", "2_Normalize"):
        if (base / sub).is_dir():
            shutil.copytree(base / sub, out_dir / sub, dirs_exist_ok=True)


def state_digest(model_dir: str | Path) -> str:
    """SHA-256 of a saved folder's weights, tensor by tensor in name order."""
    import hashlib

    from safetensors.numpy import load_file

    tensors = load_file(str(Path(model_dir) / "model.safetensors"))
    digest = hashlib.sha256()
    for name in sorted(tensors):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(tensors[name]).tobytes())
    return digest.hexdigest()


def train_from_files(
    pairs_path: str, texts_path: str, model_dir: str | None, out_dir: str, params: dict[str, Any]
) -> dict[str, Any]:
    """:func:`train` on the pairs and catalogue written as Parquet by the finetune stage: the
    function TorchDistributor runs (module level, plain arguments, so it pickles by name).

    ``pairs_path``: columns split (train | validation), item_a, item_b; ``texts_path``:
    item_id, text. Pairs naming an item missing from the catalogue are dropped.
    """
    import pyarrow.parquet as pq

    if not logging.getLogger().handlers:  # a fresh torchrun process: progress to stdout
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    catalogue = pq.read_table(texts_path).to_pydict()
    number = {item: i for i, item in enumerate(catalogue["item_id"])}
    pairs = pq.read_table(pairs_path).to_pydict()
    split: dict[str, list[tuple[int, int]]] = {"train": [], "validation": []}
    for kind, a, b in zip(pairs["split"], pairs["item_a"], pairs["item_b"], strict=True):
        if a in number and b in number:
            split[kind].append((number[a], number[b]))
    # sorted: Spark returns rows in no fixed order, and the seeded shuffle needs a fixed start
    as_array = {k: np.asarray(sorted(v), dtype=np.int64).reshape(-1, 2) for k, v in split.items()}
    return train(model_dir, out_dir, catalogue["text"], as_array["train"], as_array["validation"],
                 TrainParams(**params))
