"""Baseline name -> model function, in the order of :data:`stpipe.evaluate.names.BASELINE_NAMES`."""

from __future__ import annotations

from stpipe.evaluate.baselines import als, cooc, own_history, pop_global, pop_region
from stpipe.evaluate.context import Model
from stpipe.evaluate.ease import ease
from stpipe.evaluate.names import BASELINE_NAMES

BASELINES: dict[str, Model] = dict(
    zip(BASELINE_NAMES, (pop_global, pop_region, own_history, cooc, als, ease), strict=True)
)
