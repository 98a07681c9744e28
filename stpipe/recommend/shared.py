"""Work that :func:`~stpipe.recommend.recommend` repeats for every component set, done once.

An evaluation calls the recommender many times on the same inputs as of the same cutoff: `full`
and its ablations, in two variants, each fitting its fusion as of ``cutoff - validation_days``
first. The feature frames, the users' histories and the catalogue (popularity, regions, Granger
strengths and the item x item matrix, the costly part) depend only on the dates, the inputs and
the options, not on which components are on, so a :class:`SharedWork` given to those calls
computes each once;
the fusion's training rows are computed once with every candidate source on, each row marked with
the sources that proposed it, and each ablation keeps the rows of its own sources (what it would
compute alone: a candidate's scores do not depend on which sources are on).

It is keyed by dates only: one instance must serve one set of inputs (orders, items, Granger
statistics) and one set of options; the evaluation makes one per cutoff. The item embeddings may
differ between calls (the evaluation's `full_base_encoder` against `full`): a catalogue is built
once per date with the first call's embeddings, and a call with another embedding frame gets the
same catalogue with its own vectors (read once per frame) and training rows of its own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Hashable, Mapping

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame

from stpipe.catalogue import Table
from stpipe.errors import InputError
from udfs.score import Catalog
from udfs.vectors import vectors_in_order

# The feature frames of one as-of date, by table (stpipe.features.build.features_as_of).
FeatureFrames = Mapping[Table, DataFrame]


class SharedWork:
    """Feature frames and user histories by as-of date, catalogues by (as-of, causal) date and the
    fusion's training rows by (encoder, dates, variant), each computed on first use."""

    def __init__(self) -> None:
        self._features: dict[dt.date, FeatureFrames] = {}
        self._catalogs: dict[tuple[dt.date, dt.date, bool], Catalog] = {}
        self._rows: dict[Hashable, pd.DataFrame] = {}
        self._built_with: dict[tuple[dt.date, dt.date, bool], DataFrame] = {}
        self._encoders: list[DataFrame] = []  # embedding frames seen, by identity
        self._vectors: dict[tuple[int, tuple[dt.date, dt.date, bool]], np.ndarray] = {}
        self._histories: dict[dt.date, DataFrame] = {}

    def features(self, as_of: dt.date, compute: Callable[[], FeatureFrames]) -> FeatureFrames:
        """The feature frames as of ``as_of``, cached in Spark (read by several calls)."""
        if as_of not in self._features:
            self._features[as_of] = {table: df.cache() for table, df in compute().items()}
        return self._features[as_of]

    def catalog(
        self, as_of: dt.date, causal_date: dt.date, with_cooc: bool, compute: Callable[[], Catalog],
        embeddings: DataFrame | None = None,
    ) -> Catalog:
        """The catalogue of these dates; one built with the item x item matrix also serves a call
        without it (a component that is off is neither scored nor a candidate source). With
        ``embeddings`` (the frame ``compute`` reads), its vectors are the ones of that frame."""
        for key in ((as_of, causal_date, True), (as_of, causal_date, with_cooc)):
            if key in self._catalogs:
                break
        else:
            self._catalogs[key] = compute()
            if embeddings is not None:
                self._built_with[key] = embeddings
        catalog = self._catalogs[key]
        built_with = self._built_with.get(key)
        if embeddings is None or built_with is None or built_with is embeddings:
            return catalog
        own = (self.encoder(embeddings), key)
        if own not in self._vectors:
            self._vectors[own] = aligned_vectors(embeddings, catalog)
        return dataclasses.replace(catalog, embeddings=self._vectors[own])

    def histories(self, as_of: dt.date, compute: Callable[[], DataFrame]) -> DataFrame:
        """The users' histories as of ``as_of`` (every user, before any subset), cached in Spark:
        each call as of that date scores or labels from the same ones."""
        if as_of not in self._histories:
            self._histories[as_of] = compute().cache()
        return self._histories[as_of]

    def encoder(self, embeddings: DataFrame) -> int:
        """A number for this embedding frame (by identity), for keys that depend on the vectors."""
        for number, known in enumerate(self._encoders):
            if known is embeddings:
                return number
        self._encoders.append(embeddings)
        return len(self._encoders) - 1

    def rows(
        self, key: Hashable, compute: Callable[[], pd.DataFrame], sources: frozenset[int]
    ) -> pd.DataFrame:
        """The fusion's training rows under ``key`` (encoder, dates, variant) that one of
        ``sources`` (candidate source bit flags) proposed, in order: what a call with only those
        sources on computes. ``compute`` gives every source's candidates with every score."""
        if key not in self._rows:
            self._rows[key] = compute()
        rows = self._rows[key]
        return rows[(rows["proposed_by"].to_numpy(dtype=int) & sum(sources)) != 0].reset_index(drop=True)

    def close(self) -> None:
        """Release the cached feature frames, catalogues and rows."""
        for frames in self._features.values():
            for df in frames.values():
                df.unpersist()
        for df in self._histories.values():
            df.unpersist()
        self._features.clear()
        self._histories.clear()
        self._catalogs.clear()
        self._rows.clear()
        self._built_with.clear()
        self._encoders.clear()
        self._vectors.clear()


def aligned_vectors(embeddings: DataFrame, catalog: Catalog) -> np.ndarray:
    """The vectors of ``embeddings`` (item_id, embedding) in the order of ``catalog.item_ids``."""
    pdf = embeddings.select("item_id", "embedding").toPandas().drop_duplicates("item_id")
    vectors, missing = vectors_in_order(pdf, catalog.item_ids.tolist())
    if missing:
        raise InputError(
            f"item_embeddings: {len(missing)} catalogue items have no vector in the other "
            f"encoder's embeddings (first: {missing[0]!r})"
        )
    return vectors
