"""The recommender: signals as of a date, fusion training, scoring and top-K lists."""

from stpipe.recommend.pipeline import (
    RecommendOptions,
    lines_read,
    normalise_components,
    recommend,
    train_fusion,
)

__all__ = [
    "RecommendOptions",
    "lines_read",
    "normalise_components",
    "recommend",
    "train_fusion",
]
