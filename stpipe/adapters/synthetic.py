"""Deterministic synthetic order logs with known structure, for the embedded default,
tests and benchmarks.

What is planted (later stages are tested on recovering it):

* **Lead-lag between categories** (:data:`PLANTED_LEAD_LAGS`): the daily log-intensity
  of the effect category is ``0.9 x`` the cause's log-intensity ``lag`` days earlier plus
  noise, so the cause Granger-causes the effect at that lag, in every region and overall.
  All other category pairs are independent AR(1) processes.
* **Regional tastes** (:data:`REGION_TASTES`): each region buys its favourite category
  :data:`TASTE_BOOST` times as often as the market does.
* **Weekly rhythm** (:data:`WEEKDAY_FACTOR`, Monday first) and **daily rhythm**
  (:data:`HOUR_WEIGHTS`, evening peak at 20:00 UTC with a lunch bump at 12:00).
* **Personal tastes**: each user has Dirichlet-distributed category affinities, so a
  user's history predicts their next category.

Everything follows from ``seed`` and ``rows`` (the target number of order lines).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd

CATEGORIES: dict[str, tuple[list[str], list[str]]] = {
    "electronics": (
        ["wireless", "smart", "portable", "digital", "bluetooth"],
        ["headphones", "speaker", "tablet", "camera", "smartwatch"],
    ),
    "accessories": (
        ["slim", "braided", "magnetic", "rugged", "fast"],
        ["phone case", "charging cable", "screen protector", "laptop sleeve", "power bank"],
    ),
    "garden": (
        ["expandable", "terracotta", "steel", "organic", "ergonomic"],
        ["garden hose", "flower planter", "spade", "seed kit", "pruning shears"],
    ),
    "outdoor": (
        ["camping", "hiking", "waterproof", "lightweight", "insulated"],
        ["tent", "backpack", "sleeping bag", "lantern", "rain jacket"],
    ),
    "kitchen": (
        ["nonstick", "stainless", "ceramic", "cast iron", "electric"],
        ["frying pan", "knife set", "mixing bowl", "kettle", "blender"],
    ),
    "books": (
        ["illustrated", "classic", "bestselling", "paperback", "collected"],
        ["novel", "cookbook", "travel guide", "biography", "poetry book"],
    ),
    "toys": (
        ["wooden", "plush", "educational", "remote control", "building"],
        ["puzzle", "teddy bear", "train set", "race car", "block set"],
    ),
    "beauty": (
        ["hydrating", "organic", "vegan", "fragrance free", "mineral"],
        ["face cream", "shampoo", "lip balm", "body lotion", "sunscreen"],
    ),
}

# (cause category, effect category, lag in days)
PLANTED_LEAD_LAGS: tuple[tuple[str, str, int], ...] = (
    ("electronics", "accessories", 2),
    ("garden", "outdoor", 3),
)

# region -> (latitude, longitude, relative size)
REGIONS: dict[str, tuple[float, float, float]] = {
    "north": (53.5, 10.0, 1.0),
    "south": (48.1, 11.6, 1.2),
    "east": (52.5, 13.4, 0.9),
    "west": (51.2, 6.8, 1.1),
    "central": (50.1, 8.7, 0.8),
    "coast": (54.3, 10.1, 0.5),
}
REGION_TASTES: dict[str, str] = {
    "north": "outdoor",
    "south": "garden",
    "east": "electronics",
    "west": "books",
    "central": "kitchen",
    "coast": "beauty",
}
TASTE_BOOST = 3.0
WEEKDAY_FACTOR = np.array([0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.2])  # Monday .. Sunday
HOUR_WEIGHTS = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.4, 0.7, 1.0, 1.1, 1.2, 1.4, 1.8, 1.5, 1.2, 1.1, 1.2, 1.4, 1.8,
     2.3, 2.6, 2.2, 1.4, 0.6]
)
LINES_PER_ORDER_EXTRA_P = 0.15  # each order has 1 + Binomial(2, p) lines
ITEMS_PER_CATEGORY = 25
LINES_PER_USER = 12


def _category_log_intensity(rng: np.random.Generator, days: int) -> dict[str, np.ndarray]:
    """AR(1) log-intensities per category, with the planted lead-lag couplings."""
    burn = 30
    n = days + burn
    z = {}
    for cat in CATEGORIES:
        eps = rng.normal(0.0, 0.35, n)
        series = np.zeros(n)
        for t in range(1, n):
            series[t] = 0.5 * series[t - 1] + eps[t]
        z[cat] = series
    for cause, effect, lag in PLANTED_LEAD_LAGS:
        noise = rng.normal(0.0, 0.2, n)
        coupled = np.zeros(n)
        coupled[lag:] = 0.9 * z[cause][:-lag]
        z[effect] = coupled + noise
    return {cat: series[burn:] for cat, series in z.items()}


def generate(
    rows: int = 20_000,
    seed: int = 42,
    start: str | dt.date = "2024-01-01",
    days: int = 180,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return (order lines, items) as pandas frames in canonical columns, typed."""
    if rows <= 0 or days <= 0:
        raise ValueError("rows and days must be positive")
    rng = np.random.default_rng(seed)
    start_date = dt.date.fromisoformat(str(start))
    cats = list(CATEGORIES)
    regions = list(REGIONS)

    items = _items(rng, cats)
    n_users = max(len(regions), rows // LINES_PER_USER)
    users = _users(rng, n_users, regions, cats)

    z = _category_log_intensity(rng, days)
    dates = [start_date + dt.timedelta(days=d) for d in range(days)]
    weekday = np.array([d.weekday() for d in dates])
    mean_lines = 1 + 2 * LINES_PER_ORDER_EXTRA_P
    raw = np.stack([np.exp(z[c]) * WEEKDAY_FACTOR[weekday] for c in cats])  # (cat, day)
    lam = raw / raw.sum() * rows / mean_lines
    n_orders = rng.poisson(lam)  # orders per (category, day)

    cat_idx = np.repeat(np.repeat(np.arange(len(cats)), days), n_orders.ravel())
    day_idx = np.repeat(np.tile(np.arange(days), len(cats)), n_orders.ravel())
    n = len(cat_idx)

    # region by market share x taste, then user by activity x affinity within the region
    share = np.array([REGIONS[r][2] for r in regions])
    taste = np.ones((len(regions), len(cats)))
    for r, fav in REGION_TASTES.items():
        taste[regions.index(r), cats.index(fav)] = TASTE_BOOST
    p_region_given_cat = (share[:, None] * taste) / (share[:, None] * taste).sum(axis=0)
    region_idx = np.empty(n, dtype=np.int64)
    user_idx = np.empty(n, dtype=np.int64)
    for c in range(len(cats)):
        mask = cat_idx == c
        region_idx[mask] = rng.choice(len(regions), size=mask.sum(), p=p_region_given_cat[:, c])
    for r in range(len(regions)):
        members = np.flatnonzero(users["region_idx"] == r)
        for c in range(len(cats)):
            mask = (region_idx == r) & (cat_idx == c)
            if not mask.any():
                continue
            w = users["activity"][members] * users["affinity"][members, c]
            user_idx[mask] = rng.choice(members, size=mask.sum(), p=w / w.sum())

    hours = rng.choice(24, size=n, p=HOUR_WEIGHTS / HOUR_WEIGHTS.sum())
    seconds = rng.integers(0, 3600, size=n)
    n_lines = 1 + rng.binomial(2, LINES_PER_ORDER_EXTRA_P, size=n)

    order_rows = np.repeat(np.arange(n), n_lines)
    line_no = np.concatenate([np.arange(1, k + 1) for k in n_lines]) if n else np.array([], int)
    line_cat = cat_idx[order_rows]
    # item within category: Zipf-like popularity
    pop = 1.0 / np.arange(1, ITEMS_PER_CATEGORY + 1) ** 0.8
    pop /= pop.sum()
    item_in_cat = rng.choice(ITEMS_PER_CATEGORY, size=len(order_rows), p=pop)
    item_row = line_cat * ITEMS_PER_CATEGORY + item_in_cat
    quantity = 1 + rng.poisson(0.4, size=len(order_rows))
    price = np.round(items["base_price"].to_numpy()[item_row] * rng.uniform(0.95, 1.05, len(order_rows)), 2)

    base = np.datetime64(start_date.isoformat(), "s")
    ts = base + (day_idx * 86400 + hours * 3600 + seconds).astype("timedelta64[s]")
    u = user_idx[order_rows]
    lines = pd.DataFrame(
        {
            "order_id": np.char.add("S", np.char.zfill(order_rows.astype(str), 9)),
            "line_no": line_no.astype("int32"),
            "user_id": users["user_id"][u],
            "item_id": items["item_id"].to_numpy()[item_row],
            "quantity": quantity.astype("int32"),
            "unit_price": price,
            "ts": pd.to_datetime(ts[order_rows]),
            "region": np.array(regions)[region_idx[order_rows]],
            "city": users["city"][u],
            "lat": users["lat"][u],
            "lon": users["lon"][u],
        }
    )
    lines = lines.sort_values(["ts", "order_id", "line_no"], kind="stable").reset_index(drop=True)
    return lines, items.drop(columns=["base_price"])


def _items(rng: np.random.Generator, cats: list[str]) -> pd.DataFrame:
    records = []
    for c, cat in enumerate(cats):
        adjectives, nouns = CATEGORIES[cat]
        combos = [(a, n_) for n_ in nouns for a in adjectives]
        for k in range(ITEMS_PER_CATEGORY):
            adj, noun = combos[k % len(combos)]
            records.append(
                {
                    "item_id": f"I{c:02d}{k:03d}",
                    "title": f"{adj} {noun}".capitalize(),
                    "category": cat,
                    "description": f"A {adj} {noun} from our {cat} range.",
                    "base_price": float(np.round(rng.lognormal(3.0, 0.6), 2)),
                }
            )
    return pd.DataFrame.from_records(records)


def _users(rng: np.random.Generator, n_users: int, regions: list[str], cats: list[str]) -> dict:
    share = np.array([REGIONS[r][2] for r in regions])
    region_idx = rng.choice(len(regions), size=n_users, p=share / share.sum())
    region_idx[: len(regions)] = np.arange(len(regions))  # every region has a user
    lat0 = np.array([REGIONS[r][0] for r in regions])[region_idx]
    lon0 = np.array([REGIONS[r][1] for r in regions])[region_idx]
    lat = lat0 + rng.normal(0, 0.25, n_users)
    lon = lon0 + rng.normal(0, 0.35, n_users)
    no_coords = rng.random(n_users) < 0.1
    lat[no_coords] = np.nan
    lon[no_coords] = np.nan
    city_no = rng.integers(1, 6, size=n_users)
    return {
        "user_id": np.char.add("U", np.char.zfill(np.arange(n_users).astype(str), 7)),
        "region_idx": region_idx,
        "activity": rng.pareto(2.0, n_users) + 0.2,
        "affinity": rng.dirichlet(np.full(len(cats), 0.6), size=n_users) + 0.02,
        "city": np.char.add(np.char.add(np.array(regions)[region_idx], "-city-"), city_no.astype(str)),
        "lat": np.round(lat, 5),
        "lon": np.round(lon, 5),
    }


def read_source(spark, ingest):
    """The generated data as a :class:`~stpipe.adapters.base.RawInput` for the cleaner.

    The lines are written as Parquet to a staging folder first and read back by Spark, like
    any file source: a pandas frame handed to ``createDataFrame`` becomes one in-memory
    relation in the driver's plan, which runs out of driver memory at a few hundred thousand
    lines. Generation is deterministic, so a complete staged copy is reused.
    """
    rows, seed = ingest.rows, ingest.seed
    start, days = ingest.synthetic_start, ingest.synthetic_days
    from pyspark.sql import functions as F

    from stpipe.adapters.base import RawInput, finish_raw_orders, raw_record
    from stpipe.schema import RAW_ORDER_COLUMNS

    name = f"synthetic(rows={rows},seed={seed},start={start},days={days})"
    lines_path, items = stage(ingest, name)
    orders = (
        spark.read.parquet(str(lines_path))
        .withColumn("source_file", F.lit(name))
        .withColumn("raw_record", raw_record(RAW_ORDER_COLUMNS))
        .withColumn("reject_reason", F.lit(None).cast("string"))
        .withColumn("reject_detail", F.lit(None).cast("string"))
    )
    return RawInput(
        source="synthetic",
        orders=finish_raw_orders(orders),
        items=spark.createDataFrame(items.astype(object).where(items.notna(), None)),
        naive_timezone="UTC",
    )


STAGING_VERSION = 2  # bump when the generator's output or the staged layout changes
STAGING_FILE_ROWS = 250_000
# next to the lines; Spark and pyarrow skip files whose names start with '_'
ITEMS_FILE = "_items.parquet"


def staging_folder(ingest, name: str) -> Path:
    """Where the lines of ``name`` are staged: ``ingest.synthetic_staging`` or the temp dir."""
    import hashlib
    import tempfile

    base = Path(ingest.synthetic_staging or Path(tempfile.gettempdir()) / "stpipe-synthetic")
    key = hashlib.sha1(f"v{STAGING_VERSION}:{name}".encode()).hexdigest()[:16]
    return base.expanduser().resolve() / key


def stage(ingest, name: str) -> tuple[Path, pd.DataFrame]:
    """Generate the lines (raw string columns plus ``source_row``) into Parquet files, once;
    return their folder and the items frame."""
    import os
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from stpipe.schema import RAW_ORDER_COLUMNS

    folder = staging_folder(ingest, name)
    if (folder / "_COMPLETE").exists():
        return folder, pd.read_parquet(folder / ITEMS_FILE)
    lines, items = generate(
        rows=ingest.rows, seed=ingest.seed, start=ingest.synthetic_start, days=ingest.synthetic_days
    )
    lines = lines.assign(ts=lines["ts"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    lines = lines.astype({c: "string" for c in RAW_ORDER_COLUMNS}).reset_index(names="source_row")
    for c in ("lat", "lon"):
        lines[c] = lines[c].mask(lines[c].isin(["nan", "<NA>"]))
    schema = pa.schema(
        [pa.field("source_row", pa.int64(), False)]
        + [pa.field(c, pa.string()) for c in RAW_ORDER_COLUMNS]
    )
    partial = folder.with_name(f"{folder.name}.part-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    for i, first in enumerate(range(0, len(lines), STAGING_FILE_ROWS)):
        chunk = lines.iloc[first : first + STAGING_FILE_ROWS]
        table = pa.Table.from_pandas(chunk, schema=schema, preserve_index=False)
        pq.write_table(table, partial / f"part-{i:05d}.parquet")
    items.to_parquet(partial / ITEMS_FILE, index=False)
    (partial / "_COMPLETE").write_text(name + "\n")
    if (folder / "_COMPLETE").exists():  # another run staged the same lines meanwhile
        shutil.rmtree(partial, ignore_errors=True)
    else:
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete copy, if any
        partial.rename(folder)
    return folder, items
