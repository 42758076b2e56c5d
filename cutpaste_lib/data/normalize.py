"""ImageNet normalisation: what every encoder in this library sees, and its inverse for display.

Example:
    >>> import torch
    >>> from cutpaste_lib.data import denormalize, normalize
    >>> x = torch.full((1, 3, 2, 2), 128, dtype=torch.uint8)
    >>> bool(torch.allclose(denormalize(normalize(x)), x / 255.0))
    True
"""

from __future__ import annotations

import functools

import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if x.ndim < 3 or x.shape[-3] != 3:
        raise ValueError(f"expected images of shape (..., 3, H, W), got {tuple(x.shape)}")
    return _stats_on(x.device)


@functools.cache
def _stats_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std (3, 1, 1) on ``device``, made once: a fresh copy to a GPU per
    call would wait for the device every training step."""
    with torch.inference_mode(False):  # normal tensors even if first asked for under inference
        mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32, device=device).view(3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=torch.float32, device=device).view(3, 1, 1)
    return mean, std


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (0..255) or float images in [0, 1] -> float32 ImageNet-normalised, same device.

    Every encoder in this library (trained from scratch or ImageNet-pretrained) sees inputs
    normalised this way, so features are comparable between the two.
    """
    mean, std = _stats(images)
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return (x - mean) / std


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize` for display: float32 in [0, 1] (clamped)."""
    mean, std = _stats(x)
    return (x.float() * std + mean).clamp_(0.0, 1.0)
