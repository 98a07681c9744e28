"""Shared test helpers (no fixtures: those live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import deltalake
import numpy as np
import pandas as pd


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
