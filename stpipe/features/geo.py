"""Geo cells and projected positions as Spark column expressions (no Python UDF).

* :func:`geohash` encodes lat/lon as a standard geohash (base-32, longitude bit
  first). Each coordinate is quantised once, ``floor((lon + 180) / 360 * 2**n)``,
  which is what the classic bisection computes bit by bit; the bits are then
  interleaved with shifts, so the whole encoding is a handful of integer
  expressions evaluated inside the JVM.
* :func:`equirectangular_km` projects to kilometres east/north of (0, 0) on a sphere
  of the mean Earth radius: ``x = R * radians(lon)``, ``y = R * radians(lat)``.
* :func:`frac` is the founding design's ``v / L mod 1`` (in [0, 1), also for negative v).
"""

from __future__ import annotations

import math

from pyspark.sql import Column
from pyspark.sql import functions as F

from stpipe.errors import ConfigError

BASE32 = "0123456789bcdefghjkmnpqrstuvwxyz"
EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius
MAX_PRECISION = 12  # 60 bits: each coordinate's index still fits in a long


def _as_col(c: str | Column) -> Column:
    return F.col(c) if isinstance(c, str) else c


def _quantise(value: Column, low: float, high: float, bits: int) -> Column:
    """Cell index of ``value`` among ``2**bits`` equal cells of [low, high] (clamped)."""
    cells = 1 << bits
    index = F.floor((value - F.lit(low)) / F.lit(high - low) * F.lit(float(cells)))
    return F.least(F.greatest(index, F.lit(0)), F.lit(cells - 1)).cast("long")


def geohash(lat: str | Column, lon: str | Column, precision: int) -> Column:
    """Geohash of ``precision`` characters; null where lat or lon is null or not finite."""
    if not 1 <= precision <= MAX_PRECISION:
        raise ConfigError(
            f"features.geohash_precision: expected 1..{MAX_PRECISION}, got {precision}"
        )
    lat_c, lon_c = _as_col(lat), _as_col(lon)
    n_bits = 5 * precision
    lon_bits = (n_bits + 1) // 2
    lat_bits = n_bits // 2
    lon_idx = _quantise(lon_c, -180.0, 180.0, lon_bits)
    lat_idx = _quantise(lat_c, -90.0, 90.0, lat_bits)

    def bit(k: int) -> Column:
        # bit k (0 = first) of the interleaved stream: even k from lon, odd k from lat
        if k % 2 == 0:
            return F.shiftright(lon_idx, lon_bits - 1 - k // 2).bitwiseAND(F.lit(1))
        return F.shiftright(lat_idx, lat_bits - 1 - k // 2).bitwiseAND(F.lit(1))

    chars = []
    for c in range(precision):
        value = F.lit(0).cast("long")
        for i in range(5):
            value = value + F.shiftleft(bit(5 * c + i), 4 - i)
        chars.append(F.substring(F.lit(BASE32), (value + 1).cast("int"), 1))
    valid = (
        lat_c.isNotNull() & lon_c.isNotNull() & ~F.isnan(lat_c) & ~F.isnan(lon_c)
        & (F.abs(lat_c) <= 90) & (F.abs(lon_c) <= 180)
    )
    return F.when(valid, F.concat(*chars))


def equirectangular_km(lat: str | Column, lon: str | Column) -> tuple[Column, Column]:
    """(x_km, y_km): east and north of (0, 0), ``R * radians(lon)``, ``R * radians(lat)``."""
    return (
        F.radians(_as_col(lon)) * F.lit(EARTH_RADIUS_KM),
        F.radians(_as_col(lat)) * F.lit(EARTH_RADIUS_KM),
    )


def frac(value: str | Column, period: float) -> Column:
    """``value / period mod 1`` in [0, 1) (floored modulo, so negative values wrap too)."""
    if not period > 0 or math.isinf(period):
        raise ConfigError(f"period must be a positive number, got {period}")
    return F.pmod(_as_col(value) / F.lit(float(period)), F.lit(1.0))


def cell_centre(
    lat: str | Column, lon: str | Column, precision: int, *, key: str = "privacy.location_precision"
) -> tuple[Column, Column]:
    """(lat, lon) of the centre of the geohash cell of ``precision`` characters holding the point.

    The cell is the one :func:`geohash` names (the same quantisation), so a point and its
    centre share their geohash; null where lat or lon is null or out of range.
    """
    if not 1 <= precision <= MAX_PRECISION:
        raise ConfigError(f"{key}: expected 1..{MAX_PRECISION}, got {precision}")
    lat_c, lon_c = _as_col(lat), _as_col(lon)
    lon_bits, lat_bits = (5 * precision + 1) // 2, (5 * precision) // 2
    valid = (
        lat_c.isNotNull() & lon_c.isNotNull() & ~F.isnan(lat_c) & ~F.isnan(lon_c)
        & (F.abs(lat_c) <= 90) & (F.abs(lon_c) <= 180)
    )

    def centre(value: Column, low: float, high: float, bits: int) -> Column:
        width = (high - low) / (1 << bits)
        return F.lit(low) + (_quantise(value, low, high, bits) + F.lit(0.5)) * F.lit(width)

    return (
        F.when(valid, centre(lat_c, -90.0, 90.0, lat_bits)),
        F.when(valid, centre(lon_c, -180.0, 180.0, lon_bits)),
    )
