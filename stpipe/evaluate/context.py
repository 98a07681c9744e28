"""What a baseline receives besides the history: the split's values and the tuning grids."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

log = logging.getLogger("stpipe.evaluate")


@dataclass(frozen=True)
class AlsGrid:
    ranks: tuple[int, ...] = (32, 64)
    reg_params: tuple[float, ...] = (0.01, 0.1)
    alphas: tuple[float, ...] = (1.0, 10.0)
    max_iter: int = 10
    seed: int = 7


@dataclass(frozen=True)
class EaseGrid:
    """EASE's λ grid, the weight grid of the user's own decayed history (variant `all`), and the
    largest catalogue whose items x items inverse is computed on the driver."""

    l2s: tuple[float, ...] = (50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0)
    history_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    max_items: int = 20000


def warn_at_edge(setting: str, grid: Sequence[float], chosen: float) -> None:
    """Log a warning when a tuning chose the smallest or largest value of a grid of three or more
    (a search, not a choice between two): its best may lie beyond the grid."""
    if len(set(grid)) >= 3 and chosen in (min(grid), max(grid)):
        side = "smallest" if chosen == min(grid) else "largest"
        log.warning("%s: the tuning chose %g, the %s value of the grid %s; the best may lie beyond it",
                    setting, chosen, side, list(grid))


@dataclass
class EvalContext:
    """What a model needs besides the history (values, not the settings object)."""

    spark: SparkSession
    cutoff: dt.date
    users: pd.DataFrame  # user_id, region: the users to recommend for
    n: int
    exclude_seen: bool = False
    seen: dict[Any, set[Any]] = field(default_factory=dict)
    decay_days: float = 30.0
    pop_window_days: int = 90
    tune_k: int = 10
    horizon_days: int = 28
    als: AlsGrid = field(default_factory=AlsGrid)
    ease: EaseGrid = field(default_factory=EaseGrid)
    # cache shared between calls on the same split (tuned ALS parameters, ...)
    cache: dict[str, Any] = field(default_factory=dict)
    # cache shared by every cutoff of one evaluation, keyed by the day the data ends: the history
    # before a day is the same for every cutoff after it (matrices, ALS fits, the last Gram matrix)
    shared: dict[Any, Any] = field(default_factory=dict)


Model = Callable[[DataFrame, EvalContext], DataFrame]
