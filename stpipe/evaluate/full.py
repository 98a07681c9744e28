"""`full` (our recommender) and its ablations, trained and run as of the cutoff.

The evaluate stage hands in ``prepare``: it runs the stages the recommender reads from
(series -> Granger, embed) into a scratch warehouse that holds only the orders before the
cutoff, so nothing after it can leak in, and returns the recommender's input frames. Then
:func:`stpipe.recommend.recommend` is called once per component set with ``run_date =
cutoff`` (its feature frames computed as of the cutoff by the features stage's function).
Each call returns long lists (``list_length``), which serve the `all` variant and the
category level; the `novel` variant calls it with ``allow_repeat=False``. Users without
history get their region's cold-start template (user_id ``*``).

When the recommender or a stage it needs fails, the model raises :class:`ModelUnavailable` with
the reason, and the evaluation reports it as unavailable (never a number).

With an encoder tuned as of the cutoff (``evaluate.finetune``), :class:`Prepared` also holds the
base encoder's vectors (``base_item_embeddings``): `full_base_encoder` is `full` with them,
`content_base` and `content_tuned` the text model alone (:mod:`stpipe.evaluate.content`). Without a
tuning `full_base_encoder` and `content_tuned` are unavailable.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from stpipe.evaluate.baselines import EvalContext, Model, to_spark
from stpipe.evaluate.content import content_model
from stpipe.evaluate.names import FULL_COMPONENTS, FULL_VARIANTS
from stpipe.evaluate.runner import ModelUnavailable
from stpipe.recommend import RecommendOptions, recommend
from stpipe.recommend.shared import SharedWork

log = logging.getLogger("stpipe.evaluate")

COLD_TEMPLATE_USER = "*"


@dataclass(frozen=True)
class Prepared:
    """The recommender's inputs as of the cutoff; ``item_embeddings`` from the encoder tuned as of
    the cutoff when ``base_item_embeddings`` (the base encoder's) is given, else the base's."""

    orders: DataFrame
    items: DataFrame
    item_embeddings: DataFrame
    granger_stats: DataFrame | None
    base_item_embeddings: DataFrame | None = None

    @property
    def tuned(self) -> bool:
        return self.base_item_embeddings is not None

    def vectors(self, base: bool) -> DataFrame:
        """The base encoder's item vectors, or the ones `full` uses."""
        return self.base_item_embeddings if base and self.tuned else self.item_embeddings

    def recommend_inputs(self, base: bool = False) -> dict[str, Any]:
        """:func:`stpipe.recommend.recommend`'s data arguments, with the base vectors if ``base``."""
        return dict(orders=self.orders, items=self.items, item_embeddings=self.vectors(base),
                    granger_stats=self.granger_stats)


# () -> the inputs as of the cutoff (runs the stages; see the module)
Prepare = Callable[[], Prepared]


def lists_for_users(recs: pd.DataFrame, users: pd.DataFrame, n: int) -> pd.DataFrame:
    """Each user's own list, or the cold-start template of the user's region; cut to ``n``."""
    own = recs[recs.user_id != COLD_TEMPLATE_USER]
    known = own[own.user_id.isin(set(users.user_id))]
    templates = recs[recs.user_id == COLD_TEMPLATE_USER]
    cold = users[~users.user_id.isin(set(own.user_id))][["user_id", "region"]]
    from_template = cold.merge(templates.drop(columns=["user_id"]), on="region", how="inner")
    out = pd.concat([known[["user_id", "rank", "item_id"]], from_template[["user_id", "rank", "item_id"]]])
    return out[out["rank"] <= n].sort_values(["user_id", "rank"]).reset_index(drop=True)


def models(
    spark: SparkSession,
    *,
    prepare: Prepare,
    cutoff: dt.date,
    list_length: int,
    opts: RecommendOptions,
    shared: SharedWork | None = None,
) -> dict[str, Model]:
    """The `full` variants as model functions sharing one ``prepare`` (run at most once) and,
    when given, one ``shared`` (each date's features and catalogue computed once for all)."""
    state: dict[Any, Any] = {}

    def inputs() -> Prepared:
        if "error" in state:
            raise ModelUnavailable(state["error"])
        if "inputs" not in state:
            try:
                state["inputs"] = prepare()
            except Exception as exc:  # reported as unavailable, with the reason
                log.warning("full: the pipeline stages failed as of %s", cutoff, exc_info=True)
                state["error"] = f"pipeline stages failed: {exc.__class__.__name__}: {_first_line(exc)}"
                raise ModelUnavailable(state["error"]) from None
        return state["inputs"]

    def encoder_inputs(needs_tuning: bool) -> Prepared:
        data = inputs()
        if needs_tuning and not data.tuned:
            raise ModelUnavailable("no encoder tuned as of the cutoff (evaluate.finetune is off)")
        return data

    def vectors(base: bool) -> Callable[[], pd.DataFrame]:
        def get() -> pd.DataFrame:
            frame = encoder_inputs(needs_tuning=not base).vectors(base)
            if ("vectors", base) not in state:
                state[("vectors", base)] = frame.select("item_id", "embedding").toPandas()
            return state[("vectors", base)]

        return get

    def make(name: str, components: frozenset[str], base: bool = False) -> Model:
        def model(history: DataFrame, ctx: EvalContext) -> DataFrame:
            # `novel` asks the recommender for new items only (allow_repeat=False), which also
            # fits its fusion on new-item labels; `all` and the category level allow repeats.
            # Only the evaluated users are scored (Olist has ~90k customers with history and
            # a few hundred returning ones); the category level reuses the item level's lists
            # when it asks for no new users with history (cold ones get the templates).
            key = (name, not ctx.exclude_seen)
            wanted = {str(u) for u in ctx.users.user_id if u in ctx.seen}  # cold ones: templates
            if key in state and not wanted <= state[key + ("users",)]:
                wanted |= state.pop(key + ("users",))
                del state[key]
            if key not in state:
                data = encoder_inputs(needs_tuning=base)
                try:
                    recs = recommend(
                        spark, **data.recommend_inputs(base), run_date=cutoff, components=components,
                        k=max(list_length, ctx.n), allow_repeat=not ctx.exclude_seen, opts=opts,
                        only_users=wanted, shared=shared,
                    )
                    state[key] = recs.select("user_id", "region", "rank", "item_id").toPandas()
                    state[key + ("users",)] = wanted
                except Exception as exc:
                    log.warning("full: %s failed", name, exc_info=True)
                    raise ModelUnavailable(
                        f"recommend failed: {exc.__class__.__name__}: {_first_line(exc)}"
                    ) from None
            recs = lists_for_users(state[key], ctx.users, ctx.n)
            return to_spark(ctx.spark, recs)

        model.__name__ = name
        return model

    out = {name: make(name, comps) for name, comps in FULL_VARIANTS.items()}
    out["full_base_encoder"] = make("full_base_encoder", FULL_COMPONENTS, base=True)
    out["content_base"] = content_model("content_base", vectors(base=True), power=opts.bert_kernel_power)
    out["content_tuned"] = content_model("content_tuned", vectors(base=False), power=opts.bert_kernel_power)
    return out


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""
