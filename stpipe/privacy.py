"""Pseudonyms and coarse positions: what ingest writes instead of who and where.

A user id becomes ``HMAC-SHA256(key, source + US + trim(id))``, the first 32 hex digits
(128 bits), computed inside Spark from ``sha2`` (RFC 2104: ``H(K^opad || H(K^ipad || m))``),
so no Python UDF sees an id. The same id in two sources gets two pseudonyms, as users are
keyed by (source, user_id) everywhere. Without the key a pseudonym cannot be computed from
an id or turned back into one; with it, :func:`pseudonym` finds a person to erase.

Quarantined rows keep their original record (``raw_record``, JSON) for debugging, but only
the columns the source adapter knows, with its identifier columns pseudonymised the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe import tables
from stpipe.adapters.base import RawInput
from stpipe.clean import normalise_id
from stpipe.config import PrivacySettings
from stpipe.errors import ConfigError
from stpipe.features import geo

log = logging.getLogger("stpipe.privacy")

DIGITS = 32  # hex digits kept: 128 bits
SEPARATOR = "\x1f"  # between source and id (a unit separator never occurs in ids)
BLOCK = 64  # SHA-256's block size in bytes
LOCAL_KEY = "_stpipe_pseudonym.key"


def load_key(privacy: PrivacySettings, warehouse: str) -> bytes:
    """The secret: $key_env, else key_file, else the warehouse's local key (created once)."""
    if privacy.key_env and os.environ.get(privacy.key_env):
        return os.environ[privacy.key_env].encode("utf-8")
    if privacy.key_file:
        path = Path(privacy.key_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"privacy.key_file: {path} not found (the pseudonym key)")
        key = path.read_bytes().strip()
        if len(key) < 16:
            raise ConfigError(f"privacy.key_file: {path} holds fewer than 16 bytes")
        return key
    folder = tables.local_folder(warehouse)
    if folder is None:
        raise ConfigError(
            f"privacy: warehouse {warehouse} is not a local folder; set privacy.key_env or "
            "privacy.key_file (the pseudonym key is never created in an object store)"
        )
    path = folder.expanduser() / LOCAL_KEY
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_hex(32))
        log.warning(
            "privacy: no pseudonym key configured (%s or privacy.key_file); created %s. "
            "Keep it (a new key makes every user new) and set your own in production",
            privacy.key_env, path,
        )
    return path.read_bytes().strip()


def pseudonym(key: bytes, source: str, user_id: str) -> str:
    """The pseudonym of one id, in Python (the erasure job's lookup; tests' reference)."""
    message = f"{source}{SEPARATOR}{user_id.strip()}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()[:DIGITS]


def pseudonym_col(key: bytes, source: str | Column, user_id: Column) -> Column:
    """:func:`pseudonym` as a Spark expression; null or blank ids stay as they are."""
    if len(key) > BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(BLOCK, b"\0")
    ipad = bytes(b ^ 0x36 for b in key)
    opad = bytes(b ^ 0x5C for b in key)
    source_c = F.lit(source) if isinstance(source, str) else source
    message = F.encode(F.concat(source_c, F.lit(SEPARATOR), F.trim(user_id)), "UTF-8")
    inner = F.unhex(F.sha2(F.concat(F.lit(bytearray(ipad)), message), 256))
    outer = F.sha2(F.concat(F.lit(bytearray(opad)), inner), 256)
    blank = user_id.isNull() | (F.trim(user_id) == "")
    return F.when(blank, user_id).otherwise(F.substring(outer, 1, DIGITS))


def pseudonymise(df: DataFrame, key: bytes, column: str = "user_id") -> DataFrame:
    """``df`` with ``column`` replaced by its pseudonym (per row's ``source``)."""
    return df.withColumn(column, pseudonym_col(key, F.col("source"), F.col(column)))


RECORD = T.MapType(T.StringType(), T.StringType())


