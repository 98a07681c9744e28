"""Paired comparison of one model against the others on the same users, pure numpy/pandas.

For each user evaluated in a (variant, level), ``d_u = metric(reference) - metric(other)`` (a
missing list scores 0, as in :func:`stpipe.evaluate.metrics.per_user_metrics`). Reported: the
mean of ``d``, its standard error ``sd(d, ddof=1) / sqrt(n)`` (so mean / SE is the paired t
statistic), and a two-sided p-value from a sign-flip permutation test: under the null of no
difference each ``d_u`` is as likely to have either sign, so the p-value is the share of sign
assignments whose ``|mean|`` reaches the observed one. With ``2**n <= resamples`` every assignment
is enumerated (exact); otherwise ``resamples`` random assignments with a fixed seed are drawn and
``p = (1 + hits) / (1 + resamples)`` (never 0).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from stpipe.evaluate.metrics import PER_USER_METRICS

PAIRED_COLUMNS = ["model", "versus", "variant", "level", "k", "metric", "value", "stderr", "users", "p_value"]


def sign_flip_p_values(diffs: np.ndarray, *, resamples: int = 5000, seed: int = 7) -> np.ndarray:
    """Two-sided sign-flip p-value of each column of ``diffs`` (users x tests), NaN without users."""
    diffs = np.asarray(diffs, dtype=float)
    if diffs.ndim == 1:
        diffs = diffs[:, None]
    n = diffs.shape[0]
    if n == 0:
        return np.full(diffs.shape[1], math.nan)
    observed = np.abs(diffs.mean(axis=0))
    # a relative tolerance so that a resample equal to the observed mean up to rounding counts
    reach = observed * (1 - 1e-9) - 1e-15
    exact = n <= 20 and 2**n <= resamples
    if exact:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        hits = (np.abs(signs @ diffs / n) >= reach).sum(axis=0)
        return hits / len(signs)
    rng = np.random.default_rng(seed)
    hits = np.zeros(diffs.shape[1])
    for start in range(0, resamples, 1000):  # bounded memory: 1000 x users signs at a time
        size = min(1000, resamples - start)
        signs = rng.choice(np.array([1.0, -1.0]), size=(size, n))
        hits += (np.abs(signs @ diffs / n) >= reach).sum(axis=0)
    return (1 + hits) / (1 + resamples)


def paired_differences(
    per_user: pd.DataFrame, *, reference: str = "full", resamples: int = 5000, seed: int = 7
) -> pd.DataFrame:
    """Rows (PAIRED_COLUMNS): ``reference`` minus each other model, per variant, level, k and
    per-user metric (``<metric>_diff``); empty when ``reference`` was not evaluated.

    ``per_user`` holds (model, variant, level, user_id, k, <each per-user metric>).
    """
    rows = []
    for (variant, level), part in per_user.groupby(["variant", "level"], sort=True):
        ref = part[part.model == reference]
        if ref.empty:
            continue
        for other in sorted(set(part.model) - {reference}):
            joined = ref.merge(part[part.model == other], on=["user_id", "k"], suffixes=("", "_other"))
            for k, at_k in joined.groupby("k", sort=True):
                diffs = np.column_stack(
                    [at_k[m].to_numpy(float) - at_k[f"{m}_other"].to_numpy(float) for m in PER_USER_METRICS]
                )
                p_values = sign_flip_p_values(diffs, resamples=resamples, seed=seed)
                n = len(at_k)
                for j, metric in enumerate(PER_USER_METRICS):
                    d = diffs[:, j]
                    stderr = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
                    rows.append((reference, other, variant, level, int(k), f"{metric}_diff", float(d.mean()),
                                 stderr, n, float(p_values[j])))
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def paired_markdown(paired: pd.DataFrame, *, k: int, metric: str = "ndcg", model_order: list[str]) -> str:
    """A table per reference model in the rows of one (variant, level): the reference vs each
    model on ``metric@k``."""
    at_k = paired[(paired.k == k) & (paired.metric == f"{metric}_diff")]
    order = {m: i for i, m in enumerate(model_order)}
    tables = []
    for reference in sorted(set(at_k.model), key=lambda m: (order.get(m, len(order)), m)):
        lines = [f"| {reference} vs | users | {metric}@{k} diff ± SE | diff / SE | p-value | beats (diff >= 2 SE) |",
                 "|---|---|---|---|---|---|"]
        rows = at_k[at_k.model == reference]
        for r in sorted(rows.itertuples(), key=lambda r: (order.get(r.versus, len(order)), r.versus)):
            ratio = r.value / r.stderr if r.stderr and not math.isnan(r.stderr) and r.stderr > 0 else math.nan
            beats = "yes" if not math.isnan(ratio) and ratio >= 2 else "no"
            lines.append(f"| {r.versus} | {r.users} | {r.value:+.4f} ± {r.stderr:.4f} | {ratio:.1f} | "
                         f"{r.p_value:.4f} | {beats} |")
        tables.append("\n".join(lines))
    return "\n\n".join(tables)
