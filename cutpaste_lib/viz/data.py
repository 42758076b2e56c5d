"""Figures of the data: per-category galleries with mask overlays, and how a synthetic defect is made.

Example:
    >>> from cutpaste_lib.data import ensure_synthetic
    >>> from cutpaste_lib.viz.data import plot_gallery
    >>> fig = plot_gallery(ensure_synthetic(), n_good=2)  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from cutpaste_lib.data import build_cache, category_info, list_categories, load_split, render_sample
from cutpaste_lib.viz.common import to_hwc

DEFECT_COLOR = (1.0, 0.15, 0.1)


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The ring of pixels just *outside* a boolean (H, W) mask (8-neighbours of a mask pixel).

    Drawn outside, so that a thin defect such as a scratch stays visible inside its outline.
    """
    mask = np.asarray(mask, dtype=bool)
    h, w = mask.shape
    padded = np.pad(mask, 1, constant_values=False)
    grown = np.zeros_like(mask)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            grown |= padded[dy : dy + h, dx : dx + w]
    return grown & ~mask


def mask_overlay(
    image: np.ndarray | torch.Tensor,
    mask: np.ndarray | torch.Tensor | None,
    *,
    color: Sequence[float] = DEFECT_COLOR,
    alpha: float = 0.2,
) -> np.ndarray:
    """Image (H, W, 3) float in [0, 1] with the mask lightly tinted and outlined in ``color``.

    The tint is light and the outline lies outside the mask, so the defect itself stays visible.
    """
    out = to_hwc(image).copy()
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=-1)
    if mask is None:
        return out
    mask = np.asarray(mask.cpu() if isinstance(mask, torch.Tensor) else mask, dtype=bool).squeeze()
    rgb = np.asarray(color, dtype=np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * rgb
    out[mask_outline(mask)] = rgb
    return out


def _display_size(path: Path, longest: int) -> tuple[int, int]:
    """(H, W) with the longer side ``longest`` and the image's own aspect ratio (no squashing)."""
    from PIL import Image

    with Image.open(path) as image:
        w, h = image.size
    scale = longest / max(w, h)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _hide(ax: plt.Axes) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def plot_gallery(
    root: str | Path,
    categories: Sequence[str] | None = None,
    *,
    n_good: int = 2,
    image_size: int = 128,
    overlay: bool = True,
) -> plt.Figure:
    """One row per category: ``n_good`` defect-free training images, then one test image per
    defect type with its ground-truth mask outlined.

    Args:
        root: dataset root (MVTec layout).
        categories: which rows (default: every category of ``root``).
        n_good: normal images per row.
        image_size: longer side of the displayed images (resized like the training cache, aspect kept).
        overlay: draw the masks (False shows the raw defective images: can you spot them?).
    """
    categories = list(categories or list_categories(root))
    rows = []
    for category in categories:
        good = load_split(root, category, "train")[:n_good]
        first: dict[str, object] = {}
        for s in load_split(root, category, "test"):
            if s.label and s.defect not in first:
                first[s.defect] = s
        samples = good + list(first.values())
        size = _display_size(samples[0].path, image_size)
        rows.append((category, build_cache(samples, size, with_masks=True)))
    n_cols = max(len(cache) for _, cache in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(1.6 * n_cols, 1.75 * len(rows)), squeeze=False
    )
    for r, (category, cache) in enumerate(rows):
        info = category_info(category)
        for c in range(n_cols):
            ax = axes[r, c]
            _hide(ax)
            if c >= len(cache):
                ax.axis("off")
                continue
            mask = cache.masks[c, 0] if overlay and cache.labels[c] else None
            ax.imshow(mask_overlay(cache.images[c], mask))
            ax.set_title(
                cache.defects[c],
                fontsize=8,
                color="black" if cache.defects[c] == "good" else "firebrick",
            )
        label = f"{category}\n({info.kind}{', aligned' if info.aligned else ''})"
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.suptitle(
        "normal training images (left) and one defective test image per defect type", fontsize=10
    )
    fig.tight_layout()
    return fig


def plot_defect_examples(
    root: str | Path, category: str, *, per_defect: int = 4, image_size: int = 128
) -> plt.Figure:
    """A grid for one category: a row per defect type, ``per_defect`` examples with masks outlined."""
    by_defect: dict[str, list] = {}
    for s in load_split(root, category, "test"):
        if s.label:
            by_defect.setdefault(s.defect, []).append(s)
    defects = sorted(by_defect)
    h, w = _display_size(by_defect[defects[0]][0].path, image_size)
    cell = 1.7 / max(h, w)  # inches per pixel, so wide images get wide cells
    fig, axes = plt.subplots(
        len(defects),
        per_defect,
        figsize=(cell * w * per_defect, cell * h * len(defects) + 0.5),
        squeeze=False,
    )
    for r, defect in enumerate(defects):
        samples = by_defect[defect][:per_defect]
        cache = build_cache(samples, (h, w), with_masks=True)
        for c in range(per_defect):
            ax = axes[r, c]
            _hide(ax)
            if c < len(cache):
                ax.imshow(mask_overlay(cache.images[c], cache.masks[c, 0]))
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(defect, fontsize=9)
    fig.suptitle(f"{category}: defective test images, ground-truth masks outlined", fontsize=10)
    fig.tight_layout()
    return fig


def plot_defect_anatomy(
    category: str, defect: str, *, size: int = 128, seed: int = 0
) -> plt.Figure:
    """How a synthetic defect is made: clean twin, defective image, |difference|, mask.

    The difference is non-zero exactly inside the mask: that is what makes the masks exact.
    """
    clean, _ = render_sample(category, "good", size=size, seed=seed)
    image, mask = render_sample(category, defect, size=size, seed=seed)
    diff = np.abs(image.astype(np.int16) - clean.astype(np.int16)).max(-1)
    fig, axes = plt.subplots(1, 4, figsize=(8.4, 2.4))
    panels = [
        (clean, "clean twin (same seed)"),
        (image, f"with '{defect}'"),
        (diff, "|difference| (max over RGB)"),
        (mask, f"mask ({mask.sum()} px, {100 * mask.mean():.2f} %)"),
    ]
    for ax, (data, title) in zip(axes, panels, strict=True):
        _hide(ax)
        cmap = "magma" if data is diff else ("gray" if data is mask else None)
        ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(title, fontsize=8)
    fig.suptitle(f"{category}: anatomy of a synthetic defect", fontsize=10)
    fig.tight_layout()
    return fig