def redact_record(
    record: Column, key: bytes, source: str, *, keep: list[str], ids: list[str]
) -> Column:
    """A JSON record with only the ``keep`` fields, the ``ids`` fields pseudonymised.

    Values stay strings (as the adapters read them); a record that is not a JSON object
    (a line the CSV reader could not split) is kept only as its length.
    """
    fields = F.from_json(record, RECORD)
    kept = F.map_filter(fields, lambda k, _: k.isin(keep))
    redacted = F.transform_values(
        kept,
        lambda k, v: F.when(k.isin(ids), pseudonym_col(key, source, normalise_id(v))).otherwise(v),
    )
    unparsed = F.concat(F.lit('{"unparsed_chars": '), F.length(record).cast("string"), F.lit("}"))
    return F.when(record.isNull(), record).when(fields.isNull(), unparsed).otherwise(F.to_json(redacted))


def coarse_positions(df: DataFrame, precision: int) -> DataFrame:
    """``lat``/``lon`` replaced by the centre of their geohash cell of ``precision`` characters."""
    lat, lon = geo.cell_centre("lat", "lon", precision)
    return df.withColumn("lat", lat).withColumn("lon", lon)


ERASED = "_erased"  # the ingest's flag for the lines of an erased user
RAW_USER_ID = "_raw_user_id"
PSEUDONYM = "_pseudonym"  # kept beside the pseudonym only for user_id_map
LOCATION_FIELDS = ("lat", "lon")  # never kept in a raw_record: positions are coarse everywhere


@dataclass(frozen=True)
class Protection:
    """What ingest does to protect people, in plain values (see the module doc)."""

    key: bytes
    pseudonymize: bool
    location_precision: int
    erased: tuple[str, ...] = ()  # pseudonyms whose lines are dropped (jobs.forget)


def protection(privacy: PrivacySettings, warehouse: str, erased: tuple[str, ...] = ()) -> Protection:
    return Protection(
        key=load_key(privacy, warehouse), pseudonymize=privacy.pseudonymize,
        location_precision=privacy.location_precision, erased=tuple(erased),
    )


def protect_lines(checked: DataFrame, raw: RawInput, protect: Protection) -> DataFrame:
    """Checked order lines (normalised ``user_id``, ``raw_record``, ``_lat``/``_lon``) with the
    erased users flagged (:data:`ERASED`), ids pseudonymised, records redacted, positions coarse."""
    # the HMAC once per line, used for the erasure list and as the new id
    out = checked.withColumn(PSEUDONYM, pseudonym_col(protect.key, raw.source, F.col("user_id")))
    code = F.col(PSEUDONYM)
    erased = code.isin(list(protect.erased)) if protect.erased else F.lit(False)
    keep = [f for f in raw.known_fields if f not in LOCATION_FIELDS]
    ids = list(raw.id_fields) if protect.pseudonymize else []
    out = out.withColumn(ERASED, F.coalesce(erased, F.lit(False))).withColumn(
        "raw_record", redact_record(F.col("raw_record"), protect.key, raw.source, keep=keep, ids=ids)
    )
    if protect.pseudonymize:
        out = out.withColumn(RAW_USER_ID, F.col("user_id")).withColumn("user_id", code)
    out = out.drop(PSEUDONYM)
    lat, lon = geo.cell_centre("_lat", "_lon", protect.location_precision)
    return out.withColumn("_lat", lat).withColumn("_lon", lon)


def protect_reviews(reviews: DataFrame, protect: Protection) -> DataFrame:
    """Reviews with pseudonymous ``user_id`` and without the erased users' rows."""
    code = pseudonym_col(protect.key, F.col("source"), normalise_id(F.col("user_id")))
    if protect.erased:
        reviews = reviews.where(~F.coalesce(code.isin(list(protect.erased)), F.lit(False)))
    return reviews.withColumn("user_id", code) if protect.pseudonymize else reviews
