"""The patch density: Gaussian(s) over the patch grid of clean training images, and its fit."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from cutpaste_lib.config import resolve_device
from cutpaste_lib.density import GaussianDensity, check_provenance
from cutpaste_lib.localize.features import as_images
from cutpaste_lib.localize.modes import MIN_TRAIN_IMAGES, DensityMode, resolve_density_mode
from cutpaste_lib.localize.patches import PatchGrid
from cutpaste_lib.localize.per_location import fit_per_location
from cutpaste_lib.localize.scale import HeatmapScale
from cutpaste_lib.localize.shared import fit_shared
from cutpaste_lib.localize.upsample import receptive_field_upsample


@dataclass
class PatchDensity:
    """Gaussian(s) over the patch grid of clean training images, plus the geometry and training scale.

    Attributes:
        density: a fitted :class:`~cutpaste_lib.density.GaussianDensity` (one shared Gaussian, or
            ``per_location=True`` with float32 ``(gh, gw, D, D)`` Cholesky factors).
        grid: the :class:`PatchGrid` it was fitted on.
        mode: "shared" or "per-location".
        scale: the :class:`HeatmapScale` of the training maps.
        sigma, normalize: the upsampling settings used for the training maps (reused for test maps).
        train_image_scores: float64 (N,) image scores (grid maximum) of the cross-fitted training
            maps, i.e. how new clean images score: a detector's threshold is fixed on them.
        train_map_max: float64 (N,) the maximum pixel of each cross-fitted training map.
        folds: the cross-fitting folds of those training maps.
    """

    density: GaussianDensity
    grid: PatchGrid
    mode: str
    scale: HeatmapScale
    sigma: float | None = None
    normalize: bool = True
    train_image_scores: Tensor | None = field(default=None, repr=False)
    train_map_max: Tensor | None = field(default=None, repr=False)
    folds: int = 2

    def upsample(self, patch_scores: Tensor) -> Tensor:
        return receptive_field_upsample(
            patch_scores,
            patch_size=self.grid.patch_size,
            stride=self.grid.stride,
            image_size=self.grid.image_size,
            sigma=self.sigma,
            normalize=self.normalize,
        )


def fit_patch_density(
    model: nn.Module,
    train_images,
    *,
    patch_size: int = 32,
    stride: int = 4,
    mode: DensityMode = "auto",
    category: str = "",
    sigma: float | None = None,
    normalize: bool = True,
    max_patches: int = 1024,
    location_chunk: int = 64,
    device: str | torch.device | None = None,
    folds: int = 2,
) -> PatchDensity:
    """Fit the patch Gaussian(s) on **clean training** images and the training heatmap scale.

    Args:
        model: the patch model (its ``.encoder`` gives pooled features) or any encoder.
        train_images: an ImageCache of the train split (refused if it holds test or defective
            images) or a (N, 3, H, W) tensor of clean train images.
        patch_size, stride: the dense grid (paper A.5: 32 and 4).
        mode: "shared", "per-location" or "auto" (per-location for aligned categories).
        category: the category name, for ``mode="auto"``.
        sigma, normalize: the upsampling kernel (see :func:`receptive_field_upsample`).
        max_patches: patches per forward pass; location_chunk: locations fitted at once.
        device: where to run; default the images' device.
        folds: cross-fitting folds of the training maps (2: each image scored by the Gaussian(s)
            of the other half; a detector's threshold uses 10, :mod:`cutpaste_lib.detector`).

    Returns:
        A :class:`PatchDensity` (Gaussians, grid and training-map scale).
    """
    if torch.is_tensor(train_images):  # the caller vouches for a tensor of clean train images
        split, labels = "train", None
    else:  # an ImageCache; one built without a split name counts as train
        split = getattr(train_images, "split", "train") or "train"
        labels = getattr(train_images, "labels", None)
    check_provenance(split=split, labels=labels, what="the patch density")
    category = category or str(getattr(train_images, "category", ""))
    images = as_images(train_images)
    dev = resolve_device(device) if device is not None else images.device
    grid = PatchGrid(tuple(images.shape[-2:]), patch_size, stride)
    resolved = resolve_density_mode(mode, category)
    if images.shape[0] < MIN_TRAIN_IMAGES["shared"]:
        raise ValueError(
            f"need at least {MIN_TRAIN_IMAGES['shared']} training images, got {images.shape[0]}"
        )
    if resolved == "per-location":
        density, train_scores = fit_per_location(
            model,
            images,
            grid,
            max_patches=max_patches,
            location_chunk=location_chunk,
            device=dev,
            folds=folds,
        )
    else:
        density, train_scores = fit_shared(
            model,
            images,
            patch_size=patch_size,
            stride=stride,
            max_patches=max_patches,
            device=dev,
            folds=folds,
        )
    result = PatchDensity(
        density=density,
        grid=grid,
        mode=resolved,
        scale=HeatmapScale(0.0, 1.0, 1.0),
        sigma=sigma,
        normalize=normalize,
        folds=folds,
    )
    train_maps = result.upsample(train_scores.to(dev))
    image_scores = train_scores.flatten(1).amax(1)
    result.scale = HeatmapScale.from_training(train_maps, image_scores)
    result.train_image_scores = image_scores.double().cpu()
    result.train_map_max = train_maps.flatten(1).amax(1).double().cpu()
    return result
