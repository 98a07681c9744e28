"""What a source adapter hands to the cleaner, and the CSV reading every adapter shares."""

from __future__ import annotations

import csv
import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.errors import InputError
from stpipe.incremental import FileStamp
from stpipe.schema import RAW_META_COLUMNS, RAW_ORDER_COLUMNS

CORRUPT = "_corrupt_record"


@dataclass
class RawInput:
    """Raw rows of one source, before validation.

    ``orders`` has :data:`RAW_ORDER_COLUMNS` as strings plus :data:`RAW_META_COLUMNS`.
    ``items`` has item_id, title, category, description as strings.
    ``naive_timezone`` is the zone of timestamps written without an offset.
    ``reviews`` (optional) has the columns of :data:`stpipe.schema.REVIEWS` but ``source``.
    """

    source: str
    orders: DataFrame
    items: DataFrame
    naive_timezone: str = "UTC"
    reviews: DataFrame | None = None
    # raw_record fields kept in quarantine (the source's known columns) and, among them, the
    # ones that identify a person (pseudonymised); input columns outside known_fields are
    # dropped from the record and reported by name.
    known_fields: tuple[str, ...] = tuple(RAW_ORDER_COLUMNS)
    id_fields: tuple[str, ...] = ("user_id",)
    unknown_fields: tuple[str, ...] = ()
    # A folder source (new files are what is new): the files read, to record once ingested.
    # Otherwise (a file source, the generator) what is new is told by the order dates.
    tracks_files: bool = False
    files: tuple[FileStamp, ...] = ()


def empty_raw_orders(spark: SparkSession) -> DataFrame:
    """Raw order lines with no row (a folder source without new files)."""
    schema = T.StructType(
        [T.StructField(c, T.StringType()) for c in RAW_ORDER_COLUMNS]
        + [T.StructField(c, T.LongType() if c == "source_row" else T.StringType()) for c in RAW_META_COLUMNS]
    )
    return spark.createDataFrame([], schema)


def raw_record(columns: list[str]) -> Column:
    """The original values of a row as JSON (nulls kept), for quarantine."""
    return F.to_json(F.struct(*[F.col(c) for c in columns]), {"ignoreNullFields": "false"})


def finish_raw_orders(df: DataFrame) -> DataFrame:
    """Cast canonical columns to string and order columns as the cleaner expects."""
    return df.select(
        *[F.col(c).cast("string").alias(c) for c in RAW_ORDER_COLUMNS],
        F.col("source_file").cast("string"),
        F.col("source_row").cast("long"),
        F.col("raw_record").cast("string"),
        F.col("reject_reason").cast("string"),
        F.col("reject_detail").cast("string"),
    ).select(*RAW_ORDER_COLUMNS, *RAW_META_COLUMNS)


def existing_path(path: str | Path, what: str = "input") -> Path:
    """``path`` as a Path, or InputError naming it when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise InputError(f"{what} not found: {p}")
    return p


def data_files(path: Path) -> list[Path]:
    """The file itself, or a folder's data files (names starting with '.' or '_' left out), sorted."""
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith((".", "_")))


def clean_header(name: str) -> str:
    """A header cell without BOM, surrounding quotes or spaces."""
    return name.replace("\ufeff", "").strip().strip('"').strip()


def _first_line(path: Path) -> str:
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace", newline="") as fh:
            return fh.readline()
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None


def csv_header(path: Path, *, delimiter: str = ",") -> list[str]:
    """The column names of a CSV file or folder (its first line), cleaned.

    Raises InputError naming the file when it is empty or has duplicate column names.
    """
    files = [f for f in data_files(path) if f.stat().st_size > 0]
    if not files:
        raise InputError(f"{path}: empty file, no header line")
    line = _first_line(files[0]).rstrip("\r\n")
    if not line.strip():
        raise InputError(f"{files[0]}: empty first line, no header")
    names = [clean_header(c) for c in next(csv.reader([line], delimiter=delimiter))]
    seen: set[str] = set()
    for n in names:
        if not n:
            raise InputError(f"{files[0]}: a column of the header has no name")
        if n.lower() in seen:
            raise InputError(f"{files[0]}: column {n!r} appears twice in the header")
        seen.add(n.lower())
    return names


def read_csv_strings(
    spark: SparkSession,
    path: str | Path,
    required: list[str],
    *,
    delimiter: str = ",",
    multi_line: bool = True,
    what: str = "input",
    files: Sequence[Path] | None = None,
) -> tuple[DataFrame, list[str]]:
    """Read a CSV file or folder with every column as a string, nothing dropped.

    Returns the frame and its column names. Extra columns ``source_file``,
    ``source_row`` (position in file order; the row index for a file read in one
    split) and ``parse_error`` (``malformed_row`` when the parser could not split the
    line into the header's fields, ``header_row`` when the line repeats the header,
    else null) are added. Raises InputError naming the
    file and column when a required column is missing, and naming the file when it
    is empty (a header without rows is found by the job's first count). ``files``: read only
    these files of the folder ``path`` (the header is the first one's).
    """
    p = existing_path(path, what)
    names = csv_header(Path(files[0]) if files else p, delimiter=delimiter)
    lowered = {n.lower(): n for n in names}
    missing = [c for c in required if c.lower() not in lowered]
    if missing:
        hint = ""
        if len(names) == 1 and any(sep in names[0] for sep in ";\t|,"):
            hint = f"; is the delimiter {delimiter!r} right?"
        raise InputError(
            f"{p}: missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found: {', '.join(names)[:200]}){hint}"
        )
    schema = T.StructType(
        [T.StructField(n, T.StringType()) for n in names] + [T.StructField(CORRUPT, T.StringType())]
    )
    df = (
        spark.read.schema(schema)
        .option("header", "true")
        .option("sep", delimiter)
        .option("multiLine", str(multi_line).lower())
        .option("escape", '"')
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", CORRUPT)
        .option("enforceSchema", "true")
        .option("maxCharsPerColumn", "-1")
        .csv([str(f) for f in files] if files else str(p))
    )
    # Rename to the canonical spelling of required columns (header matched case-insensitively).
    rename = {lowered[c.lower()]: c for c in required}
    df = df.select(*[F.col(f"`{n}`").alias(rename.get(n, n)) for n in names], CORRUPT)
    names = [rename.get(n, n) for n in names]
    is_header = F.lit(True)
    for n in names:
        is_header = is_header & (F.lower(F.trim(F.col(f"`{n}`"))) == n.lower())
    df = (
        df.withColumn("source_file", F.input_file_name())
        .withColumn("source_row", F.monotonically_increasing_id())
        .withColumn(
            "parse_error",
            F.when(F.coalesce(is_header, F.lit(False)), F.lit("header_row"))
            .when(F.col(CORRUPT).isNotNull(), F.lit("malformed_row")),
        )
        .drop(CORRUPT)
    )
    return df, names


def reject_first(rules: list[tuple[str, Column]]) -> Column:
    """The code of the first rule whose condition holds (null when none does)."""
    expr = F.lit(None).cast("string")
    for code, cond in reversed(rules):
        expr = F.when(F.coalesce(cond, F.lit(False)), F.lit(code)).otherwise(expr)
    return expr
