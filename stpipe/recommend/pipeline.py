"""The recommender as a function: history and feature tables in, a ``recommendations`` frame out.

:func:`recommend` is what the nightly ``recommend`` stage and the offline evaluation call
(the latter with orders strictly before its cutoff and some components switched off).
Its time and space signals and the users' home regions come from the feature tables
(``item_time_features``, ``region_item_features``, ``user_space_features``): the nightly
passes the ones the features stage wrote for the run date; for any other as-of date (fusion
training as of ``run_date - validation_days``, an evaluation cutoff) they are computed by
the same function the features stage uses (:func:`stpipe.features.build.features_as_of`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import zlib
from collections.abc import Iterable

import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.catalogue import (
    ITEM_EMBEDDINGS,
    ITEM_TIME_FEATURES,
    ITEMS,
    RECOMMENDATIONS,
    REGION_ITEM_FEATURES,
    USER_SPACE_FEATURES,
)
from stpipe.config import FeatureSettings, RecommendSettings
from stpipe.errors import InputError
from stpipe.features.build import features_as_of
from stpipe.features.common import prune_order_dates
from stpipe.recommend import signals
from stpipe.recommend.catalog import build_catalog
from stpipe.recommend.fusion import FusionFit, fit_fusion
from stpipe.recommend.item_model import item_neighbours
from stpipe.recommend.shared import FeatureFrames, SharedWork
from stpipe.schema import require_columns, select_schema, window_name
from udfs.score import (
    ALL_COMPONENTS,
    FEATURES,
    Catalog,
    ScoreParams,
    candidate_sources,
    score_batches,
)

log = logging.getLogger("stpipe.recommend")

SCORED = T.StructType(
    [
        T.StructField("source", T.StringType(), False),
        T.StructField("user_id", T.StringType(), False),
        T.StructField("region", T.StringType(), True),
        T.StructField("is_cold_start", T.BooleanType(), False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", T.StringType(), False),
        T.StructField("score", T.DoubleType(), False),
        *[T.StructField(f"{f}_score", T.DoubleType(), False) for f in FEATURES],
        T.StructField("reasons", T.ArrayType(T.StringType()), False),
        T.StructField("n_candidates", T.IntegerType(), False),
        T.StructField("proposed_by", T.IntegerType(), False),  # candidate sources' bit flags
    ]
)

ALIASES = {"timespace": {"time", "space"}}


def normalise_components(components: Iterable[str]) -> frozenset[str]:
    """Component names, with ``timespace`` meaning time and space; unknown names rejected."""
    out: set[str] = set()
    for name in components:
        if name in ALIASES:
            out |= ALIASES[name]
        elif name in ALL_COMPONENTS:
            out.add(name)
        else:
            raise InputError(
                f"unknown recommender component {name!r} (known: {', '.join(sorted(ALL_COMPONENTS))}, timespace)"
            )
    return frozenset(out)


@dataclasses.dataclass(frozen=True)
class RecommendOptions(RecommendSettings):
    """The recommender's settings as plain values: ``RecommendSettings`` plus the feature ones."""

    features: FeatureSettings = FeatureSettings()

    @property
    def timezone(self) -> str:
        return self.features.timezone

    @classmethod
    def from_settings(
        cls, recommend_settings: RecommendSettings, features: FeatureSettings | None = None
    ) -> RecommendOptions:
        return cls(**dataclasses.asdict(recommend_settings), features=features or FeatureSettings())


def feature_frames_for(orders: DataFrame, items: DataFrame, features: FeatureFrames | None, *,
                       as_of: dt.date, opts: RecommendOptions) -> FeatureFrames:
    """``features`` when given (the tables of the as-of date), else computed as of ``as_of``."""
    if features is not None:
        return features
    return features_as_of(orders, items, as_of=as_of, params=opts.features)


