"""The human-readable evaluation report: Markdown tables and PNG plots (matplotlib, Agg)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from stpipe.evaluate.paired import paired_markdown

PLOT_METRICS = ("hr", "precision", "recall", "ndcg", "map", "coverage")


def _fmt(value: float, stderr: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if stderr is None or (isinstance(stderr, float) and math.isnan(stderr)):
        return f"{value:.4f}"
    return f"{value:.4f} ± {stderr:.4f}"


def table_markdown(metrics: pd.DataFrame, *, k: int, model_order: Sequence[str]) -> str:
    """One row per model: users and every metric at ``k`` as value ± standard error."""
    at_k = metrics[metrics.k == k]
    names = [m for m in PLOT_METRICS if m in set(at_k.metric)]
    header = "| model | users | " + " | ".join(f"{m}@{k}" for m in names) + " |"
    lines = [header, "|" + "---|" * (len(names) + 2)]
    for model in model_order:
        rows = at_k[at_k.model == model]
        if rows.empty:
            continue
        by_metric = {r.metric: r for r in rows.itertuples()}
        cells = [_fmt(by_metric[m].value, by_metric[m].stderr) if m in by_metric else "n/a" for m in names]
        lines.append(f"| {model} | {int(rows.users.iloc[0])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def leader_line(metrics: pd.DataFrame, *, k: int, metric: str = "ndcg") -> str:
    """Which model leads ``metric@k`` and by how many standard errors over the runner-up."""
    at_k = metrics[(metrics.k == k) & (metrics.metric == metric)].dropna(subset=["value"])
    if len(at_k) < 2:
        return ""
    top = at_k.sort_values(["value", "model"], ascending=[False, True]).iloc[:2]
    best, second = top.iloc[0], top.iloc[1]
    gap = best.value - second.value
    se = max(best.stderr, second.stderr) if not math.isnan(best.stderr) else math.nan
    ratio = f"{gap / se:.1f} standard errors" if se and not math.isnan(se) else "n/a standard errors"
    return (
        f"Leader on {metric}@{k}: `{best.model}` {best.value:.4f}, ahead of `{second.model}` "
        f"{second.value:.4f} by {gap:.4f} ({ratio}, the larger of the two)."
    )


def plot_against_k(metrics: pd.DataFrame, path: Path, *, title: str, model_order: Sequence[str]) -> None:
    """One panel per metric, one line per model, metric against K with standard-error bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [m for m in PLOT_METRICS if m in set(metrics.metric)]
    cols = 3
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, metric in zip(axes.ravel(), names, strict=False):
        for model in model_order:
            part = metrics[(metrics.model == model) & (metrics.metric == metric)].sort_values("k")
            if part.empty:
                continue
            ax.plot(part.k, part.value, marker="o", label=model)
            err = part.stderr.fillna(0.0)
            ax.fill_between(part.k, part.value - err, part.value + err, alpha=0.15)
        ax.set_title(metric)
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(names):]:
        ax.axis("off")
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 5), fontsize=8)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 0.95))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_models(
    metrics: pd.DataFrame, path: Path, *, k: int, title: str, model_order: Sequence[str]
) -> None:
    """Grouped bars: every per-user metric at ``k`` per model, with standard-error whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    at_k = metrics[(metrics.k == k) & (metrics.metric != "coverage")]
    names = [m for m in PLOT_METRICS if m in set(at_k.metric)]
    models = [m for m in model_order if m in set(at_k.model)]
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(names) + 0.3 * len(models)), 4))
    x = np.arange(len(names))
    for i, model in enumerate(models):
        part = at_k[at_k.model == model].set_index("metric").reindex(names)
        ax.bar(x + i * width, part.value, width, yerr=part.stderr.fillna(0.0), label=model, capsize=2)
    ax.set_xticks(x + width * (len(models) - 1) / 2, [f"{m}@{k}" for m in names])
    ax.legend(fontsize=7, ncol=3)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def encoder_lines(encoder: dict[str, Any], out: Path) -> list[str]:
    """The report's section on the encoder tuned as of the cutoff, and its validation plot."""
    curve = encoder.get("curve") or []
    lines = ["", "## Encoder tuned as of the cutoff", ""]
    if not curve:
        return lines + [f"- not trained ({encoder.get('reason')}); `full` uses the base encoder"]
    before, best = curve[0][1], max(v for _, v in curve)
    version = encoder.get("version")
    lines += [
        f"- validation recall@10 (partner item among all items, pairs of the last days before the "
        f"cutoff): base {before:.4f}, best {best:.4f} over {curve[-1][0]} steps",
        f"- {'registered as version ' + str(version) + ': `full` and `content_tuned` use it' if version else 'not better than the base: not registered, `full` uses the base encoder'}",
        f"- {'trained in this run' if encoder.get('trained') else 'an earlier training of this scratch warehouse reused'} ({encoder.get('reason')})",
        "", "![encoder validation](encoder-validation.png)",
    ]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    steps, values = zip(*curve, strict=True)
    ax.plot(steps, values, marker="o", label="tuned")
    ax.axhline(before, color="grey", linestyle="--", label="base encoder")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation recall@10")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "encoder-validation.png", dpi=110)
    plt.close(fig)
    return lines


