"""Figures for the reproduction: ours next to the paper per category, and the spread over seeds.

The paper's bars are drawn only for MVTec AD results (``data_kind == "mvtec"``) and only for the
15 MVTec categories: on synthetic data the paper's numbers measure something else.

Example:
    >>> from cutpaste_lib.viz.reproduce import plot_ours_vs_paper
    >>> rows = [dict(category="screw", variant="3way", mode="image", seed=s, image_auroc=a,
    ...              data_kind="mvtec") for s, a in enumerate([0.80, 0.84])]
    >>> fig = plot_ours_vs_paper(rows, variant="3way")
    >>> [t.get_text() for t in fig.axes[0].get_xticklabels()]
    ['screw']
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np

from cutpaste_lib import paper
from cutpaste_lib.reproduce import VARIANT_TITLES, VARIANTS, Stat, summarize
from cutpaste_lib.viz import common  # noqa: F401  (picks a headless backend when needed)

_LABELS = {"image_auroc": "image AUROC (%)", "pixel_auroc": "pixel AUROC (%)", "aupro": "AUPRO (%)"}


def _order(categories: set[str]) -> list[str]:
    return [c for c in paper.CATEGORIES if c in categories] + sorted(
        categories - set(paper.CATEGORIES)
    )


def _seed_range(stats: Sequence[Stat]) -> str:
    low, high = min(s.n for s in stats), max(s.n for s in stats)
    return str(low) if low == high else f"{low}-{high}"


def plot_ours_vs_paper(
    rows: Sequence[dict],
    *,
    variant: str = "3way",
    metric: str = "image_auroc",
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Points per category: ours (mean ± standard error over seeds) and the paper's number.

    ``metric="image_auroc"`` uses image models (Table 1); ``"pixel_auroc"`` patch models (Table 2).
    Points, not bars: the axis starts near the lowest value (AUROCs crowd between 50 and 100),
    and a bar cut off at 45 would show a 50-vs-72 difference as a 1:5 length ratio.
    """
    mode = "patch" if metric in ("pixel_auroc", "aupro") else "image"
    sel = [r for r in rows if r["variant"] == variant and r["mode"] == mode]
    stats: dict[tuple[str, str, str], Stat] = summarize(sel, metric)
    if not stats:
        raise ValueError(f"no {mode} results with {metric} for variant {variant!r}")
    cats = _order({k[0] for k in stats})
    show_paper = all(r.get("data_kind") == "mvtec" for r in sel)

    def paper_value(c: str) -> float | None:
        if not show_paper or metric == "aupro":
            return None
        if metric == "pixel_auroc":
            return paper.pixel_auroc(c) if variant == "3way" else None
        return paper.image_auroc(c, variant) if variant in paper.TABLE1_VARIANTS else None

    if ax is None:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.65 * len(cats) + 1.5), 3.4))
    else:
        fig = ax.figure
    x = np.arange(len(cats), dtype=float)
    ours = [stats[(c, variant, mode)] for c in cats]
    theirs = [paper_value(c) for c in cats]
    has_paper = any(t is not None for t in theirs)
    shift = 0.12 if has_paper else 0.0
    ax.errorbar(
        x - shift,
        [s.mean for s in ours],
        yerr=[s.se or 0.0 for s in ours],
        fmt="o",
        capsize=3,
        color="tab:blue",
        label=f"ours, mean ± SE (n={_seed_range(ours)} seeds)",
    )
    if has_paper:
        ax.plot(
            x + shift,
            [np.nan if t is None else t for t in theirs],
            "D",
            color="tab:gray",
            label="paper (MVTec AD)",
        )
    ax.set_xticks(x, cats, rotation=45, ha="right")
    ax.set_xlim(-0.6, len(cats) - 0.4)
    ax.grid(axis="y", alpha=0.3)
    ax.set_ylabel(_LABELS.get(metric, metric))
    low = min([s.mean - (s.se or 0) for s in ours] + [t for t in theirs if t is not None])
    ax.set_ylim(max(0.0, min(50.0, low - 5)), 101)
    ax.axhline(50, color="k", lw=0.6, ls=":")
    note = "" if has_paper else " (no paper numbers: not MVTec AD)"
    ax.set_title(f"{VARIANT_TITLES.get(variant, variant)} {mode} model{note}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def plot_seed_spread(
    rows: Sequence[dict], *, metric: str = "image_auroc", mode: str = "image"
) -> plt.Figure:
    """One dot per seed, per category and variant: how much a single run can move a table cell."""
    sel = [r for r in rows if r["mode"] == mode and r.get(metric) is not None]
    if not sel:
        raise ValueError(f"no {mode} results with {metric}")
    cats = _order({r["category"] for r in sel})
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in sel)]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.65 * len(cats) + 1.5), 3.2))
    offsets = np.linspace(-0.25, 0.25, len(variants)) if len(variants) > 1 else [0.0]
    for off, v in zip(offsets, variants):
        xs, ys = [], []
        for i, c in enumerate(cats):
            vals = [r[metric] * 100 for r in sel if r["category"] == c and r["variant"] == v]
            xs += [i + off] * len(vals)
            ys += vals
        ax.scatter(xs, ys, s=14, label=VARIANT_TITLES.get(v, v))
    ax.set_xticks(np.arange(len(cats)), cats, rotation=45, ha="right")
    ax.set_ylabel(_LABELS.get(metric, metric))
    ax.set_title("spread over seeds (one dot per trained model)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
