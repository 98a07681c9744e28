"""Fusion of the signals: an L2-regularised logistic model fitted by Newton's method.

The founding design's objective: maximise the log-likelihood of past purchases. Rows are
(user, candidate) pairs as of ``run_date - validation_days``; the label is whether the user
bought the item in the following days. Two forms of that likelihood (``recommend.fusion_objective``):

- ``pointwise``: every row a Bernoulli trial, sigma(b + x w) (a logistic regression);
- ``listwise``: per user, each bought item is drawn from that user's candidates with probability
  softmax(x w) (McFadden's conditional logit). It only compares a user's candidates with each
  other, which is what a top-K list does, so how active a user is cannot leak into the weights;
  the intercept is then fitted alone, pointwise, so ``score`` stays on the logit scale.

Features are standardised for the fit (so the L2 penalty treats them alike) and the weights are
mapped back to the raw features. Deterministic: no random start, no sampling, a fixed number of
Newton steps at most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from udfs.score import FEATURES

# Used when there is nothing to learn from (no purchases after the training cutoff).
DEFAULT_WEIGHTS = {
    "intercept": -4.0, "bert": 2.0, "time": 1.0, "space": 1.0, "causal": 0.5, "history": 2.0,
    "recent": 1.0, "repeat": 1.0, "reach": 0.5, "rebuy": 1.0, "cooc": 2.0,
}


@dataclass(frozen=True)
class FusionFit:
    weights: dict[str, float]  # per feature, plus "intercept"
    train_rows: int
    train_positives: int
    log_loss: float | None
    status: str  # "fitted" or "default: <why>"


def fit_logistic(
    x: np.ndarray, y: np.ndarray, *, l2: float = 1.0, max_iter: int = 100, tol: float = 1e-10
) -> tuple[float, np.ndarray]:
    """Intercept and weights minimising sum of log-losses + l2/2 * |w|^2 (w on ``x`` as given).

    The intercept is not penalised. Newton's method on a strictly convex objective.
    """
    n, d = x.shape
    design = np.hstack([np.ones((n, 1)), x])
    beta = np.zeros(d + 1)
    penalty = np.full(d + 1, float(l2))
    penalty[0] = 0.0
    for _ in range(max_iter):
        z = design @ beta
        prob = 1.0 / (1.0 + np.exp(-z))
        grad = design.T @ (prob - y) + penalty * beta
        hess = (design * (prob * (1 - prob))[:, None]).T @ design + np.diag(penalty)
        hess[np.diag_indices_from(hess)] += 1e-12
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.max(np.abs(step)) < tol:
            break
    return float(beta[0]), beta[1:]


def fit_conditional_logit(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, l2: float = 1.0, max_iter: int = 100,
    tol: float = 1e-10,
) -> np.ndarray:
    """Weights maximising sum_g sum_{i in g, y_i = 1} log softmax_g(x w)_i - l2/2 |w|^2.

    ``groups`` labels each row's group (a user); rows of one group must be contiguous. Groups
    whose rows are all positive or all negative carry no information and are left out. Newton's
    method with step halving: a full step that lowers the objective (far from the optimum, with
    heavy-tailed features) is shortened until it does not, so the fit cannot run away.
    """
    starts = np.r_[0, np.nonzero(groups[1:] != groups[:-1])[0] + 1] if len(y) else np.zeros(0, int)
    sizes = np.diff(np.r_[starts, len(y)])
    positives = np.add.reduceat(y, starts) if len(y) else np.zeros(0)
    informative = (positives > 0) & (positives < sizes)
    rows = np.repeat(informative, sizes)
    x, y = x[rows], y[rows]
    sizes, positives = sizes[informative], positives[informative]
    starts = np.r_[0, np.cumsum(sizes)[:-1]].astype(int)
    w = np.zeros(x.shape[1])
    if not len(sizes):
        return w

    def softmax(w: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective at ``w`` and each row's probability within its group."""
        s = x @ w
        top = np.maximum.reduceat(s, starts)
        e = np.exp(s - np.repeat(top, sizes))
        total = np.add.reduceat(e, starts)
        value = float(y @ s - positives @ (np.log(total) + top) - l2 / 2 * (w @ w))
        return value, e / np.repeat(total, sizes)

    value, p = softmax(w)
    for _ in range(max_iter):
        mean_x = np.add.reduceat(p[:, None] * x, starts)  # expected features per group
        grad = y @ x - positives @ mean_x - l2 * w
        weight = np.repeat(positives, sizes) * p
        hess = (x * weight[:, None]).T @ x - (mean_x * positives[:, None]).T @ mean_x + l2 * np.eye(len(w))
        hess[np.diag_indices_from(hess)] += 1e-12
        step = np.linalg.solve(hess, grad)
        for _halving in range(50):
            new_value, new_p = softmax(w + step)
            if new_value >= value - 1e-12 * abs(value):
                break
            step = step / 2
        w, value, p = w + step, new_value, new_p
        if np.max(np.abs(step)) < tol:
            break
    return w


