"""Figures of the density-estimation chapter: ROC curves, score histograms, t-SNE, covariance spectrum.

Example:
    >>> import torch
    >>> from cutpaste_lib.viz.density import plot_score_histograms
    >>> fig = plot_score_histograms(torch.tensor([1.0, 2.0, 5.0, 6.0]), torch.tensor([0, 0, 1, 1]))
    >>> len(fig.axes)
    1
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["plot_covariance_spectrum", "plot_roc", "plot_score_histograms", "plot_tsne"]

GOOD_COLOR = "tab:green"
DEFECT_COLORS = (
    "tab:red",
    "tab:orange",
    "tab:purple",
    "tab:brown",
    "tab:pink",
    "tab:olive",
    "tab:cyan",
)
TSNE_COLORS = {
    "train": "tab:blue",
    "test good": "tab:green",
    "test defective": "tab:red",
    "cutpaste": "tab:orange",
    "scar": "tab:purple",
}


def _np(x) -> np.ndarray:
    return (
        x.detach().cpu().double().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    )


def plot_roc(curves: Mapping[str, tuple], *, title: str = "ROC curve (image level)") -> plt.Figure:
    """One ROC curve per entry ``{label: (scores, labels)}``, with its AUROC in the legend."""
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for name, (scores, labels) in curves.items():
        s, y = _np(scores), _np(labels).astype(int)
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=2, label=f"{name} (AUROC {roc_auc_score(y, s):.3f})")
    ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    ax.set(
        xlabel="false positive rate (good flagged)",
        ylabel="true positive rate (defects caught)",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=title,
    )
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_score_histograms(
    scores,
    labels,
    defects: Sequence[str] | None = None,
    *,
    title: str = "anomaly scores (squared Mahalanobis distance)",
    bins: int = 30,
    ax: plt.Axes | None = None,
) -> plt.Figure:
    """Histograms of the scores of good vs defective test images (per defect type when ``defects`` given)."""
    s, y = _np(scores), _np(labels).astype(int)
    fig = ax.figure if ax is not None else plt.subplots(figsize=(6, 3.6))[1].figure
    ax = ax if ax is not None else fig.axes[0]
    # Mahalanobis scores are heavy-tailed: log-spaced bins when they span more than ~1.5 decades.
    log = bool(s.min() > 0 and s.max() / s.min() > 30)
    edges = (
        np.geomspace(s.min(), s.max(), bins + 1) if log else np.histogram_bin_edges(s, bins=bins)
    )
    ax.hist(
        s[y == 0], bins=edges, alpha=0.55, color=GOOD_COLOR, label=f"good ({int((y == 0).sum())})"
    )
    if defects is None:
        ax.hist(
            s[y != 0],
            bins=edges,
            alpha=0.6,
            color=DEFECT_COLORS[0],
            label=f"defective ({int((y != 0).sum())})",
        )
    else:
        names = sorted({d for d, lab in zip(defects, y) if lab != 0})
        groups = [s[np.array([d == n for d in defects])] for n in names]
        colors = [DEFECT_COLORS[i % len(DEFECT_COLORS)] for i in range(len(names))]
        ax.hist(
            groups,
            bins=edges,
            stacked=True,
            alpha=0.75,
            color=colors,
            label=[f"{n} ({len(g)})" for n, g in zip(names, groups)],
        )
    if log:
        ax.set_xscale("log")
    ax.set(xlabel="score (higher = more anomalous)", ylabel="images", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_tsne(
    points: Mapping[str, np.ndarray], *, title: str = "t-SNE of the representations"
) -> plt.Figure:
    """Scatter of 2-D points per group (from :func:`cutpaste_lib.evaluate.tsne_points`), paper Figure 3."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for name, p in points.items():
        p = np.asarray(p)
        ax.scatter(
            p[:, 0],
            p[:, 1],
            s=12,
            alpha=0.75,
            color=TSNE_COLORS.get(name),
            label=f"{name} ({len(p)})",
        )
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=8, markerscale=1.5)
    fig.tight_layout()
    return fig


def plot_covariance_spectrum(features, *, title: str = "covariance eigenvalues") -> plt.Figure:
    """Eigenvalues of the empirical vs Ledoit–Wolf covariance (L2-normalised features), log scale.

    With N < D images, at least D - N + 1 empirical eigenvalues are zero: the Gaussian is singular
    and Mahalanobis distances explode along those directions. Shrinkage lifts them to a floor.
    """
    from cutpaste_lib.density import empirical_covariance, l2_normalize, ledoit_wolf

    x = l2_normalize(torch.as_tensor(features).double().cpu())
    _, emp = empirical_covariance(x)
    lw, shrinkage = ledoit_wolf(x)
    e_emp = torch.linalg.eigvalsh(emp).flip(0).clamp_min(1e-18).numpy()
    e_lw = torch.linalg.eigvalsh(lw).flip(0).numpy()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.semilogy(e_emp, label="empirical (maximum likelihood)")
    ax.semilogy(e_lw, label=f"Ledoit–Wolf (shrinkage {float(shrinkage):.3f})")
    ax.axvline(x.shape[0] - 1, color="grey", ls=":", label=f"N - 1 = {x.shape[0] - 1}")
    ax.set(
        xlabel="eigenvalue index (sorted)",
        ylabel="eigenvalue",
        title=title,
        ylim=(max(e_emp.min(), 1e-12), None),
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
