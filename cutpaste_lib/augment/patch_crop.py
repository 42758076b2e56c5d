"""Patch mode: one random square crop per image, drawn before the pastes and shared by the
views of an original (the paper pastes inside the crop)."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from cutpaste_lib.augment.draws import Drawn, Draws, sample
from cutpaste_lib.augment.params import Implementation, check_patch_size

CROP_DRAWS = Draws(corner=(2,))  # per image: top row, left column


def sample_crop(
    batch: int,
    size: tuple[int, int],
    patch_size: int,
    *,
    generator: torch.Generator,
    host_arithmetic: bool = True,
) -> Tensor:
    """Top-left corners (B, 2) int64 (rows, columns) of uniform patch_size x patch_size crops."""
    check_patch_size(size, patch_size)
    body = functools.partial(crop_corners, size=size, patch_size=patch_size)
    return sample(generator, CROP_DRAWS, (batch,), body, host_arithmetic=host_arithmetic)


def crop_corners(u: Drawn, size: tuple[int, int], patch_size: int) -> Any:
    """The corners from the uniforms of :data:`CROP_DRAWS`."""
    xp = u.xp
    H, W = size
    oy = xp.clip(xp.to_long(xp.floor(u.corner[:, 0] * (H - patch_size + 1))), None, H - patch_size)
    ox = xp.clip(xp.to_long(xp.floor(u.corner[:, 1] * (W - patch_size + 1))), None, W - patch_size)
    return xp.stack([oy, ox])


def crop(
    images: Tensor,
    corners: Tensor,
    patch_size: int,
    *,
    implementation: Implementation = "batched",
) -> Tensor:
    """Cut one patch_size x patch_size crop per image at ``corners`` (B, 2) (rows, columns)."""
    B, C, H, W = images.shape
    if implementation == "per_image":
        crops = [
            images[i, :, y : y + patch_size, x : x + patch_size]
            for i, (y, x) in enumerate(corners.tolist())
        ]
        return torch.stack(crops) if crops else images[:, :, :patch_size, :patch_size].clone()
    r = torch.arange(patch_size, device=images.device)
    oy, ox = corners[:, 0], corners[:, 1]
    idx = ((oy[:, None, None] + r[:, None]) * W + (ox[:, None, None] + r[None, :])).view(B, 1, -1)
    return (
        images.reshape(B, C, H * W)
        .gather(2, idx.expand(B, C, -1))
        .view(B, C, patch_size, patch_size)
    )


def random_crop(
    images: Tensor,
    patch_size: int,
    *,
    generator: torch.Generator,
    implementation: Implementation = "batched",
    host_arithmetic: bool = True,
) -> Tensor:
    """One random patch_size x patch_size crop per image (patch mode: crop first, then paste)."""
    corners = sample_crop(
        images.shape[0],
        tuple(images.shape[-2:]),
        patch_size,
        generator=generator,
        host_arithmetic=host_arithmetic,
    )
    return crop(images, corners, patch_size, implementation=implementation)
