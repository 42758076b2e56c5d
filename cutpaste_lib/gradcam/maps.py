"""Grad-CAM of a whole image set in batches, its display scaling, and its pixel metrics."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cutpaste_lib.data import normalize
from cutpaste_lib.gradcam.compute import GradCAMResult, grad_cam
from cutpaste_lib.gradcam.layers import DEFAULT_LAYER
from cutpaste_lib.gradcam.targets import Target
from cutpaste_lib.metrics import aupro, pixel_auroc
from cutpaste_lib.precision import compute_precision

__all__ = ["gradcam_maps", "gradcam_metrics", "minmax_per_image"]


def gradcam_maps(
    model: nn.Module,
    images: Any,
    target: Target,
    *,
    layer: str = DEFAULT_LAYER,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> GradCAMResult:
    """Grad-CAM of many images, in batches, results on the CPU.

    Args:
        model: a CutPaste model (or any module taking ImageNet-normalised images).
        images: an :class:`~cutpaste_lib.data.ImageCache`, or a ``(N, 3, H, W)`` uint8 or float
            ``[0, 1]`` tensor; images are normalised with :func:`cutpaste_lib.data.normalize` here.
        target: see :func:`grad_cam`.
        layer: see :func:`resolve_layer`.
        batch_size: images per forward/backward pass.
        device: where to run (default: the model's device).
    """

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    tensor = getattr(images, "images", images)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(
            f"expected an ImageCache or a (N, 3, H, W) image tensor, got {getattr(tensor, 'shape', type(tensor))}"
        )
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    parts: list[GradCAMResult] = []
    for start in range(0, tensor.shape[0], batch_size):
        batch = normalize(tensor[start : start + batch_size].to(device))
        batch = compute_precision(device).prepare(batch)
        res = grad_cam(model, batch, target, layer=layer)
        parts.append(GradCAMResult(*(t.cpu() for t in res[:4]), res.layer))
    if not parts:
        raise ValueError("no images given to gradcam_maps")
    return GradCAMResult(*(torch.cat([p[i] for p in parts]) for i in range(4)), parts[0].layer)


def minmax_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Scale every map of ``(B, ...)`` to ``[0, 1]`` (``pytorch_grad_cam``'s display convention).

    A constant map becomes all zeros. No epsilon is added to the range: raw Grad-CAM values are
    often ~1e-4, where an epsilon of 1e-7 would already shift the result by 1e-3.
    """
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat)).view_as(maps)


def gradcam_metrics(
    maps: torch.Tensor, masks: torch.Tensor, *, fpr_limit: float = 0.3
) -> dict[str, float]:
    """Pixel AUROC and AUPRO (fractions in [0, 1]) of Grad-CAM maps against ground-truth masks.

    Args:
        maps: ``(N, H, W)`` or ``(N, 1, H, W)`` maps, higher = more anomalous.
        masks: boolean ground truth of the same size (all False for good images).
        fpr_limit: AUPRO integration limit (MVTec AD convention: 0.3).
    """

    maps = maps.detach().float().cpu()
    masks = masks.detach().cpu().bool()
    if maps.ndim == 4:
        maps = maps[:, 0]
    if masks.ndim == 4:
        masks = masks[:, 0]
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape")
    return {
        "pixel_auroc": float(pixel_auroc(maps, masks)),
        "aupro": float(aupro(maps, masks, fpr_limit=fpr_limit)),
    }
