"""Runs every model on one temporal split and scores the lists (item and category level)."""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from stpipe.evaluate import metrics as M
from stpipe.evaluate.baselines import global_ranking
from stpipe.evaluate.context import AlsGrid, EaseGrid, EvalContext, Model
from stpipe.evaluate.names import EXTRA_PAIRS
from stpipe.evaluate.paired import PAIRED_COLUMNS, paired_differences
from stpipe.evaluate.split import drop_seen, temporal_split, to_interactions, truth_sets
from stpipe.schema import require_columns

log = logging.getLogger("stpipe.evaluate")

LIST_COLUMNS = ["variant", "level", "model", "user_id", "rank", "item_id"]
TRUTH_COLUMNS = ["variant", "level", "user_id", "item_id"]


class ModelUnavailable(Exception):
    """A model that cannot run on this split (its code or its inputs are missing)."""


@dataclass
class EvaluationResult:
    metrics: pd.DataFrame  # model, variant, level, k, metric, value, stderr, users
    facts: dict[str, Any]
    unavailable: dict[str, str] = field(default_factory=dict)
    # full minus each other model per user (stpipe.evaluate.paired.PAIRED_COLUMNS)
    paired: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PAIRED_COLUMNS))
    # the scored lists (variant, level, model, user_id, rank, item_id) and truths (variant, level,
    # user_id, item_id) behind the item-level metrics
    lists: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=LIST_COLUMNS))
    truth: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=TRUTH_COLUMNS))


def fill_lists(
    recs: pd.DataFrame,
    users: Sequence[Any],
    fallback: Sequence[Any],
    *,
    n: int,
    seen: dict[Any, set[Any]] | None = None,
) -> dict[Any, list[Any]]:
    """Each user's list in rank order (duplicates and ``seen`` items dropped), filled from
    ``fallback`` up to ``n`` items."""
    by_user: dict[Any, list[Any]] = {}
    if len(recs):
        ordered = recs.sort_values(["user_id", "rank", "item_id"])
        for user, group in ordered.groupby("user_id", sort=False):
            by_user[user] = list(group.item_id)
    out = {}
    for user in users:
        skip = seen.get(user, set()) if seen else set()
        chosen: list[Any] = []
        taken: set[Any] = set()
        for item in (*by_user.get(user, ()), *fallback):
            if len(chosen) == n:
                break
            if item in taken or item in skip:
                continue
            chosen.append(item)
            taken.add(item)
        out[user] = chosen
    return out


def to_categories(lists: dict[Any, list[Any]], category_of: dict[Any, str], n: int) -> dict[Any, list[str]]:
    """Item lists -> the distinct categories in order of first appearance, cut to ``n``."""
    out = {}
    for user, items in lists.items():
        cats: list[str] = []
        for item in items:
            cat = category_of.get(item)
            if cat is not None and cat not in cats:
                cats.append(cat)
                if len(cats) == n:
                    break
        out[user] = cats
    return out


def _collect_recs(df: DataFrame) -> pd.DataFrame:
    require_columns(df, ["user_id", "rank", "item_id"], where="model output")
    return df.select(F.col("user_id").cast("string"), F.col("rank").cast("int"), F.col("item_id").cast("string")).toPandas()


