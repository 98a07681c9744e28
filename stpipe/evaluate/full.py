"""`full` (our recommender) and its ablations, trained and run as of the cutoff.

Each model runs the pipeline stages (features, series, Granger, embeddings) into a scratch
warehouse holding only the orders before the cutoff, then asks the recommender for lists with
some components switched off. When the recommender's code is absent the model raises
:class:`ModelUnavailable`, and the evaluation reports it as unavailable (never a number).
"""

from __future__ import annotations

import importlib
import logging

from pyspark.sql import DataFrame, SparkSession

from stpipe.config import Settings
from stpipe.evaluate.baselines import EvalContext, Model
from stpipe.evaluate.runner import ModelUnavailable

log = logging.getLogger("stpipe.evaluate")

ALL_COMPONENTS = frozenset({"bert", "causal", "timespace"})
VARIANTS = {
    "full": ALL_COMPONENTS,
    "full_no_bert": ALL_COMPONENTS - {"bert"},
    "full_no_causal": ALL_COMPONENTS - {"causal"},
    "full_no_timespace": ALL_COMPONENTS - {"timespace"},
}


def _recommend_module():
    try:
        return importlib.import_module("jobs.recommend")
    except ImportError as exc:
        raise ModelUnavailable(f"the recommender is not importable ({exc})") from None


def models(spark: SparkSession, settings: Settings) -> dict[str, Model]:
    """The four `full` variants as model functions (they share one scratch pipeline run)."""

    def make(name: str, components: frozenset[str]) -> Model:
        def model(history: DataFrame, ctx: EvalContext) -> DataFrame:
            _recommend_module()
            raise ModelUnavailable("the recommender's entry point is not wired yet")

        model.__name__ = name
        return model

    return {name: make(name, comps) for name, comps in VARIANTS.items()}
