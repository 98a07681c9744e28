"""The training run through Spark's own distributed trainer, TorchDistributor.

Local mode (a ``local[...]`` master, the embedded default) starts one ``torchrun`` process on
the driver; on a cluster (standalone, YARN, Kubernetes) the process runs in a barrier task on an
executor. Either imports ``udfs.finetune.train_from_files`` by name (cloudpickle pickles
module-level functions by reference), reads the pairs and the catalogue from Parquet files
(which must be visible there: the stage puts them under the warehouse on a cluster), and returns
its result dictionary. In local mode the process's output (the progress lines) is streamed to
the driver's stderr; on a cluster it goes to the executor's log.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession

import udfs
from udfs.finetune import train_from_files

log = logging.getLogger("stpipe.finetune")

# The folder holding stpipe/ and udfs/: the torchrun child must import them from here.
CODE_ROOT = str(Path(udfs.__file__).resolve().parent.parent)


def training_device(spark: SparkSession, device: str) -> tuple[str, bool]:
    """(device for torch, use_gpu for TorchDistributor). CUDA when present and allowed by
    ``model.device``; TorchDistributor's ``use_gpu`` only when Spark's driver also owns GPUs as
    a resource (local mode reads ``spark.driver.resource.gpu.*`` and fails without it), else the
    child still sees the GPUs through the inherited environment."""
    import torch

    if device == "cpu" or not torch.cuda.is_available():
        return "cpu", False
    try:
        owned = "gpu" in spark.sparkContext.resources
    except Exception:  # Spark Connect has no sparkContext
        owned = False
    return ("cuda" if device == "auto" else device), owned


@contextlib.contextmanager
def _code_on_path() -> Iterator[None]:
    old = os.environ.get("PYTHONPATH")
    parts = [CODE_ROOT] + ([old] if old else [])
    os.environ["PYTHONPATH"] = os.pathsep.join(parts)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


def local_mode(spark: SparkSession) -> bool:
    """Whether the training runs on the driver (a ``local`` master) or on an executor."""
    return spark.conf.get("spark.master", "local").startswith("local")


def run_training(
    spark: SparkSession,
    *,
    pairs_path: str,
    texts_path: str,
    model_dir: str | None,
    out_dir: str,
    params: dict[str, Any],
    use_gpu: bool,
) -> dict[str, Any]:
    """Run :func:`udfs.finetune.train_from_files` with TorchDistributor (one process; on the
    driver or an executor, :func:`local_mode`) and return its result."""
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=1, local_mode=local_mode(spark), use_gpu=use_gpu)
    # the child's progress lines are log output: stderr, so that stdout stays the job's own
    # (the evaluation's JSON lines)
    with _code_on_path(), contextlib.redirect_stdout(sys.stderr):
        result = distributor.run(train_from_files, pairs_path, texts_path, model_dir, out_dir, params)
    if not isinstance(result, dict):
        raise RuntimeError("the TorchDistributor training returned no result; see its output above")
    return result
