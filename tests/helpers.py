"""Shared test helpers (no fixtures: those live in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

import deltalake
import numpy as np
import pandas as pd

from stpipe.config import Settings, load_settings, replace

NIGHTLY_DATE = "2024-02-10"  # the day after 40 synthetic days from 2024-01-01
# conftest's refreshed_nightly: the shared nightly's date again with this seed, re-read whole
REFRESHED_SEED = 43


def nightly_settings(warehouse: str | Path, **overrides: object) -> Settings:
    """The small nightly the end-to-end tests share: 2,000 rows, seed 42, 40 days, no housekeeping.

    conftest's ``completed_nightly`` runs it once per session; ``nightly_warehouse`` copies it.
    """
    base = {
        "storage.warehouse": str(warehouse),
        "run_date": NIGHTLY_DATE,
        "ingest.rows": 2000,
        "ingest.seed": 42,
        "ingest.synthetic_start": "2024-01-01",
        "ingest.synthetic_days": 40,
        # housekeeping has its own tests (tests/test_nightly.py); it is slow on a busy machine
        "storage.optimize": False,
        "storage.vacuum": False,
    }
    return replace(load_settings(), **{**base, **overrides})


def tree_stamp(root: str | Path) -> dict[str, tuple[int, int]]:
    """Every file under ``root`` (relative path) with its size and mtime in ns.

    Two equal stamps mean nothing was added, removed or rewritten: the shared template's guard.
    """
    root = Path(root)
    stamp = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            st = path.stat()
            stamp[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return stamp


def read_sorted(warehouse: str | Path, name: str) -> pd.DataFrame:
    """A Delta table read with deltalake (not Spark, not stpipe), in a canonical row order.

    Array columns become tuples so that frames compare exactly and rows can be ordered.
    """
    df = deltalake.DeltaTable(str(Path(warehouse) / name)).to_pandas()
    df = df[sorted(df.columns)]
    order = []
    for col in df.columns:
        if df[col].map(lambda v: isinstance(v, (list, np.ndarray))).any():
            df[col] = df[col].map(lambda v: None if v is None else tuple(np.asarray(v).tolist()))
            df[f"__key_{col}"] = df[col].map(repr)
            order.append(f"__key_{col}")
        else:
            order.append(col)
    df = df.sort_values(order, kind="stable").reset_index(drop=True)
    return df.drop(columns=[c for c in df.columns if c.startswith("__key_")])
