"""Receptive-field upsampling: a patch-score grid -> a pixel heatmap (FCDD, Liznerski et al. 2021).

A transposed convolution with the grid's stride and one Gaussian kernel the size of a patch, so
every pixel receives the scores of the patches that contain it, weighted by how central it is in
them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel(patch_size: int, sigma: float | None = None) -> Tensor:
    """A (patch, patch) float32 Gaussian centred on the patch centre, peak 1; ``sigma`` default ``patch / 4``."""
    sigma = patch_size / 4.0 if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    u = torch.arange(patch_size, dtype=torch.float64) - (patch_size - 1) / 2.0
    g = torch.exp(-(u**2) / (2.0 * sigma**2))
    return torch.outer(g, g).float()


def receptive_field_upsample(
    scores: Tensor,
    *,
    patch_size: int = 32,
    stride: int = 4,
    image_size: tuple[int, int] | None = None,
    sigma: float | None = None,
    normalize: bool = True,
) -> Tensor:
    """Patch-score grid (N, gh, gw) -> pixel heatmap (N, H, W) by a Gaussian transposed convolution.

    Each patch "paints" its score over its own receptive field (the patch) with a Gaussian
    weight; stride = the grid's stride; bias zero. With ``normalize`` (default) the result is
    divided by the same transposed convolution of a map of ones, i.e. each pixel gets the
    Gaussian-weighted **average** of the scores of the patches that contain it (a constant grid
    gives the same constant heatmap, also at the border). Without it the kernel is scaled by
    ``stride**2 / kernel.sum()``, so interior values keep the scores' scale (FCDD's plain form).

    Args:
        scores: (N, gh, gw) or (N, 1, gh, gw), any float dtype and device.
        patch_size, stride: the grid's geometry.
        image_size: output (H, W); default ``((gh-1)*stride + patch, (gw-1)*stride + patch)``.
            Larger outputs are padded by copying the last covered row/column; smaller ones cropped.
        sigma: kernel standard deviation in pixels (default ``patch_size / 4``).
        normalize: divide by the kernel coverage (see above).

    Returns:
        float32 (N, H, W) on the scores' device.
    """
    if scores.ndim == 4 and scores.shape[1] == 1:
        scores = scores[:, 0]
    if scores.ndim != 3:
        raise ValueError(f"scores must be (N, gh, gw), got shape {tuple(scores.shape)}")
    x = scores.float()[:, None]
    kernel = gaussian_kernel(patch_size, sigma).to(x.device)[None, None]
    out = F.conv_transpose2d(x, kernel, bias=None, stride=stride)
    if normalize:
        coverage = F.conv_transpose2d(torch.ones_like(x[:1]), kernel, stride=stride)
        out = out / coverage
    else:
        out = out * (stride**2 / kernel.sum())
    h, w = out.shape[-2:]
    if image_size is not None:
        th, tw = int(image_size[0]), int(image_size[1])
        out = out[..., : min(h, th), : min(w, tw)]
        if th > h or tw > w:
            out = F.pad(out, (0, max(0, tw - w), 0, max(0, th - h)), mode="replicate")
    return out[:, 0]
