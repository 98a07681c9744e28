"""`full` (our recommender) and its ablations, trained and run as of the cutoff.

The pipeline stages the recommender reads from (series -> Granger, embed) run into a scratch
warehouse that holds only the orders before the cutoff, so nothing after it can leak in; then
:func:`jobs.recommend.recommend` is called once per component set with ``run_date = cutoff``.
Each call returns long lists (``list_length``), which serve the `all` variant and the category
level; the `novel` variant calls it with ``allow_repeat=False``. Users
without history get their region's cold-start template (user_id ``*``).

When the recommender or a stage it needs fails, the model raises :class:`ModelUnavailable` with
the reason, and the evaluation reports it as unavailable (never a number).
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe import tables
from stpipe.config import Settings, replace
from stpipe.evaluate.baselines import EvalContext, Model, to_spark
from stpipe.evaluate.runner import ModelUnavailable

log = logging.getLogger("stpipe.evaluate")

FULL = frozenset({"bert", "time", "space", "causal", "history", "cooc"})
VARIANTS: dict[str, frozenset[str]] = {
    "full": FULL,
    "full_no_bert": FULL - {"bert"},
    "full_no_causal": FULL - {"causal"},
    "full_no_timespace": FULL - {"time", "space"},
    "full_no_cooc": FULL - {"cooc"},
}
COLD_TEMPLATE_USER = "*"


def scratch_path(settings: Settings, source: str, cutoff: dt.date) -> str:
    base = settings.evaluate.scratch_warehouse or str(Path(settings.storage.warehouse) / "_evaluate")
    return str(Path(base) / f"{source}-{cutoff.isoformat()}")


def prepare_scratch(
    spark: SparkSession, settings: Settings, orders: DataFrame, items: DataFrame, *, cutoff: dt.date,
    scratch: str,
) -> dict[str, Any]:
    """Write the history orders and the items into ``scratch`` and run series, Granger, embed."""
    from jobs import embed, granger, series
    from stpipe.cli import run_stage

    history = orders.where(F.col("ts") < F.lit(dt.datetime.combine(cutoff, dt.time())))
    tables.write(history, scratch, "orders_clean", partition_by=["order_date"])
    bought = history.select("item_id").distinct()
    tables.write(items.join(bought, "item_id", "left_semi"), scratch, "items")
    stage_settings = replace(settings, run_date=cutoff.isoformat(), **{"storage.warehouse": scratch})
    for name, stage in (("series", series.run), ("granger", granger.run), ("embed", embed.run)):
        run_stage(spark, stage_settings, name, stage)
    granger_stats = tables.read(spark, scratch, "granger_stats").where(F.col("run_date") == F.lit(cutoff))
    return {
        "orders": tables.read(spark, scratch, "orders_clean"),
        "items": tables.read(spark, scratch, "items"),
        "item_embeddings": tables.read(spark, scratch, "item_embeddings"),
        "granger_stats": granger_stats,
    }


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
    settings: Settings,
    *,
    orders: DataFrame,
    items: DataFrame,
    cutoff: dt.date,
    list_length: int,
) -> dict[str, Model]:
    """The four `full` variants as model functions sharing one scratch pipeline run."""
    state: dict[str, Any] = {}
    source = settings.ingest.source

    def inputs() -> dict[str, Any]:
        if "error" in state:
            raise ModelUnavailable(state["error"])
        if "inputs" not in state:
            try:
                state["inputs"] = prepare_scratch(
                    spark, settings, orders, items, cutoff=cutoff, scratch=scratch_path(settings, source, cutoff)
                )
            except Exception as exc:  # reported as unavailable, with the reason
                log.warning("full: the pipeline stages failed as of %s", cutoff, exc_info=True)
                state["error"] = f"pipeline stages failed: {exc.__class__.__name__}: {_first_line(exc)}"
                raise ModelUnavailable(state["error"]) from None
        return state["inputs"]

    def make(name: str, components: frozenset[str]) -> Model:
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
                try:
                    from jobs.recommend import recommend
                    from stpipe.recommend import RecommendOptions
                except ImportError as exc:
                    raise ModelUnavailable(f"the recommender is not importable ({exc})") from None
                data = inputs()
                try:
                    opts = RecommendOptions.from_settings(settings.recommend, settings.features.timezone)
                    recs = recommend(
                        spark, **data, run_date=cutoff, components=components,
                        k=max(list_length, ctx.n), allow_repeat=not ctx.exclude_seen, opts=opts,
                        only_users=wanted,
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

    return {name: make(name, comps) for name, comps in VARIANTS.items()}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""

