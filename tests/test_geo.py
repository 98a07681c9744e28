"""Geohash, projection and the founding design's space encoding, against known values."""

from __future__ import annotations

import math

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from stpipe.errors import ConfigError
from stpipe.features import geo

# Published geohashes (geohash.org / Wikipedia / the reference implementation's tests).
KNOWN = [
    (57.64911, 10.40744, "u4pruydqqvj"),
    (42.6, -5.6, "ezs42"),
    (-25.382708, -49.265506, "6gkzwgjzn820"),
    (-23.5505, -46.6333, "6gyf4bf"),  # Sao Paulo
    (37.8324, 112.5584, "ww8p1r4t8"),
    (0.0, 0.0, "s0000"),
]


def _hashes(spark, rows, precision):
    schema = T.StructType(
        [T.StructField("lat", T.DoubleType()), T.StructField("lon", T.DoubleType())]
    )
    df = spark.createDataFrame(rows, schema)
    return [r["g"] for r in df.select(geo.geohash("lat", "lon", precision).alias("g")).collect()]


def _reference_geohash(lat: float, lon: float, precision: int) -> str:
    """The classic bisection algorithm, written independently of the code under test."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    bits, out, even = [], [], True
    while len(out) < precision:
        if even:
            mid = (lon_lo + lon_hi) / 2
            if lon >= mid:
                bits.append(1)
                lon_lo = mid
            else:
                bits.append(0)
                lon_hi = mid
        else:
            mid = (lat_lo + lat_hi) / 2
            if lat >= mid:
                bits.append(1)
                lat_lo = mid
            else:
                bits.append(0)
                lat_hi = mid
        even = not even
        if len(bits) == 5:
            out.append("0123456789bcdefghjkmnpqrstuvwxyz"[int("".join(map(str, bits)), 2)])
            bits = []
    return "".join(out)


def reference_cell_centre(lat: float, lon: float, precision: int) -> tuple[float, float]:
    """The centre of the geohash cell of ``precision`` characters, by the same bisection."""
    lat_lo, lat_hi, lon_lo, lon_hi = -90.0, 90.0, -180.0, 180.0
    for k in range(5 * precision):
        if k % 2 == 0:
            mid = (lon_lo + lon_hi) / 2
            lon_lo, lon_hi = (mid, lon_hi) if lon >= mid else (lon_lo, mid)
        else:
            mid = (lat_lo + lat_hi) / 2
            lat_lo, lat_hi = (mid, lat_hi) if lat >= mid else (lat_lo, mid)
    return (lat_lo + lat_hi) / 2, (lon_lo + lon_hi) / 2


def test_cell_centre_is_the_centre_of_the_points_geohash_cell(spark):
    points = [(48.8566, 2.3522), (-23.5505, -46.6333), (0.0, 0.0), (-89.9, 179.9), (51.5, -0.12)]
    df = spark.createDataFrame(points, "lat double, lon double")
    for precision in (3, 5, 7):
        lat, lon = geo.cell_centre("lat", "lon", precision)
        got = [(r["a"], r["b"]) for r in df.select(lat.alias("a"), lon.alias("b")).collect()]
        want = [reference_cell_centre(a, b, precision) for a, b in points]
        assert [x for pair in got for x in pair] == pytest.approx(
            [x for pair in want for x in pair], abs=1e-9
        ), precision
        # the centre lies in the same cell as the point
        assert [_reference_geohash(a, b, precision) for a, b in got] == [
            _reference_geohash(a, b, precision) for a, b in points
        ]
    nulls = spark.createDataFrame([(None, 1.0), (95.0, 1.0)], "lat double, lon double")
    lat, _ = geo.cell_centre("lat", "lon", 5)
    assert [r[0] for r in nulls.select(lat).collect()] == [None, None]


def test_geohash_matches_published_values(spark):
    for lat, lon, expected in KNOWN:
        got = _hashes(spark, [(lat, lon)], len(expected))[0]
        assert got == expected, (lat, lon)


def test_geohash_matches_bisection_on_a_grid_and_prefixes_agree(spark):
    import numpy as np

    rng = np.random.default_rng(0)
    lats, lons = rng.uniform(-90, 90, 300), rng.uniform(-180, 180, 300)
    points = [(float(a), float(b)) for a, b in zip(lats, lons, strict=True)]
    points += [(-90.0, -180.0), (90.0, 180.0), (-33.8688, 151.2093), (51.5074, -0.1278)]
    for precision in (1, 5, 9, 12):
        got = _hashes(spark, points, precision)
        assert got == [_reference_geohash(a, b, precision) for a, b in points], precision
    long_, short = _hashes(spark, points, 12), _hashes(spark, points, 5)
    assert all(a.startswith(b) for a, b in zip(long_, short, strict=True))


def test_geohash_is_null_without_valid_coordinates(spark):
    got = _hashes(spark, [(None, 10.0), (10.0, None), (float("nan"), 1.0), (91.0, 0.0)], 5)
    assert got == [None, None, None, None]


def test_geohash_rejects_bad_precision():
    with pytest.raises(ConfigError, match="geohash_precision"):
        geo.geohash("lat", "lon", 13)
    with pytest.raises(ConfigError, match="geohash_precision"):
        geo.geohash("lat", "lon", 0)


def test_projection_and_space_encoding(spark):
    points = [(-23.5505, -46.6333), (0.0, 0.0), (1.0, 2.0)]
    df = spark.createDataFrame(points, "lat double, lon double")
    x, y = geo.equirectangular_km("lat", "lon")
    rows = df.select(
        x.alias("x"), y.alias("y"), geo.frac(x, 100.0).alias("xm"), geo.frac(y, 100.0).alias("ym")
    ).collect()
    r = 6371.0088
    for row, (lat, lon) in zip(rows, points, strict=True):
        ex, ey = r * lon * math.pi / 180, r * lat * math.pi / 180
        assert row["x"] == pytest.approx(ex) and row["y"] == pytest.approx(ey)
        # floored modulo: -5185.6 km / 100 km -> 0.144..., in [0, 1)
        assert row["xm"] == pytest.approx(ex / 100 - math.floor(ex / 100))
        assert row["ym"] == pytest.approx(ey / 100 - math.floor(ey / 100))
        assert 0 <= row["xm"] < 1 and 0 <= row["ym"] < 1


def test_frac_rejects_non_positive_period():
    with pytest.raises(ConfigError):
        geo.frac(F.col("x"), 0.0)
