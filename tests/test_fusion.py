"""Fusion logistic regression against independent fits (statsmodels, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize

from stpipe.recommend.fusion import DEFAULT_WEIGHTS, fit_fusion, fit_logistic


def data(n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=n), rng.uniform(size=n), rng.normal(2, 3, size=n)])
    z = -0.5 + 1.5 * x[:, 0] - 2.0 * x[:, 1] + 0.3 * x[:, 2]
    y = (rng.uniform(size=n) < 1 / (1 + np.exp(-z))).astype(float)
    return x, y


def test_unpenalised_fit_equals_statsmodels_logit():
    import statsmodels.api as sm

    x, y = data()
    intercept, w = fit_logistic(x, y, l2=0.0)
    ref = sm.Logit(y, sm.add_constant(x)).fit(disp=0).params
    np.testing.assert_allclose([intercept, *w], ref, rtol=1e-6, atol=1e-8)


def test_l2_fit_equals_direct_minimisation():
    x, y = data(seed=1)
    intercept, w = fit_logistic(x, y, l2=5.0)

    def objective(beta):
        z = beta[0] + x @ beta[1:]
        return np.sum(np.logaddexp(0, z) - y * z) + 2.5 * np.sum(beta[1:] ** 2)

    ref = minimize(objective, np.zeros(4), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose([intercept, *w], ref, atol=1e-5)


def test_fusion_weights_on_raw_scale_and_constant_column():
    x, y = data(seed=2)
    x = np.column_stack([x, np.full(len(y), 0.7)])  # a constant signal carries no information
    fit = fit_fusion(x, y, features=("bert", "time", "space", "history"), l2=0.0)
    assert fit.status == "fitted" and fit.weights["history"] == 0.0 and fit.weights["causal"] == 0.0
    import statsmodels.api as sm

    ref = sm.Logit(y, sm.add_constant(x[:, :3])).fit(disp=0).params
    got = [fit.weights[k] for k in ("intercept", "bert", "time", "space")]
    # the constant 0.7 column has weight 0, so the intercept is the plain one
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-8)
    z = ref[0] + x[:, :3] @ ref[1:]
    assert fit.log_loss == pytest.approx(np.mean(np.logaddexp(0, z) - y * z), rel=1e-6)
    assert fit.train_rows == len(y) and fit.train_positives == int(y.sum())


def test_one_class_falls_back_to_default_weights_and_is_deterministic():
    x, y = data(seed=3)
    fit = fit_fusion(x, np.zeros(len(y)), features=("bert", "time", "space"))
    assert fit.status.startswith("default") and fit.log_loss is None
    assert fit.weights["bert"] == DEFAULT_WEIGHTS["bert"] and fit.weights["causal"] == 0.0
    a = fit_fusion(x, y, features=("bert", "time", "space"), l2=1.0)
    b = fit_fusion(x.copy(), y.copy(), features=("bert", "time", "space"), l2=1.0)
    assert a == b


def test_too_few_events_per_feature_fall_back_to_defaults():
    x, y = data(seed=4)  # 3 features
    rare = int(min(y.sum(), len(y) - y.sum()))
    features = ("bert", "time", "space")
    enough = fit_fusion(x, y, features=features, min_events_per_feature=rare / 3)
    assert enough.status == "fitted"
    short = fit_fusion(x, y, features=features, min_events_per_feature=(rare + 1) / 3)
    assert short.status == f"default: {rare} rows of the rarer class, fewer than {rare + 1:g}"
    assert short.weights == {**{f: 0.0 for f in DEFAULT_WEIGHTS if f != "intercept"},
                             "intercept": DEFAULT_WEIGHTS["intercept"], "bert": DEFAULT_WEIGHTS["bert"],
                             "time": DEFAULT_WEIGHTS["time"], "space": DEFAULT_WEIGHTS["space"]}
    assert short.train_rows == len(y) and short.train_positives == int(y.sum())