def _feature_pandas(frames: FeatureFrames, opts: RecommendOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(item_time, region_item) as the small pandas frames :func:`build_catalog` takes."""
    short = window_name("orders", min(int(w) for w in opts.features.windows_days))
    item_time = frames[ITEM_TIME_FEATURES].select(
        "item_id", "popularity", "trend", F.col(short).alias("recent_orders"), "buyers",
        "repeat_buyers",
    ).toPandas()
    region_item = frames[REGION_ITEM_FEATURES].where(F.col("level") == "item").select(
        "region", F.col("key").alias("item_id"), "lift"
    ).toPandas()
    if item_time.empty:
        raise InputError("item_time_features has no rows for this date; run the features stage first")
    return item_time, region_item


def load_catalog(
    orders: DataFrame,
    items: DataFrame,
    item_embeddings: DataFrame,
    granger_stats: DataFrame | None,
    features: FeatureFrames,
    *,
    as_of: dt.date,
    causal_date: dt.date,
    opts: RecommendOptions,
    with_cooc: bool = True,
) -> Catalog:
    """Signals as of ``as_of`` collected into a driver-side :class:`Catalog`.

    ``with_cooc=False`` skips the item x item matrix (its self-join is the costly part).
    """
    require_columns(item_embeddings, ["item_id", "embedding"], where=ITEM_EMBEDDINGS.name)
    require_columns(items, ["item_id", "category"], where=ITEMS.name)
    emb = item_embeddings.select("item_id", "embedding").toPandas()
    if emb.empty:
        raise InputError("item_embeddings is empty; run the embed stage first")
    cats = items.select("item_id", "category").toPandas()
    item_time, region_item = _feature_pandas(features, opts)
    causal = signals.causal_strengths(granger_stats, run_date=causal_date)
    causal_pdf = causal.toPandas() if causal is not None else None
    cooc = None
    if with_cooc:
        lines = history_lines(orders, as_of=as_of, opts=opts)
        cooc = item_neighbours(
            lines, model=opts.item_model, half_life_days=opts.cooc_half_life_days,
            cooc_neighbours=opts.cooc_neighbours, l2_scale=opts.ease_l2_scale,
            ease_neighbours_kept=opts.ease_neighbours, max_items=opts.ease_max_items,
        )
    return build_catalog(
        emb, cats, item_time, region_item, causal_pdf, cooc,
        trend_ratio=opts.trend_ratio, max_region_candidates=max(opts.candidates_popular, 1),
        rebuy_prior_buyers=opts.rebuy_prior_buyers,
    )


def lines_read(orders: DataFrame, *, run_date: dt.date, opts: RecommendOptions) -> DataFrame:
    """The order lines (whole ``order_date`` partitions) a run for ``run_date`` can read: the
    fusion's labels (``validation_days`` before it) and before them the longer of the recommender's
    and the features' history windows. A superset: each reader applies its own bounds."""
    days = opts.validation_days + max(opts.history_days, opts.features.history_days)
    return prune_order_dates(orders, before=run_date, days=days)


def history_lines(orders: DataFrame, *, as_of: dt.date, opts: RecommendOptions) -> DataFrame:
    """The lines the recommender learns from as of ``as_of``: the ``history_days`` before it."""
    return signals.history_before(orders, as_of=as_of, timezone=opts.timezone, days=opts.history_days)


def _signals(
    orders: DataFrame, items: DataFrame, item_embeddings: DataFrame, granger_stats: DataFrame | None,
    features: FeatureFrames | None, *, as_of: dt.date, causal_date: dt.date, opts: RecommendOptions,
    with_cooc: bool, shared: SharedWork | None,
) -> tuple[FeatureFrames, Catalog]:
    """The feature frames (``features`` when given) and the catalogue as of ``as_of``; through
    ``shared`` when given, so that each date's are computed once."""
    def frames() -> FeatureFrames:
        return feature_frames_for(orders, items, features, as_of=as_of, opts=opts)

    if shared is not None and features is None:
        features = shared.features(as_of, frames)
    else:
        features = frames()

    def catalog() -> Catalog:
        return load_catalog(
            orders, items, item_embeddings, granger_stats, features, as_of=as_of,
            causal_date=causal_date, opts=opts, with_cooc=with_cooc,
        )

    if shared is None:
        return features, catalog()
    return features, shared.catalog(as_of, causal_date, with_cooc, catalog, embeddings=item_embeddings)


def _histories(
    orders: DataFrame, features: FeatureFrames, *, as_of: dt.date, opts: RecommendOptions,
    shared: SharedWork | None,
) -> DataFrame:
    """Every user's history as of ``as_of`` (:func:`signals.user_histories` of
    :func:`history_lines`); through ``shared`` when given, so that each date's is computed once."""
    def compute() -> DataFrame:
        return signals.user_histories(
            history_lines(orders, as_of=as_of, opts=opts), half_life_days=opts.recency_half_life_days,
            timezone=opts.timezone, user_space=features[USER_SPACE_FEATURES],
            recent_half_life_days=opts.recent_half_life_days,
        )

    return compute() if shared is None else shared.histories(as_of, compute)


def _score(
    users: DataFrame, catalog: Catalog, params: ScoreParams, *, partitions: int
) -> DataFrame:
    """Score users in a ``mapInPandas`` UDF with the catalog broadcast once per executor."""
    spark = users.sparkSession
    shared = spark.sparkContext.broadcast(catalog)

    def run(batches):
        yield from score_batches(batches, shared.value, params)

    # Fixed partitioning and order: the same users always meet in the same sub-batches.
    users = users.repartition(partitions, "source", "user_id").sortWithinPartitions(
        "source", "user_id"
    )
    return users.mapInPandas(run, SCORED)


def _params(opts: RecommendOptions, weights: dict[str, float], components: frozenset[str], k: int | None) -> ScoreParams:
    return ScoreParams(
        weights=weights, k=k, components=components, allow_repeat=opts.allow_repeat,
        recent_items=opts.recent_items, history_items=opts.history_items,
        bert_kernel_power=opts.bert_kernel_power, candidates_popular=opts.candidates_popular, candidates_neighbours=opts.candidates_neighbours,
        candidates_causal=opts.candidates_causal, candidates_cooc=opts.candidates_cooc,
        batch_users=opts.score_batch_users,
    )


def _sample_rank(user_id: str, seed: int) -> int:
    return zlib.crc32(f"{seed}:{user_id}".encode())


def train_fusion(
    spark: SparkSession,
    *,
    orders: DataFrame,
    items: DataFrame,
    item_embeddings: DataFrame,
    granger_stats: DataFrame | None,
    run_date: dt.date,
    components: Iterable[str] = ALL_COMPONENTS,
    opts: RecommendOptions = RecommendOptions(),
    shared: SharedWork | None = None,
) -> tuple[FusionFit, dt.date]:
    """Fit the fusion weights: candidates as of run_date - validation_days, labels after it.

    ``shared``: computes the features and catalogue of each date once across calls, and the
    training rows once per encoder: every source's candidates, of which each call keeps those its
    own sources proposed (see :mod:`stpipe.recommend.shared`)."""
    components = normalise_components(components)
    as_of = run_date - dt.timedelta(days=opts.validation_days)
    features, catalog = _signals(
        orders, items, item_embeddings, granger_stats, None, as_of=as_of, causal_date=run_date,
        opts=opts, with_cooc="cooc" in components or shared is not None, shared=shared,
    )

    def rows_of(sources_of: frozenset[str]) -> pd.DataFrame:
        histories = _histories(orders, features, as_of=as_of, opts=opts, shared=shared)
        return _training_rows(
            spark, orders, catalog, histories, as_of=as_of, run_date=run_date, sources_of=sources_of,
            opts=opts,
        )

    if shared is None:
        rows = rows_of(components)
    else:
        key = (shared.encoder(item_embeddings), as_of, run_date, opts.allow_repeat)
        sources = candidate_sources(components, opts.allow_repeat)
        rows = shared.rows(key, lambda: rows_of(ALL_COMPONENTS), sources)
    features_on = tuple(f for f in FEATURES if f in components)
    x = rows[[f"{f}_score" for f in features_on]].to_numpy(dtype=float)
    y = rows["label"].to_numpy(dtype=float)
    groups = None
    if opts.fusion_objective == "listwise" and len(rows):  # each user's rows are contiguous
        groups = pd.factorize(rows["source"] + "\x1f" + rows["user_id"])[0]
    fit = fit_fusion(
        x, y, features=features_on, l2=opts.fusion_l2,
        min_events_per_feature=opts.fusion_min_events_per_feature, groups=groups,
    )
    log.info("fusion %s on %d rows (%d positives): %s", fit.status, fit.train_rows, fit.train_positives, fit.weights)
    return fit, as_of


def _training_rows(
    spark: SparkSession, orders: DataFrame, catalog: Catalog, histories: DataFrame, *,
    as_of: dt.date, run_date: dt.date, sources_of: frozenset[str], opts: RecommendOptions,
) -> pd.DataFrame:
    """The fusion's training rows: every candidate (of ``sources_of``' candidate sources) of the
    sampled users who bought in [as_of, run_date), with every component's score, the sources that
    proposed it (``proposed_by``) and the label (bought then or not), ordered by user and item."""
    # the labels: lines in [as_of, run_date), the validation_days before the run date
    later = signals.history_before(
        orders, as_of=run_date, timezone=opts.timezone, days=(run_date - as_of).days
    )
    key = ["source", "user_id"]
    labels = later.select(*key, "item_id").distinct().withColumn("label", F.lit(1.0))
    buyers = later.select(*key).distinct()
    users = histories.join(buyers, key, "left_semi")
    chosen = [(r["source"], r["user_id"]) for r in users.select(*key).collect()]
    chosen = sorted(chosen, key=lambda su: (_sample_rank(su[1], opts.seed), su))[: opts.fusion_max_users]
    columns = [*key, "item_id", *[f"{f}_score" for f in FEATURES], "proposed_by", "label"]
    if not chosen:
        return pd.DataFrame(columns=columns)
    wanted = spark.createDataFrame(chosen, "source string, user_id string")
    users = users.join(wanted, key, "left_semi")
    params = dataclasses.replace(
        _params(opts, {"intercept": 0.0}, ALL_COMPONENTS, None), sources_of=sources_of
    )
    cands = _score(users, catalog, params, partitions=spark.sparkContext.defaultParallelism)
    return (
        cands.join(labels, [*key, "item_id"], "left")
        .fillna({"label": 0.0})
        .select(*columns)
        .orderBy(*key, "item_id")
        .toPandas()
    )


def recommend(
    spark: SparkSession,
    *,
    orders: DataFrame,
    items: DataFrame,
    item_embeddings: DataFrame,
    granger_stats: DataFrame | None = None,
    features: FeatureFrames | None = None,
    run_date: dt.date,
    components: Iterable[str] = ALL_COMPONENTS,
    k: int | None = None,
    allow_repeat: bool | None = None,
    weights: dict[str, float] | None = None,
    opts: RecommendOptions = RecommendOptions(),
    only_users: Iterable[str] | None = None,
    shared: SharedWork | None = None,
) -> DataFrame:
    """Top-K recommendations as of ``run_date`` (only orders before it are used).

    ``features``: the feature frames for ``run_date`` (None: computed from ``orders`` and
    ``items``). ``components`` (subset of bert, time, space, causal, history, recent, repeat, reach,
    rebuy, cooc;
    ``timespace`` = time and space) switches signals and their candidate sources off for
    ablations; ``weights=None`` fits the fusion on the same history first. Returns a frame of
    the ``recommendations`` schema: every (source, user) with history (only the user ids in
    ``only_users`` when given: the offline evaluation scores just the users it evaluates),
    plus one cold-start template per source and region (user_id '*'). ``shared``: the
    features and catalogue of each date computed once across calls on the same inputs (the
    evaluation's ablations and variants; :mod:`stpipe.recommend.shared`).
    """
    components = normalise_components(components)
    opts = dataclasses.replace(
        opts,
        k=opts.k if k is None else k,
        allow_repeat=opts.allow_repeat if allow_repeat is None else allow_repeat,
    )
    if weights is None:
        weights = train_fusion(
            spark, orders=orders, items=items, item_embeddings=item_embeddings,
            granger_stats=granger_stats, run_date=run_date, components=components, opts=opts,
            shared=shared,
        )[0].weights
    features, catalog = _signals(
        orders, items, item_embeddings, granger_stats, features, as_of=run_date,
        causal_date=run_date, opts=opts, with_cooc="cooc" in components, shared=shared,
    )
    users = _histories(orders, features, as_of=run_date, opts=opts, shared=shared)
    # the sources: from the shared (cached) histories, else from the lines (a lighter job)
    of = users if shared is not None else history_lines(orders, as_of=run_date, opts=opts)
    sources = [r["source"] for r in of.select("source").distinct().collect()]
    if only_users is not None:
        wanted = spark.createDataFrame([(str(u),) for u in sorted(set(only_users))], "user_id string")
        users = users.join(wanted, "user_id", "left_semi")
    users = users.unionByName(signals.cold_start_templates(users, sources, catalog.regions))
    scored = _score(
        users, catalog, _params(opts, weights, components, opts.k),
        partitions=spark.sparkContext.defaultParallelism,
    )
    return select_schema(scored.withColumn("run_date", F.lit(run_date)), RECOMMENDATIONS.schema)