def evaluate_split(
    spark: SparkSession,
    orders: DataFrame,
    items: pd.DataFrame,
    models: dict[str, Model],
    *,
    cutoff: dt.date,
    horizon_days: int,
    ks: Sequence[int],
    k: int,
    pop_window_days: int = 90,
    decay_days: float = 30.0,
    als: AlsGrid | None = None,
    ease: EaseGrid | None = None,
    category_level: bool = False,
    category_candidates: int = 200,
    reference: str = "full",
    seed: int = 7,
    shared: dict[Any, Any] | None = None,
) -> EvaluationResult:
    """Split ``orders`` at ``cutoff``, run each model, return metrics for both variants.

    ``items`` is a pandas frame (item_id, category), used at the category level. ``shared``: a
    dict kept across the cutoffs of one evaluation on the same orders (fits computed once).
    """
    ks = sorted(set(ks) | {k})
    max_k = max(ks)
    split = temporal_split(to_interactions(orders), cutoff=cutoff, horizon_days=horizon_days)
    history = split.history.cache()
    seen_pdf = history.select("user_id", "item_id").distinct().toPandas()
    seen = truth_sets(seen_pdf)
    truth_all = truth_sets(split.truth.toPandas())
    regions = split.user_regions.toPandas()
    catalogue = set(seen_pdf.item_id)
    truth = {u: t for u, t in truth_all.items() if u in seen}
    novel_truth = drop_seen(truth, seen)
    cold = sorted(set(truth_all) - set(seen), key=str)
    facts: dict[str, Any] = {
        "history interactions (user, item, day)": history.count(),
        "history users": len(seen),
        "catalogue (items in history)": len(catalogue),
        "truth users (buy in the window)": len(truth_all),
        "cold truth users (no history, not in item metrics)": len(cold),
        "evaluated users, variant all": len(truth),
        "evaluated users, variant novel": len(novel_truth),
    }
    log.info("evaluate split at %s: %s", cutoff, facts)
    fallback = global_ranking(history, cutoff=cutoff, window_days=pop_window_days)
    ctx_base = EvalContext(
        spark=spark, cutoff=cutoff, users=regions.iloc[0:0], n=max_k, seen=seen, decay_days=decay_days,
        pop_window_days=pop_window_days, tune_k=k, horizon_days=horizon_days, als=als or AlsGrid(),
        ease=ease or EaseGrid(),
        shared=shared if shared is not None else {},
    )
    variants = {"all": (truth, False), "novel": (novel_truth, True)}
    rows: list[pd.DataFrame] = []
    per_user_rows: list[pd.DataFrame] = []
    list_rows: list[pd.DataFrame] = []
    unavailable: dict[str, str] = {}
    for name, model in models.items():
        for variant, (variant_truth, exclude) in variants.items():
            if name == "own_history" and variant == "novel":
                continue  # empty by construction
            users = sorted(variant_truth, key=str)
            ctx = replace(ctx_base, users=regions[regions.user_id.isin(users)].sort_values("user_id"),
                          exclude_seen=exclude)
            try:
                recs = _collect_recs(model(history, ctx))
            except ModelUnavailable as exc:
                unavailable[name] = str(exc)
                log.warning("model %s unavailable: %s", name, exc)
                break
            lists = fill_lists(recs, users, fallback, n=max_k, seen=seen if exclude else None)
            per_user = M.per_user_metrics(lists, variant_truth, ks)
            scored = M.summarise(lists, variant_truth, ks, catalogue_size=len(catalogue), per_user=per_user)
            rows.append(scored.assign(model=name, variant=variant, level="item"))
            per_user_rows.append(per_user.assign(model=name, variant=variant, level="item"))
            list_rows.append(_long_lists(lists, model=name, variant=variant))
            log.info("model %s %s: ndcg@%d %s", name, variant, k,
                     scored[(scored.k == k) & (scored.metric == "ndcg")].value.tolist())
        if category_level and name not in unavailable:
            rows.append(
                _category_level(history, ctx_base, model, name, items, truth_all, regions, fallback,
                                ks=ks, n=category_candidates)
            )
    if category_level:
        facts["category level: window buyers (cold included)"] = len(truth_all)
    if "als_params" in ctx_base.cache:
        facts["als (tuned on the window before the cutoff)"] = ctx_base.cache["als_params"]
    if "ease_params" in ctx_base.cache:
        facts["ease (tuned on the window before the cutoff)"] = ctx_base.cache["ease_params"]
    metrics = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["k", "metric", "value", "stderr", "users", "model", "variant", "level"]
    )
    history.unpersist()
    per_user_rows = [f for f in per_user_rows if len(f)]
    per_user_all = pd.concat(per_user_rows, ignore_index=True) if per_user_rows else None
    paired = pd.DataFrame(columns=PAIRED_COLUMNS)
    if per_user_all is not None:
        parts = [paired_differences(per_user_all, reference=reference, seed=seed)]
        for model, versus in EXTRA_PAIRS:  # e.g. the tuned text model against the base one
            two = per_user_all[per_user_all.model.isin([model, versus])]
            parts.append(paired_differences(two, reference=model, seed=seed))
        paired = pd.concat([p for p in parts if len(p)] or [paired], ignore_index=True)
    truth_rows = [(v, "item", u, i) for v, (t, _) in variants.items() for u in sorted(t, key=str)
                  for i in sorted(t[u], key=str)]
    return EvaluationResult(
        metrics=metrics, facts=facts, unavailable=unavailable, paired=paired,
        lists=pd.concat([f for f in list_rows if len(f)] or [pd.DataFrame(columns=LIST_COLUMNS)], ignore_index=True),
        truth=pd.DataFrame(truth_rows, columns=TRUTH_COLUMNS),
    )


def _long_lists(lists: dict[Any, list[Any]], *, model: str, variant: str) -> pd.DataFrame:
    rows = [(variant, "item", model, user, rank, item) for user, items in lists.items()
            for rank, item in enumerate(items, start=1)]
    return pd.DataFrame(rows, columns=LIST_COLUMNS)


def _category_level(
    history: DataFrame,
    ctx_base: EvalContext,
    model: Model,
    name: str,
    items: pd.DataFrame,
    truth_all: dict[Any, set[Any]],
    regions: pd.DataFrame,
    fallback: Sequence[Any],
    *,
    ks: Sequence[int],
    n: int,
) -> pd.DataFrame:
    """Does the category list derived from the item list contain what each window buyer bought?"""
    category_of = dict(zip(items.item_id, items.category, strict=True))
    users = sorted(truth_all, key=str)
    ctx = replace(ctx_base, users=regions[regions.user_id.isin(users)].sort_values("user_id"), n=n,
                  exclude_seen=False)
    recs = _collect_recs(model(history, ctx))
    lists = to_categories(fill_lists(recs, users, fallback, n=n), category_of, max(ks))
    truth = {u: {category_of[i] for i in t if i in category_of} for u, t in truth_all.items()}
    catalogue = {category_of[i] for bought in ctx_base.seen.values() for i in bought if i in category_of}
    scored = M.summarise(lists, truth, ks, catalogue_size=len(catalogue))
    return scored.assign(model=name, variant="all", level="category")


def metrics_rows(
    result: pd.DataFrame, *, run_date: dt.date, source: str, cutoff: dt.date,
    paired: pd.DataFrame | None = None,
) -> list[tuple[Any, ...]]:
    """pandas metrics (and paired differences) -> tuples in EVAL_METRICS order (NaN -> null);
    ``versus`` and ``p_value`` are null except on the paired rows."""

    def clean(x: Any) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)

    frames = [result.assign(versus=None, p_value=math.nan)]
    if paired is not None and len(paired):
        frames.append(paired)
    both = pd.concat([f for f in frames if len(f)], ignore_index=True) if any(len(f) for f in frames) else frames[0]
    ordered = both.assign(_v=both.versus.fillna("")).sort_values(["level", "model", "_v", "variant", "k", "metric"])
    return [
        (run_date, r.model, r.variant, int(r.k), r.metric, clean(r.value), clean(r.stderr), int(r.users),
         r.level, source, cutoff, r.versus if isinstance(r.versus, str) else None, clean(r.p_value))
        for r in ordered.itertuples()
    ]
