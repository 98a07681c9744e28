"""Fusion logistic regression against independent fits (statsmodels, scipy)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import expit

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


def grouped_data(users: int = 60, per_user: int = 8, seed: int = 4):
    """Each user buys one or two of their candidates, drawn by softmax(x w) with a user effect."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(users * per_user, 3))
    groups = np.repeat(np.arange(users), per_user)
    y = np.zeros(len(groups))
    for u in range(users):
        rows = np.arange(u * per_user, (u + 1) * per_user)
        p = np.exp(x[rows] @ np.array([1.5, -1.0, 0.0]))
        y[rng.choice(rows, size=1 + u % 2, replace=False, p=p / p.sum())] = 1.0
    return x, y, groups


def test_listwise_fit_equals_direct_minimisation_of_the_conditional_logit():
    from stpipe.recommend.fusion import fit_conditional_logit

    x, y, groups = grouped_data()
    y[groups == 0] = 1.0  # an all-positive user carries no information and must not matter
    got = fit_conditional_logit(x, y, groups, l2=2.0)

    def objective(w):
        total = 0.0
        for g in np.unique(groups):
            rows = groups == g
            if 0 < y[rows].sum() < rows.sum():
                s = x[rows] @ w
                total -= float(y[rows] @ (s - np.log(np.exp(s).sum())))
        return total + 1.0 * w @ w

    ref = minimize(objective, np.zeros(3), method="BFGS", options={"gtol": 1e-10}).x
    np.testing.assert_allclose(got, ref, atol=1e-5)


def test_listwise_fusion_maps_weights_back_and_fits_the_intercept_alone():
    from stpipe.recommend.fusion import fit_conditional_logit

    x, y, groups = grouped_data(seed=5)
    fit = fit_fusion(x, y, features=("bert", "time", "space"), l2=0.5, groups=groups)
    mean, std = x.mean(axis=0), x.std(axis=0)
    w_std = fit_conditional_logit((x - mean) / std, y, groups, l2=0.5)
    got = np.array([fit.weights[f] for f in ("bert", "time", "space")])
    np.testing.assert_allclose(got, w_std / std, rtol=1e-8)
    # the intercept maximises the pointwise likelihood with the weights held: its score is 0
    z = fit.weights["intercept"] + x @ got
    assert float(np.sum(1 / (1 + np.exp(-z)) - y)) == pytest.approx(0.0, abs=1e-8)
    # a user effect (all of u's candidates shifted) does not move listwise weights
    shifted = x + np.repeat(np.random.default_rng(9).normal(size=(groups.max() + 1, 1)), 8, axis=0) * [1, 0, 0]
    again = fit_conditional_logit(shifted, y, groups, l2=0.0)
    np.testing.assert_allclose(again, fit_conditional_logit(x, y, groups, l2=0.0), atol=1e-8)


def test_the_intercept_is_found_when_offsets_are_large_and_purchases_rare():
    from stpipe.recommend.fusion import fit_intercept

    rng = np.random.default_rng(11)
    offset = rng.uniform(4.0, 12.0, size=5000)  # every candidate looks likely: Newton from 0 overshoots
    y = (rng.uniform(size=5000) < 0.05).astype(float)
    b = fit_intercept(offset, y)
    assert float(np.sum(1 / (1 + np.exp(-(b + offset))))) == pytest.approx(y.sum(), rel=1e-9)
    ref = minimize(lambda v: np.sum(np.logaddexp(0, v[0] + offset) - y * (v[0] + offset)), [0.0]).x[0]
    assert b == pytest.approx(ref, abs=1e-4)
    # stopping once the bracket stops moving gives the 200th step's value to the last bit
    span = np.abs(offset).max() + 50.0
    lo, hi = -span, span
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if np.sum(expit(mid + offset)) > y.sum() else (mid, hi)
    assert b == 0.5 * (lo + hi)


def test_listwise_fit_does_not_run_away_on_nearly_collinear_features():
    # history-like columns: non-zero only on bought items, two of them nearly functions of each
    # other; undamped Newton steps ran away here (weights of -190 / -240); the fit must reach the
    # optimum an independent optimiser (scipy's BFGS on the same objective) finds
    from stpipe.recommend.fusion import fit_conditional_logit

    rng = np.random.default_rng(34)
    groups = np.repeat(np.arange(24), 29)
    n = len(groups)
    bought = rng.random(n) < 0.15
    h = np.where(bought, rng.random(n), 0.0)
    x = np.stack([h, np.where(bought, h**2 + rng.standard_normal(n) * 1e-3, 0),
                  np.where(bought, rng.uniform(0.8, 1, n), 0), rng.standard_normal(n)], axis=1)
    y = (rng.random(n) < np.where(bought, 0.9, 0.03)).astype(float)
    z = (x - x.mean(axis=0)) / x.std(axis=0)

    def minus_objective(w):
        s = z @ w
        ll = 0.0
        for g in np.unique(groups):
            rows = groups == g
            if 0 < y[rows].sum() < rows.sum():
                ll += y[rows] @ s[rows] - y[rows].sum() * np.log(np.exp(s[rows]).sum())
        return -(ll - 0.5 * w @ w)

    reference = minimize(minus_objective, np.zeros(4), method="BFGS", options={"gtol": 1e-9}).x
    got = fit_conditional_logit(z, y, groups, l2=1.0)
    np.testing.assert_allclose(got, reference, atol=1e-5)
