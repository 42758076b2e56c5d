"""From a patch model and two image caches to heatmaps and localization metrics."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from cutpaste_lib.localize.features import as_images, iter_dense_features
from cutpaste_lib.localize.modes import DensityMode
from cutpaste_lib.localize.patch_density import PatchDensity, fit_patch_density
from cutpaste_lib.metrics import aupro, auroc, f1_max, pixel_auroc


def score_images(
    model: nn.Module,
    images,
    patch_density: PatchDensity,
    *,
    max_patches: int = 1024,
    device: str | torch.device | None = None,
) -> tuple[Tensor, Tensor]:
    """Dense scores of test images, streamed: ``(patch_scores (N, gh, gw), maps (N, H, W))``, float32 CPU.

    Each image's map depends on that image only (the Gaussians were fixed on training images).
    """
    images = as_images(images)
    grid = patch_density.grid
    if tuple(images.shape[-2:]) != grid.image_size:
        raise ValueError(
            f"images are {tuple(images.shape[-2:])} but the patch density was fitted on {grid.image_size}"
        )
    patch_scores, maps = [], []
    density = patch_density.density
    for _, feats in iter_dense_features(
        model,
        images,
        patch_size=grid.patch_size,
        stride=grid.stride,
        max_patches=max_patches,
        device=device,
    ):
        s = density.score(feats.to(density.mean.device)).float().to(feats.device)
        patch_scores.append(s.cpu())
        maps.append(patch_density.upsample(s).cpu())
    return torch.cat(patch_scores), torch.cat(maps)


@dataclass
class LocalizationResult:
    """What :func:`localize` returns.

    Attributes:
        maps: float32 (N, H, W) heatmaps (squared-Mahalanobis scale).
        patch_scores: float32 (N, gh, gw) score grids.
        image_scores: float32 (N,) max of each score grid (the patch model's image score).
        patch_density: the fitted :class:`PatchDensity` (with the training scale).
        metrics: pixel_auroc, aupro, pixel_f1_max, image_auroc (fractions) when masks/labels allow.
    """

    maps: Tensor
    patch_scores: Tensor
    image_scores: Tensor
    patch_density: PatchDensity
    metrics: dict[str, float]


def localization_metrics(
    maps: Tensor, masks: Tensor | None, image_scores: Tensor, labels: Tensor | None
) -> dict[str, float]:
    """pixel_auroc, aupro (FPR <= 0.3), pixel_f1_max and image_auroc, each only when defined."""
    out: dict[str, float] = {}
    if masks is not None and bool(masks.any()) and not bool(masks.all()):
        out["pixel_auroc"] = pixel_auroc(maps, masks)
        out["aupro"] = aupro(maps, masks)
        out["pixel_f1_max"] = f1_max(maps, masks)
    if labels is not None and 0 < int(labels.sum()) < labels.numel():
        out["image_auroc"] = auroc(image_scores, labels)
    return out


def localize(
    model: nn.Module,
    train,
    test,
    *,
    patch_size: int = 32,
    stride: int = 4,
    density: DensityMode = "auto",
    sigma: float | None = None,
    normalize: bool = True,
    max_patches: int = 1024,
    location_chunk: int = 64,
    device: str | torch.device | None = None,
    folds: int = 2,
) -> LocalizationResult:
    """Fit on the clean train cache, score the test cache, and compute the localization metrics.

    ``sigma`` and ``normalize`` set the upsampling (:func:`receptive_field_upsample`):
    ``normalize=False`` is the paper's plain transposed convolution, whose heatmaps fade toward
    the image border; the default divides by the kernel coverage (see the module notes).
    ``folds``: cross-fitting folds of the training maps (:func:`fit_patch_density`).

    Example:
        >>> # result = localize(model, load_cache(root, c, "train", 256), load_cache(root, c, "test", 256))
        >>> # result.metrics["pixel_auroc"], result.maps.shape  # (N, 256, 256)
    """
    patch_density = fit_patch_density(
        model,
        train,
        patch_size=patch_size,
        stride=stride,
        mode=density,
        category=getattr(test, "category", "") or getattr(train, "category", ""),
        sigma=sigma,
        normalize=normalize,
        max_patches=max_patches,
        location_chunk=location_chunk,
        device=device,
        folds=folds,
    )
    patch_scores, maps = score_images(
        model, test, patch_density, max_patches=max_patches, device=device
    )
    image_scores = patch_scores.flatten(1).amax(1)
    masks = getattr(test, "masks", None)
    labels = getattr(test, "labels", None)
    metrics = localization_metrics(
        maps,
        None if masks is None else masks.cpu(),
        image_scores,
        None if labels is None else labels.cpu(),
    )
    return LocalizationResult(maps, patch_scores, image_scores, patch_density, metrics)
