"""Figures for the augmentations: example grids with masks, parameter histograms vs densities.

Example:
    >>> import torch
    >>> from cutpaste_lib.augment import make_proxy_batch
    >>> from cutpaste_lib.viz.augment import plot_proxy_batch
    >>> g = torch.Generator().manual_seed(0)
    >>> batch = make_proxy_batch(torch.rand(3, 3, 64, 64, generator=g), "3way", generator=g)
    >>> fig = plot_proxy_batch(batch, n=3)
"""

from __future__ import annotations

import math

import numpy as np
import torch

from cutpaste_lib.viz.common import plt, to_hwc

CLASS_NAMES = {2: ("normal", "augmented"), 3: ("normal", "CutPaste", "Scar")}


def _outline(ax: plt.Axes, mask: torch.Tensor, color: str = "red") -> None:
    m = mask.detach().cpu().float().numpy().reshape(mask.shape[-2:])
    if m.any():
        ax.contour(m, levels=[0.5], colors=color, linewidths=0.8)


def plot_proxy_batch(
    batch,
    n: int = 4,
    *,
    class_names: tuple[str, ...] | None = None,
    show_masks: bool = True,
    outline: bool = True,
    size: float = 1.6,
) -> plt.Figure:
    """Grid of a :class:`~cutpaste_lib.augment.ProxyBatch`: one column per original image,
    one row per view (normal, CutPaste, Scar...), plus a mask row under each augmented view.

    Args:
        batch: the ProxyBatch (images laid out view by view).
        n: number of originals (columns) to show.
        class_names: row titles; default from the number of classes.
        show_masks: add the mask of pasted pixels under each augmented row.
        outline: draw the mask's outline on the augmented image.
    """
    k = int(batch.labels.max()) + 1
    b = batch.images.shape[0] // k
    n = min(n, b)
    names = class_names or CLASS_NAMES.get(k, tuple(f"class {i}" for i in range(k)))
    rows = []
    for v in range(k):
        rows.append((v, "image"))
        if show_masks and v > 0:
            rows.append((v, "mask"))
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows)), squeeze=False)
    for r, (v, what) in enumerate(rows):
        for c in range(n):
            ax = axes[r, c]
            i = v * b + c
            if what == "image":
                ax.imshow(to_hwc(batch.images[i]), interpolation="nearest")
                if outline and v > 0:
                    _outline(ax, batch.masks[i])
            else:
                ax.imshow(
                    batch.masks[i, 0].cpu().numpy(),
                    cmap="gray",
                    vmin=0,
                    vmax=1,
                    interpolation="nearest",
                )
            ax.set_xticks([])
            ax.set_yticks([])
        label = names[v] if what == "image" else f"{names[v]} mask"
        axes[r, 0].set_ylabel(label, fontsize=9)
    fig.tight_layout()
    return fig


def loguniform_density(a: np.ndarray, lo: float = 0.3, hi: float = 3.3) -> np.ndarray:
    """Density of a log-uniform aspect ratio on (lo, hi): 1 / (a ln(hi / lo))."""
    a = np.asarray(a, dtype=float)
    return np.where((a > lo) & (a < hi), 1.0 / (a * math.log(hi / lo)), 0.0)


def two_interval_density(a: np.ndarray, lo: float = 0.3, hi: float = 3.3) -> np.ndarray:
    """Density of "(lo, 1) or (1, hi) with probability 1/2, then uniform inside"."""
    a = np.asarray(a, dtype=float)
    return np.where((a > lo) & (a < 1), 0.5 / (1 - lo), 0.0) + np.where(
        (a > 1) & (a < hi), 0.5 / (hi - 1), 0.0
    )


def plot_cutpaste_distributions(
    area: torch.Tensor,
    aspect: dict[str, torch.Tensor],
    *,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: tuple[float, float] = (0.3, 3.3),
) -> plt.Figure:
    """Histograms of sampled area ratios and aspect ratios with the specified densities on top.

    Args:
        area: realised patch area / image area, one value per draw.
        aspect: {"log_uniform": widths/heights, "two_interval": ...} (any subset of the two).
    """
    lo, hi = aspect_ratio
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    ax = axes[0]
    ax.hist(
        area.cpu().numpy(), bins=40, density=True, alpha=0.6, label="sampled (realised patches)"
    )
    a0, a1 = area_ratio
    ax.plot([a0, a0, a1, a1], [0, 1 / (a1 - a0), 1 / (a1 - a0), 0], "k-", label=f"U({a0}, {a1})")
    ax.set_xlabel("patch area / image area")
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    ax = axes[1]
    # density per unit of log(aspect): flat for log-uniform, which makes the two readings easy to compare
    bins = np.linspace(math.log(lo), math.log(hi), 41)
    grid = np.geomspace(lo * 1.001, hi * 0.999, 400)
    densities = {"log_uniform": loguniform_density, "two_interval": two_interval_density}
    colors = {"log_uniform": "C0", "two_interval": "C1"}
    for name, values in aspect.items():
        logs = np.log(values.cpu().numpy())
        ax.hist(
            logs,
            bins=bins,
            density=True,
            alpha=0.45,
            color=colors.get(name),
            label=f"{name} (sampled)",
        )
        ax.plot(
            np.log(grid),
            densities[name](grid, lo, hi) * grid,
            color=colors.get(name),
            lw=1.5,
            label=f"{name} density",
        )
    ticks = [lo, 0.5, 1.0, 2.0, hi]
    ax.set_xticks(np.log(ticks), [f"{t:g}" for t in ticks])
    ax.set_xlabel("aspect ratio width / height (log scale)")
    ax.set_ylabel("density of log(aspect)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_side_by_side(
    images: dict[str, torch.Tensor],
    masks: dict[str, torch.Tensor] | None = None,
    *,
    size: float = 2.2,
) -> plt.Figure:
    """One row of titled images (e.g. original / Cutout / CutPaste / Scar), outlines from ``masks``."""
    fig, axes = plt.subplots(1, len(images), figsize=(size * len(images), size), squeeze=False)
    for ax, (title, img) in zip(axes[0], images.items()):
        ax.imshow(to_hwc(img), interpolation="nearest")
        if masks and title in masks:
            _outline(ax, masks[title])
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
