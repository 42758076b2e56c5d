"""Grad-CAM figures: colour-mapped maps blended onto the **de-normalised** image.

The model sees ImageNet-normalised tensors; drawing an overlay on those shows a colour-shifted,
clipped picture. These functions take the images as stored (uint8, or float in ``[0, 1]``, e.g.
:func:`cutpaste_lib.data.denormalize` output) and refuse anything that still looks normalised.

Colours of one column share one scale (the largest value of that column's maps over all images
passed), so a calm map on a good image stays calm; ``per_image=True`` stretches every panel to its
own maximum instead (what ``pytorch_grad_cam`` shows), which makes every image look "hot" somewhere.

Example:
    >>> import torch
    >>> from cutpaste_lib.viz.gradcam import gradcam_gallery, overlay_image
    >>> images = torch.zeros(2, 3, 16, 16, dtype=torch.uint8)
    >>> maps = torch.rand(2, 16, 16)
    >>> overlay_image(images[0], maps[0]).shape
    (16, 16, 3)
    >>> fig = gradcam_gallery(images, {"anomaly score": maps}, defects=["good", "hole"])
    >>> len(fig.axes)  # 2 rows x (image + 1 overlay) + 1 colour bar
    5
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps

from cutpaste_lib.viz.common import to_hwc

__all__ = ["check_display_image", "gradcam_gallery", "overlay_image"]


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def check_display_image(image) -> None:
    """Raise ``ValueError`` if a float image is outside ``[0, 1]`` (still ImageNet-normalised?)."""
    if isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
        return
    arr = _np(image)
    if arr.dtype == np.uint8 or arr.size == 0:
        return
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(
            f"image values span [{lo:.2f}, {hi:.2f}]: expected uint8 or float in [0, 1]; an "
            "ImageNet-normalised model input must go through cutpaste_lib.data.denormalize first"
        )


def overlay_image(
    image,
    cam,
    *,
    vmax: float | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
) -> np.ndarray:
    """Blend a colour-mapped map onto an image: ``(1 - alpha) * image + alpha * cmap(cam / vmax)``.

    Args:
        image: ``(3, H, W)`` or ``(H, W, 3)``, uint8 or float in ``[0, 1]`` (not normalised).
        cam: ``(H, W)`` non-negative map (e.g. ``GradCAMResult.maps[i]``).
        vmax: value drawn at the top of the colour map (default: ``cam.max()``); larger values saturate.
        alpha: weight of the colour map.
        cmap: a matplotlib colour map name.

    Returns:
        ``(H, W, 3)`` float array in ``[0, 1]``.
    """
    check_display_image(image)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    img = to_hwc(image)
    heat = _np(cam)
    if heat.shape != img.shape[:2]:
        raise ValueError(f"map of shape {heat.shape} does not match image of size {img.shape[:2]}")
    top = float(heat.max()) if vmax is None else float(vmax)
    scaled = np.clip(heat / top, 0.0, 1.0) if top > 0 else np.zeros_like(heat)
    colour = colormaps[cmap](scaled)[..., :3]
    return np.clip((1.0 - alpha) * img + alpha * colour, 0.0, 1.0)


def gradcam_gallery(
    images,
    maps: Mapping[str, torch.Tensor] | torch.Tensor,
    *,
    masks=None,
    defects: Sequence[str] | None = None,
    indices: Sequence[int] | None = None,
    per_image: bool = False,
    vmax: Mapping[str, float] | None = None,
    alpha: float = 0.5,
    cmap: str = "jet",
    title: str | None = None,
    panel_size: float = 2.0,
) -> plt.Figure:
    """One row per image: the image (ground truth outlined in white), then one overlay per method.

    Args:
        images: ``(N, 3, H, W)`` uint8 or float ``[0, 1]``.
        maps: ``{name: (N, H, W)}`` maps to compare side by side (e.g. "logit: cutpaste" and
            "anomaly score", or "Grad-CAM" and "patch model"); a bare tensor is named "Grad-CAM".
        masks: optional ``(N, 1, H, W)`` / ``(N, H, W)`` ground truth, drawn as a contour.
        defects: optional defect type per image, used in the row titles.
        indices: rows to draw (default: all images).
        per_image: scale every panel to its own maximum instead of one scale per column.
        vmax: optional fixed top of the colour scale per column name.
        alpha, cmap: see :func:`overlay_image`.
        title: figure title.

    Returns:
        A matplotlib Figure (never shown).
    """
    if isinstance(maps, torch.Tensor | np.ndarray):
        maps = {"Grad-CAM": maps}
    if not maps:
        raise ValueError("gradcam_gallery: no maps given")
    n = len(images)
    arrays = {name: _np(m).reshape(n, *np.shape(m)[-2:]) for name, m in maps.items()}
    idx = list(range(n)) if indices is None else list(indices)
    if not idx:
        raise ValueError("gradcam_gallery: no images to show")
    tops = {name: float(a.max()) for name, a in arrays.items()}
    tops.update(vmax or {})
    cols = 1 + len(arrays)
    fig, axes = plt.subplots(
        len(idx),
        cols,
        figsize=(panel_size * cols + 0.6, (panel_size + 0.25) * len(idx)),
        squeeze=False,
    )
    for row, i in enumerate(idx):
        ax = axes[row]
        ax[0].imshow(to_hwc(images[i]))
        if masks is not None:
            m = _np(masks[i]).reshape(np.shape(images[i])[-2:])
            if m.any():
                ax[0].contour(m, levels=[0.5], colors="white", linewidths=0.8)
        label = defects[i] if defects is not None else "image"
        ax[0].set_title(f"{label} #{i}", fontsize=9)
        for col, (name, arr) in enumerate(arrays.items(), start=1):
            top = float(arr[i].max()) if per_image else tops[name]
            ax[col].imshow(overlay_image(images[i], arr[i], vmax=top, alpha=alpha, cmap=cmap))
            ax[col].set_title(f"{name}\nmax {float(arr[i].max()):.3g}", fontsize=8)
        for a in ax:
            a.set_axis_off()
    if not per_image:
        # The colour bar reads "fraction of the column's scale": columns may have different units.
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0.0, 1.0))
        fig.colorbar(
            sm, ax=axes.ravel().tolist(), shrink=0.8, extend="max", label="map / column maximum"
        )
    if title:
        fig.suptitle(title)
    return fig
