"""Every Delta table of a warehouse, declared once: name, schema, layout, slice, readers.

Jobs, stages, the evaluation, notebooks and tests name tables through these objects
(``catalogue.ORDERS_CLEAN.name``), never by a string literal of their own. A table's
``slice_by`` columns are the slice one write replaces (``replaceWhere``): ``("run_date",)``
for the dated outputs of a nightly, ``("source",)`` for what one ingest of a source holds;
an empty tuple means a write replaces the whole table.

``readers`` says who reads the table downstream: a stage of the nightly, or, for the
tables that are the product, the consumers outside this repository.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pyspark.sql import types as T

from stpipe import schema


@dataclass(frozen=True)
class Table:
    """One Delta table under the warehouse folder."""

    name: str
    # The columns, or a function of features.windows_days for the windowed feature tables.
    schema: T.StructType | Callable[[Sequence[int]], T.StructType] | None
    doc: str
    readers: str
    partition_by: tuple[str, ...] = ()
    slice_by: tuple[str, ...] = ()

    def columns(self, windows_days: Sequence[int] = (7, 30, 90)) -> list[str]:
        """Column names (windowed tables: for ``windows_days``)."""
        struct = self.schema(windows_days) if callable(self.schema) else self.schema
        return struct.fieldNames() if struct is not None else []


ORDERS_CLEAN = Table(
    "orders_clean", schema.ORDERS_CLEAN, "cleaned order lines of every source",
    readers="features, series, finetune, embed, recommend, evaluate",
    partition_by=("order_date",), slice_by=("source",),
)
ORDERS_QUARANTINE = Table(
    "orders_quarantine", schema.ORDERS_QUARANTINE, "every rejected input row with a reason code",
    readers="consumers (operators: data quality); the ingest's own reconciliation",
    slice_by=("source",),
)
ITEMS = Table(
    "items", schema.ITEMS, "product texts and categories",
    readers="features, series, finetune, embed, recommend, evaluate", slice_by=("source",),
)
REVIEWS = Table(
    "reviews", schema.REVIEWS, "review scores and texts (Olist)",
    readers="consumers (analysts); no stage", slice_by=("source",),
)
USER_TIME_FEATURES = Table(
    "user_time_features", schema.user_time_schema, "recency, frequency, spend, rhythm per user",
    readers="consumers (CRM, notebooks 01); no stage",
    partition_by=("run_date",), slice_by=("run_date",),
)
ITEM_TIME_FEATURES = Table(
    "item_time_features", schema.item_time_schema, "windowed demand, popularity, trend per item",
    readers="recommend (time score, trending)",
    partition_by=("run_date",), slice_by=("run_date",),
)
REGION_ITEM_FEATURES = Table(
    "region_item_features", schema.REGION_ITEM_FEATURES, "regional popularity and lift",
    readers="recommend (space score, region candidates)",
    partition_by=("run_date",), slice_by=("run_date",),
)
USER_SPACE_FEATURES = Table(
    "user_space_features", schema.USER_SPACE_FEATURES, "home region and position per user",
    readers="recommend (home region)",
    partition_by=("run_date",), slice_by=("run_date",),
)
SALES_SERIES = Table(
    "sales_series", schema.SALES_SERIES, "daily demand per region and category",
    readers="granger", partition_by=("run_date",), slice_by=("run_date",),
)
GRANGER_STATS = Table(
    "granger_stats", schema.GRANGER_STATS, "Granger F tests between sales series, BH q-values",
    readers="recommend (causal score); consumers (notebook 02)", slice_by=("run_date",),
)
ITEM_EMBEDDINGS = Table(
    "item_embeddings", schema.ITEM_EMBEDDINGS, "one text embedding per item (reused when text and model match)",
    readers="recommend (bert score); embed (reuse)",
)
USER_EMBEDDINGS = Table(
    "user_embeddings", schema.USER_EMBEDDINGS, "recency-weighted mean item embedding per user",
    readers="consumers (vector search, serving); no stage",
    partition_by=("run_date",), slice_by=("run_date",),
)
FUSION_WEIGHTS = Table(
    "fusion_weights", schema.FUSION_WEIGHTS, "the fusion model's weights of each night",
    readers="consumers (monitoring, notebooks 03)", slice_by=("run_date",),
)
RECOMMENDATIONS = Table(
    "recommendations", schema.RECOMMENDATIONS, "top-K items per user with reasons",
    readers="consumers (the shop's front end): the product",
    partition_by=("run_date",), slice_by=("run_date",),
)
EVAL_METRICS = Table(
    "eval_metrics", schema.EVAL_METRICS, "offline evaluation metrics per model",
    readers="consumers (the evaluation report)", slice_by=("run_date", "source", "cutoff"),
)
EVAL_LISTS = Table(
    "eval_lists", schema.EVAL_LISTS, "the ranked lists each model was scored on (item level)",
    readers="consumers (recomputing the evaluation with any tool)", slice_by=("run_date", "source", "cutoff"),
)
EVAL_TRUTH = Table(
    "eval_truth", schema.EVAL_TRUTH,
    "each evaluated user's truth per variant (novel: without the user's history items)",
    readers="consumers (recomputing the evaluation with any tool)", slice_by=("run_date", "source", "cutoff"),
)
RUN_LOG = Table(
    "run_log", schema.RUN_LOG, "one row per stage run (appended)",
    readers="the orchestrator (skip-if-complete); operators",
)

ERASURES = Table(
    "erasures", schema.ERASURES, "one row per person erased by jobs.forget (pseudonym only; appended)",
    readers="ingest (keeps erased users out); auditors",
)
USER_ID_MAP = Table(
    "user_id_map", schema.USER_ID_MAP,
    "pseudonym -> raw user id, only with privacy.keep_id_map (for serving)",
    readers="consumers (the serving layer); no stage", slice_by=("source",),
)
INGEST_FILES = Table(
    "ingest_files", schema.INGEST_FILES,
    "the files of a folder source already ingested (path, size, modification time)",
    readers="ingest (reuse: a folder source reads only files not listed); consumers (operators)",
    slice_by=("source",),
)

ALL: tuple[Table, ...] = (
    ORDERS_CLEAN, ORDERS_QUARANTINE, ITEMS, REVIEWS, USER_TIME_FEATURES, ITEM_TIME_FEATURES,
    REGION_ITEM_FEATURES, USER_SPACE_FEATURES, SALES_SERIES, GRANGER_STATS, ITEM_EMBEDDINGS,
    USER_EMBEDDINGS, FUSION_WEIGHTS, RECOMMENDATIONS, EVAL_METRICS, EVAL_LISTS, EVAL_TRUTH,
    RUN_LOG, ERASURES, USER_ID_MAP,
    INGEST_FILES,
)
# The tables that hold a user_id column (what jobs.forget deletes from).
PERSONAL: tuple[Table, ...] = tuple(t for t in ALL if "user_id" in t.columns() and t is not ERASURES)
BY_NAME: dict[str, Table] = {t.name: t for t in ALL}


def table(name: str) -> Table:
    """The declared table called ``name`` (KeyError naming the known ones otherwise)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown table {name!r} (known: {', '.join(BY_NAME)})") from None