def fit_intercept(offset: np.ndarray, y: np.ndarray, *, iterations: int = 200) -> float:
    """The b maximising the pointwise likelihood of sigma(b + offset): the root of the increasing
    sum(sigma(b + offset)) - sum(y), found by bisection (Newton from 0 overshoots when the offsets
    are large and the labels rare). Stops early once a step leaves the bracket as it was (after
    about 60 steps the two ends are neighbouring floats): every later step would too."""
    positives = float(np.sum(y))
    if positives <= 0 or positives >= len(y):
        raise ValueError("fit_intercept: needs both labels")
    span = float(np.max(np.abs(offset))) + 50.0  # sigma(±50) is 0 or 1 in float64
    lo, hi = -span, span
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        before = (lo, hi)
        if float(np.sum(expit(mid + offset))) > positives:
            hi = mid
        else:
            lo = mid
        if (lo, hi) == before:
            break
    return 0.5 * (lo + hi)


def log_loss(x: np.ndarray, y: np.ndarray, intercept: float, w: np.ndarray) -> float:
    z = intercept + x @ w
    # log(1 + e^z) - y z, computed stably
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def fit_fusion(
    x: np.ndarray,
    y: np.ndarray,
    *,
    features: tuple[str, ...] = FEATURES,
    l2: float = 1.0,
    min_events_per_feature: float = 0.0,
    groups: np.ndarray | None = None,
) -> FusionFit:
    """Fit on raw feature columns ``features``; constant columns get weight 0.

    ``groups`` (one label per row, rows of a user contiguous) selects the listwise likelihood;
    None the pointwise one.

    With fewer than ``min_events_per_feature`` x len(features) rows of the rarer class (the
    events-per-variable rule for logistic regression) the default weights are used instead: a
    handful of purchases cannot tell seven weights apart (Olist has a few returning buyers).
    """
    n = len(y)
    positives = int(y.sum())
    rare = min(positives, n - positives)
    needed = min_events_per_feature * len(features)
    if n == 0 or positives == 0 or positives == n or rare < needed:
        why = (
            "no training rows" if n == 0
            else "labels of one class only" if positives in (0, n)
            else f"{rare} rows of the rarer class, fewer than {needed:g}"
        )
        weights = {f: DEFAULT_WEIGHTS[f] if f in features else 0.0 for f in FEATURES}
        return FusionFit({"intercept": DEFAULT_WEIGHTS["intercept"], **weights}, n, positives, None, f"default: {why}")
    mean = x.mean(axis=0)
    std = x.std(axis=0)
    live = std > 1e-12
    z = np.zeros_like(x)
    z[:, live] = (x[:, live] - mean[live]) / std[live]
    y = y.astype(np.float64)
    w_raw = np.zeros(x.shape[1])
    if groups is None:
        b_std, w_std = fit_logistic(z[:, live], y, l2=l2)
        w_raw[live] = w_std / std[live]
        intercept = b_std - float((w_raw[live] * mean[live]).sum())
    else:
        w_raw[live] = fit_conditional_logit(z[:, live], y, groups, l2=l2) / std[live]
        intercept = fit_intercept(x @ w_raw, y)
    weights = {f: 0.0 for f in FEATURES}
    weights.update({f: float(w) for f, w in zip(features, w_raw, strict=True)})
    return FusionFit(
        {"intercept": float(intercept), **weights}, n, positives,
        log_loss(x, y, intercept, w_raw), "fitted",
    )
