"""The names of the evaluated models, in report order: the one list config and report use."""

from __future__ import annotations

BASELINE_NAMES = ("pop_global", "pop_region", "own_history", "cooc", "als", "ease")

# Our recommender and its ablations: name -> the components it uses.
FULL_COMPONENTS = frozenset({"bert", "time", "space", "causal", "history", "recent", "repeat", "reach", "rebuy", "cooc"})
FULL_VARIANTS: dict[str, frozenset[str]] = {
    "full": FULL_COMPONENTS,
    "full_no_bert": FULL_COMPONENTS - {"bert"},
    "full_no_causal": FULL_COMPONENTS - {"causal"},
    "full_no_timespace": FULL_COMPONENTS - {"time", "space"},
    "full_no_cooc": FULL_COMPONENTS - {"cooc"},
    "full_no_repeat": FULL_COMPONENTS - {"repeat"},
    "full_no_reach": FULL_COMPONENTS - {"reach"},
    "full_no_rebuy": FULL_COMPONENTS - {"rebuy"},
    "full_no_recent": FULL_COMPONENTS - {"recent"},
}

# The encoder's worth: `full` with the base encoder's vectors, and the text model alone (the
# item-to-item kernel of the user's history) with the base and the tuned encoder.
ENCODER_MODELS = ("full_base_encoder", "content_base", "content_tuned")

MODEL_ORDER = (*BASELINE_NAMES, *FULL_VARIANTS, *ENCODER_MODELS)

# Paired comparisons besides `full` against every model: (model, versus).
EXTRA_PAIRS = (("content_tuned", "content_base"),)
