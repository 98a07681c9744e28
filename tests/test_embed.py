"""Embedding core and UDF: agreement with sentence-transformers, batching, edge cases."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import OLIST_DIR, RETAIL_FILE, needs_shared

from udfs.embed import Embedder, default_model_dir, embed_batches, length_batches, make_embed_udf

LONG_TEXT = "hand painted ceramic tea cup with saucer " * 120  # ~1,000 tokens, > 256


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder(device="cpu")


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(default_model_dir()), device="cpu")
    return lambda texts: model.encode(list(texts), batch_size=16, normalize_embeddings=True)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_length_batches_sorted_and_within_budget():
    batches = length_batches([3, 10, 5, 10], batch_size=2, token_budget=20)
    assert [b.tolist() for b in batches] == [[1, 3], [2, 0]]
    # width 10 > budget 9: one row per batch, never an empty batch
    batches = length_batches([10, 10, 2], batch_size=64, token_budget=9)
    assert [b.tolist() for b in batches] == [[0], [1], [2]]
    # budget 12, widths 4: 3 rows per batch
    assert [len(b) for b in length_batches([4] * 7, batch_size=64, token_budget=12)] == [3, 3, 1]
    assert length_batches([], batch_size=4, token_budget=10) == []


def test_default_model_and_max_length(embedder):
    assert (default_model_dir() / "model.safetensors").is_file()
    assert embedder.max_length == 256  # sentence_bert_config.json of all-MiniLM-L6-v2
    assert embedder.dim == 384


def test_edge_cases_match_sentence_transformers(embedder, reference):
    texts = ["", "a", LONG_TEXT, "WHITE METAL LANTERN", "WHITE METAL LANTERN"]
    got = embedder.encode(texts)
    want = reference(texts)
    assert got.shape == (5, 384) and got.dtype == np.float32
    assert cosines(got, want).min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # None is embedded as the empty string
    none_and_empty = embedder.encode([None, ""])
    np.testing.assert_array_equal(none_and_empty[0], none_and_empty[1])
    np.testing.assert_allclose(none_and_empty[0], got[0], atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_batching_does_not_change_vectors(embedder):
    texts = [f"item number {i} " * (i % 7 + 1) for i in range(23)]
    wide = embedder.encode(texts)
    embedder.batch_size, embedder.token_budget = 3, 40
    try:
        narrow = embedder.encode(texts)
    finally:
        embedder.batch_size, embedder.token_budget = 64, 8192
    np.testing.assert_allclose(wide, narrow, atol=2e-5)


def real_texts() -> list[str]:
    retail = pd.read_csv(RETAIL_FILE, usecols=["Description"], nrows=4000)["Description"]
    retail = retail.dropna().drop_duplicates().head(60).tolist()
    with gzip.open(OLIST_DIR / "product_category_name_translation.csv.gz", "rt") as fh:
        olist = pd.read_csv(fh)["product_category_name_english"].dropna().tolist()
    return retail + olist


@needs_shared
def test_real_product_texts_match_sentence_transformers(embedder, reference):
    texts = real_texts()
    assert len(texts) > 100
    assert cosines(embedder.encode(texts), reference(texts)).min() >= 0.9999


def test_udf_body_streams_batch_by_batch():
    def batches():
        yield pd.Series(["red mug", None, ""])
        raise RuntimeError("the UDF read past the first batch before yielding")

    first = next(embed_batches(batches(), model_dir=None, batch_size=4))
    assert len(first) == 3 and all(len(v) == 384 for v in first)


@pytest.mark.parametrize("arrow_rows", [1, 7])
def test_udf_in_spark_matches_reference_and_loads_once_per_worker(
    spark, tmp_path, reference, arrow_rows
):
    texts = [f"vintage glass bottle no {i}" for i in range(17)] + ["", None, LONG_TEXT, "x"]
    df = spark.createDataFrame(pd.DataFrame({"id": range(len(texts)), "text": texts}))
    log = tmp_path / "loads.txt"
    embed = make_embed_udf(None, 4, token_budget=64, load_log=str(log))
    old = spark.conf.get("spark.sql.execution.arrow.maxRecordsPerBatch")
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(arrow_rows))
    try:
        rows = df.repartition(2).select("id", embed("text").alias("v")).collect()
    finally:
        spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", old)
    got = np.array([r["v"] for r in sorted(rows, key=lambda r: r["id"])], dtype=np.float32)
    want = reference(["" if t is None else t for t in texts])
    assert got.shape == (len(texts), 384)
    assert cosines(got, want).min() >= 0.9999
    loads = Counter(log.read_text().split())
    # Many Arrow batches, yet each Python worker loaded the model once.
    assert loads and all(n == 1 for n in loads.values()), loads
