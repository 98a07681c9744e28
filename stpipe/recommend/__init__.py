"""The recommender: signals as of a date, fusion training, scoring and top-K lists."""

from stpipe.recommend.pipeline import (
    FUSION_WEIGHTS,
    RECOMMENDATIONS,
    RecommendOptions,
    fusion_weights_frame,
    normalise_components,
    recommend,
    train_fusion,
)

__all__ = [
    "FUSION_WEIGHTS",
    "RECOMMENDATIONS",
    "RecommendOptions",
    "fusion_weights_frame",
    "normalise_components",
    "recommend",
    "train_fusion",
]
