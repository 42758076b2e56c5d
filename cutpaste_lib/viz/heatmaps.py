"""Localization figures: heatmap overlays on a fixed training scale, a gallery per defect type, pixel curves.

Heatmaps are always drawn on the scale of the **training** maps (:class:`~cutpaste_lib.localize.HeatmapScale`:
``(map - train mean) / train std`` from 0 to the 99.9th percentile of training pixels), never stretched per
image: a clean image then looks calm and a defect stands out, and two images can be compared.
Values above the top of the scale saturate (the colour bar's arrow).

Example:
    >>> import torch
    >>> from cutpaste_lib.localize import HeatmapScale
    >>> from cutpaste_lib.viz.heatmaps import heatmap_gallery
    >>> images = torch.zeros(2, 3, 32, 32, dtype=torch.uint8); masks = torch.zeros(2, 1, 32, 32, dtype=torch.bool)
    >>> masks[1, :, 8:16, 8:16] = True; maps = masks[:, 0].float() * 5
    >>> fig = heatmap_gallery(images, masks, maps, ["good", "hole"], scale=HeatmapScale(0.0, 1.0, 2.0))
    >>> len(fig.axes)  # 2 images x 3 panels (image, ground truth, heatmap) + the colour bar
    7
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from cutpaste_lib.viz.common import to_hwc

__all__ = ["heatmap_gallery", "overlay", "pixel_curves_figure", "pick_examples"]

SCALE_LABEL = "(score - train mean) / train std"


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def overlay(ax: plt.Axes, image, heatmap, *, vmax: float, alpha: float = 0.5, cmap: str = "jet"):
    """Draw ``image`` and a standardised ``heatmap`` (H, W) on top, colours fixed to ``[0, vmax]``.

    Returns the heatmap's ``AxesImage`` (for a colour bar).
    """
    ax.imshow(to_hwc(image))
    # below the training mean: fully transparent, the image stays visible
    colours = plt.get_cmap(cmap).with_extremes(under=(0.0, 0.0, 0.0, 0.0))
    art = ax.imshow(_np(heatmap), cmap=colours, vmin=0.0, vmax=vmax, alpha=alpha)
    ax.set_axis_off()
    return art


def pick_examples(defects: Sequence[str], per_defect: int = 1, scores=None) -> list[int]:
    """Indices of up to ``per_defect`` images for each defect type ("good" first, then alphabetical).

    With ``scores`` the highest-scoring images of each type are picked, else the first ones.
    """
    order = sorted(set(defects), key=lambda d: (d != "good", d))
    picked = []
    for d in order:
        idx = [i for i, v in enumerate(defects) if v == d]
        if scores is not None:
            s = _np(scores)
            idx = sorted(idx, key=lambda i: -float(s[i]))
        picked += idx[:per_defect]
    return picked


def heatmap_gallery(
    images,
    masks,
    maps,
    defects: Sequence[str],
    *,
    scale,
    per_defect: int = 1,
    indices: Sequence[int] | None = None,
    title: str | None = None,
    panel_size: float = 1.9,
    columns: int = 5,
) -> plt.Figure:
    """One column per picked image: the image, its ground truth, and the heatmap overlay with the
    ground truth outlined in white; at most ``columns`` images side by side, then a new band below.
    One colour bar: every heatmap is drawn on the same training scale.

    Args:
        images: (N, 3, H, W) uint8 or float [0, 1].
        masks: (N, 1, H, W) or (N, H, W) bool ground truth (None: no ground-truth row or outline).
        maps: (N, H, W) raw heatmaps (e.g. ``LocalizationResult.maps``).
        defects: defect type per image ("good" for good ones).
        scale: the training :class:`~cutpaste_lib.localize.HeatmapScale` (fixed for all images).
        per_defect: images per defect type (ignored when ``indices`` is given).
        indices: explicit images to show.
        title: figure title.
        panel_size: inches per panel.
        columns: images per band.

    Returns:
        A matplotlib Figure (not shown).
    """
    idx = list(indices) if indices is not None else pick_examples(defects, per_defect)
    if not idx:
        raise ValueError("heatmap_gallery: no images to show")
    if columns < 1:
        raise ValueError(f"heatmap_gallery: columns must be >= 1, got {columns}")
    per_image = 3 if masks is not None else 2  # panels per picked image, stacked vertically
    ncols = min(columns, len(idx))
    bands = -(-len(idx) // ncols)
    rows = bands * per_image
    fig, axes = plt.subplots(
        rows,
        ncols,
        figsize=(panel_size * ncols + 1.2, panel_size * rows + 0.5),
        squeeze=False,
        layout="constrained",
    )
    z = scale.standardize(torch.as_tensor(_np(maps)))
    art = None
    for k, i in enumerate(idx):
        band, col = divmod(k, ncols)
        panels = [axes[band * per_image + r, col] for r in range(per_image)]
        panels[0].imshow(to_hwc(images[i]))
        panels[0].set_axis_off()
        panels[0].set_title(f"{defects[i]} #{i}", fontsize=9)
        art = overlay(panels[-1], images[i], z[i], vmax=scale.high)
        top = round(float(z[i].max()), 1) + 0.0  # (+ 0.0: no "-0.0")
        panels[-1].set_title(f"heatmap (max {top:.1f})", fontsize=9)
        if masks is not None:
            m = _np(masks[i]).reshape(z.shape[-2:])
            panels[1].imshow(m, cmap="gray", vmin=0, vmax=1)
            panels[1].set_axis_off()
            panels[1].set_title("ground truth", fontsize=9)
            if m.any():
                panels[-1].contour(m, levels=[0.5], colors="white", linewidths=0.8)
    for k in range(len(idx), bands * ncols):  # empty slots of the last band
        band, col = divmod(k, ncols)
        for r in range(per_image):
            fig.delaxes(axes[band * per_image + r, col])
    fig.colorbar(
        art,
        ax=[ax for ax in axes.ravel() if ax in fig.axes],
        shrink=0.8 if rows <= per_image else max(0.4, per_image / rows),
        extend="max",
        label=SCALE_LABEL + "\n(transparent below 0)",
    )
    if title:
        fig.suptitle(title)
    return fig


def _roc_points(
    scores: np.ndarray, labels: np.ndarray, n: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """ROC points at ``n`` score quantiles (for drawing only; metrics use every threshold)."""
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    thr = np.unique(np.quantile(scores, np.linspace(0, 1, n)))[::-1]
    tpr = (pos.size - np.searchsorted(pos, thr, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(neg, thr, side="left")) / neg.size
    return np.concatenate([[0.0], fpr, [1.0]]), np.concatenate([[0.0], tpr, [1.0]])


def pixel_curves_figure(maps, masks, *, fpr_limit: float = 0.3, label: str = "") -> plt.Figure:
    """Pixel ROC (all pixels pooled) next to the PRO curve (each defect region counts once).

    Big defects dominate the pixel ROC; the PRO curve weighs every connected defect region
    equally, so small defects count as much as large ones. Its area up to ``fpr_limit``, divided
    by ``fpr_limit``, is the AUPRO.
    """
    from cutpaste_lib.metrics import aupro, pixel_auroc, pro_curve

    s, y = _np(maps).reshape(-1), _np(masks).reshape(-1) > 0.5
    fpr, tpr = _roc_points(s, y)
    pfpr, ppro, _ = pro_curve(maps, masks)
    keep = pfpr <= min(1.0, fpr_limit * 1.2)
    step = max(1, int(keep.sum()) // 4000)
    pfpr, ppro = pfpr[keep][::step], ppro[keep][::step]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.8))
    a.plot(fpr, tpr, label=f"{label} pixel AUROC {pixel_auroc(maps, masks):.3f}".strip())
    a.plot([0, 1], [0, 1], "k:", lw=0.8)
    a.set(
        xlabel="false-positive rate (pixels)",
        ylabel="true-positive rate (pixels)",
        title="pixel ROC",
    )
    b.plot(pfpr, ppro, label=f"{label} AUPRO {aupro(maps, masks, fpr_limit):.3f}".strip())
    b.axvline(fpr_limit, color="k", ls=":", lw=0.8)
    b.fill_between(pfpr, ppro, where=pfpr <= fpr_limit, alpha=0.2)
    b.set(
        xlabel="false-positive rate (pixels)",
        ylabel="per-region overlap",
        title=f"PRO curve (area to FPR {fpr_limit})",
        xlim=(0, min(1.0, fpr_limit * 1.2)),
        ylim=(0, 1.02),
    )
    for ax in (a, b):
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
