"""`full` in the evaluation asks the recommender for the evaluated users only, once per variant."""

import datetime as dt

import pandas as pd
import pytest

from stpipe.evaluate import full
from stpipe.evaluate.baselines import EvalContext
from stpipe.evaluate.runner import ModelUnavailable
from stpipe.recommend import RecommendOptions

CUTOFF = dt.date(2024, 3, 1)


def test_full_scores_only_evaluated_users_and_reuses_lists(spark, monkeypatch):
    calls: list[dict] = []

    def fake_recommend(spark_, *, only_users, allow_repeat, components, k, **_):
        calls.append({"users": set(only_users), "repeat": allow_repeat, "components": components, "k": k})
        rows = [(u, "north", r, f"{u}-item{r}") for u in sorted(only_users) for r in (1, 2)]
        rows += [("*", "north", 1, "pop1"), ("*", "north", 2, "pop2")]
        return spark_.createDataFrame(rows, "user_id string, region string, rank int, item_id string")

    monkeypatch.setattr(full, "recommend", fake_recommend)
    models = full.models(
        spark, prepare=lambda: full.Prepared(None, None, None, None), cutoff=CUTOFF, list_length=2,
        opts=RecommendOptions(),
    )
    assert set(models) == {
        "full", "full_no_bert", "full_no_causal", "full_no_timespace", "full_no_cooc", "full_no_repeat",
        "full_no_reach", "full_no_rebuy", "full_no_recent", "full_base_encoder", "content_base",
        "content_tuned",
    }
    seen = {"u1": {"x"}, "u2": {"y"}, "u3": {"z"}}  # u4 has no history: cold
    base = EvalContext(spark=spark, cutoff=CUTOFF, users=pd.DataFrame(), n=2, seen=seen)

    def ctx(users, **kw):
        frame = pd.DataFrame({"user_id": users, "region": ["north"] * len(users)})
        return EvalContext(**{**base.__dict__, "users": frame, **kw})

    model = models["full"]
    out = model(None, ctx(["u1", "u2"])).toPandas()
    assert calls[-1]["users"] == {"u1", "u2"} and calls[-1]["repeat"] is True
    assert "cooc" in calls[-1]["components"]
    assert sorted(out.user_id.unique()) == ["u1", "u2"]
    # the category level: the same users with history plus a cold one -> no new recommend call
    out = model(None, ctx(["u1", "u2", "u4"])).toPandas()
    assert len(calls) == 1
    assert out[out.user_id == "u4"].item_id.tolist() == ["pop1", "pop2"]
    # a user with history not scored yet -> one new call for the union
    model(None, ctx(["u3"]))
    assert len(calls) == 2 and calls[-1]["users"] == {"u1", "u2", "u3"}
    # `novel`: new items only, its own call
    model(None, ctx(["u1"], exclude_seen=True))
    assert len(calls) == 3 and calls[-1]["repeat"] is False and calls[-1]["users"] == {"u1"}
    models["full_no_cooc"](None, ctx(["u1"]))
    assert "cooc" not in calls[-1]["components"]
    models["full_no_repeat"](None, ctx(["u1"]))
    assert "repeat" not in calls[-1]["components"] and "history" in calls[-1]["components"]
    models["full_no_reach"](None, ctx(["u1"]))
    assert "reach" not in calls[-1]["components"] and "time" in calls[-1]["components"]
    models["full_no_rebuy"](None, ctx(["u1"]))
    assert "rebuy" not in calls[-1]["components"] and "repeat" in calls[-1]["components"]
    models["full_no_recent"](None, ctx(["u1"]))
    assert "recent" not in calls[-1]["components"] and "history" in calls[-1]["components"]


def test_full_base_encoder_scores_with_the_base_vectors_and_needs_a_tuning(spark, monkeypatch):
    given: list[object] = []

    def fake_recommend(spark_, *, only_users, item_embeddings, **_):
        given.append(item_embeddings)
        rows = [(u, "north", 1, f"{u}-item") for u in sorted(only_users)]
        return spark_.createDataFrame(rows, "user_id string, region string, rank int, item_id string")

    monkeypatch.setattr(full, "recommend", fake_recommend)
    seen = {"u1": {"x"}}
    ctx = EvalContext(spark=spark, cutoff=CUTOFF, n=1, seen=seen,
                      users=pd.DataFrame({"user_id": ["u1"], "region": ["north"]}))
    untuned = full.models(spark, prepare=lambda: full.Prepared(None, None, "tuned", None),
                          cutoff=CUTOFF, list_length=1, opts=RecommendOptions())
    with pytest.raises(ModelUnavailable, match="evaluate.finetune is off"):
        untuned["full_base_encoder"](None, ctx)
    with pytest.raises(ModelUnavailable, match="evaluate.finetune is off"):
        untuned["content_tuned"](None, ctx)
    tuned = full.models(
        spark, prepare=lambda: full.Prepared(None, None, "tuned", None, base_item_embeddings="base"),
        cutoff=CUTOFF, list_length=1, opts=RecommendOptions(),
    )
    tuned["full"](None, ctx)
    tuned["full_base_encoder"](None, ctx)
    assert given == ["tuned", "base"]