def write_report(
    metrics: pd.DataFrame,
    out_dir: str | Path,
    *,
    source: str,
    cutoff: str,
    horizon_days: int,
    k: int,
    model_order: Sequence[str],
    facts: dict[str, object],
    unavailable: dict[str, str],
    paired: pd.DataFrame | None = None,
    encoder: dict[str, Any] | None = None,
) -> Path:
    """Write ``report.md`` and its PNGs under ``out_dir``; return the Markdown path. ``encoder``:
    the tuning as of the cutoff (:func:`stpipe.stages.evaluate.encoder_summary`), drawn as
    ``encoder-validation.png``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Offline evaluation: {source}, cutoff {cutoff}, horizon {horizon_days} days",
        "",
        "History = distinct (user, item, day) interactions strictly before the cutoff; truth = the "
        "distinct items a user buys in [cutoff, cutoff + horizon). `all`: history items may be "
        "recommended and count as hits; `novel`: history items removed from lists and truth. "
        "Values are means over users ± one standard error; coverage is the share of the history "
        "catalogue shown in top-K lists. Lists shorter than K are filled from `pop_global`.",
        "",
        "## Split",
        "",
    ]
    lines += [f"- {key}: {value}" for key, value in facts.items()]
    if encoder is not None:
        lines += encoder_lines(encoder, out)
    if unavailable:
        lines += ["", "## Models not evaluated", ""]
        lines += [f"- `{model}`: unavailable ({why})" for model, why in unavailable.items()]
    for (level, variant), part in metrics.groupby(["level", "variant"], sort=True):
        slug = f"{level}-{variant}"
        lines += ["", f"## Level `{level}`, variant `{variant}` (K = {k})", ""]
        lines.append(table_markdown(part, k=k, model_order=model_order))
        lead = leader_line(part, k=k)
        if lead:
            lines += ["", lead]
        pairs = paired[(paired.level == level) & (paired.variant == variant)] if paired is not None else None
        table = paired_markdown(pairs, k=k, model_order=list(model_order)) if pairs is not None else ""
        if table:
            lines += ["", "Paired on the same users: mean per-user difference ± its standard error, "
                      "two-sided sign-flip permutation p-value; `beats` where the difference is at "
                      "least 2 standard errors.", "", table]
        plot_models(part, out / f"{slug}-models.png", k=k, title=f"{source} {level} {variant} @ {k}",
                    model_order=model_order)
        plot_against_k(part, out / f"{slug}-vs-k.png", title=f"{source} {level} {variant}: metric vs K",
                       model_order=model_order)
        lines += ["", f"![{slug} models]({slug}-models.png)", "", f"![{slug} vs K]({slug}-vs-k.png)"]
        for other_k in sorted(set(part.k) - {k}):
            lines += ["", f"<details><summary>K = {other_k}</summary>", ""]
            lines.append(table_markdown(part, k=other_k, model_order=model_order))
            lines += ["", "</details>"]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_cutoffs_summary(
    by_cutoff: dict[str, tuple[pd.DataFrame, pd.DataFrame]],
    path: str | Path,
    *,
    source: str,
    horizon_days: int,
    k: int,
    model_order: Sequence[str],
    metric: str = "ndcg",
) -> Path:
    """``by_cutoff``: cutoff -> (metrics, paired). Per variant, ``metric@k`` of each model at each
    cutoff and its mean over the cutoffs; then `full` minus each model per cutoff. Item level."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    cutoffs = sorted(by_cutoff)
    lines = [f"# Offline evaluation over {len(cutoffs)} cutoffs: {source}, horizon {horizon_days} days", "",
             "Each cutoff is its own split (history before it, truth in the horizon after it); the "
             "per-cutoff reports are in the folders `" + source + "-<cutoff>/`. Values are item-level "
             f"{metric}@{k}, mean over users ± one standard error; `mean` is the plain mean over cutoffs."]
    metrics = pd.concat([m.assign(cutoff=c) for c, (m, _) in by_cutoff.items()], ignore_index=True)
    paired = pd.concat([p.assign(cutoff=c) for c, (_, p) in by_cutoff.items() if len(p)], ignore_index=True) \
        if any(len(p) for _, p in by_cutoff.values()) else None
    at_k = metrics[(metrics.level == "item") & (metrics.k == k) & (metrics.metric == metric)]
    for variant in sorted(set(at_k.variant)):
        part = at_k[at_k.variant == variant]
        lines += ["", f"## Variant `{variant}`", "", "| model | " + " | ".join(cutoffs) + " | mean |",
                  "|---|" + "---|" * (len(cutoffs) + 1)]
        for model in [m for m in model_order if m in set(part.model)]:
            rows = part[part.model == model].set_index("cutoff")
            cells = [_fmt(rows.value[c], rows.stderr[c]) if c in rows.index else "n/a" for c in cutoffs]
            mean = rows.value.mean() if len(rows) == len(cutoffs) else math.nan
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {_fmt(mean, math.nan)} |")
        if paired is None:
            continue
        diffs_k = paired[(paired.level == "item") & (paired.variant == variant) & (paired.k == k)
                         & (paired.metric == f"{metric}_diff")]
        for (model, versus), rows in diffs_k[diffs_k.model != "full"].groupby(["model", "versus"], sort=True):
            cells = [_paired_cell(rows.set_index("cutoff"), c) for c in cutoffs]
            lines += ["", f"`{model}` minus `{versus}` ({metric}@{k}, paired): " + "; ".join(
                f"{c} {cell}" for c, cell in zip(cutoffs, cells, strict=True))]
        diffs = diffs_k[diffs_k.model == "full"]
        if diffs.empty:
            continue
        lines += ["", f"`full` minus each model ({metric}@{k}, paired: diff ± SE, p-value; "
                  "**bold** where the difference is at least 2 SE)", "",
                  "| full vs | " + " | ".join(cutoffs) + " |", "|---|" + "---|" * len(cutoffs)]
        for model in [m for m in model_order if m in set(diffs.versus)]:
            rows = diffs[diffs.versus == model].set_index("cutoff")
            lines.append(f"| {model} | " + " | ".join(_paired_cell(rows, c) for c in cutoffs) + " |")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


def _paired_cell(rows: pd.DataFrame, cutoff: str) -> str:
    """diff ± SE (p), bold at 2 SE or more; n/a without that cutoff."""
    if cutoff not in rows.index:
        return "n/a"
    r = rows.loc[cutoff]
    text = f"{r.value:+.4f} ± {r.stderr:.4f} (p {r.p_value:.3f})"
    return f"**{text}**" if r.stderr > 0 and r.value >= 2 * r.stderr else text
