"""Patch-level localization: dense patch features -> Gaussian scores -> heatmap (CutPaste §2.4, A.5).

A patch model (trained with ``TrainConfig(patch_size=64)``: crop first, then CutPaste inside the
crop) is applied to **every** ``patch_size`` x ``patch_size`` patch of the test image at a given
``stride``. At 256 px with patches of 32 and stride 4 (paper A.5) that is a 57 x 57 grid of
512-d pooled features per image. Each feature is scored by a Gaussian density estimator fitted on
the same grid of **clean training** images,

    s_ij(x) = (f_ij(x) - mu_ij)^T Sigma_ij^{-1} (f_ij(x) - mu_ij),

with one Gaussian shared by all locations (``mu_ij = mu``: textures, hazelnut, screw, and any
category whose pose varies) or one per location (aligned objects: bottle, cable, capsule, ...;
``category_info(name).aligned``). The 57 x 57 score grid is turned into a 256 x 256 heatmap by
receptive-field upsampling (FCDD, Liznerski et al. 2021): a transposed convolution with stride 4
and one 32 x 32 Gaussian kernel, so every pixel receives the scores of the patches that contain
it, weighted by how central it is in them. The image score is the maximum of the score grid.

Choices where the paper is silent or ambiguous (repeated in notebook 04):

* patch size 32 at test time (A.5) although the model is trained on 64 x 64 crops (§4.2): both
  are flags; a ResNet's global average pool accepts any size.
* features are L2-normalised before the Gaussian (as :class:`~cutpaste_lib.density.GaussianDensity`
  does) and the covariance is Ledoit-Wolf shrunk (fewer training images than dimensions).
* kernel ``sigma = patch_size / 4`` (8 px for 32 px patches: the kernel falls to e^-2 at the patch
  border), zero bias, and by default the transposed convolution is divided by the transposed
  convolution of a constant map (``normalize=True``): in the interior that only removes a
  ripple below 1 %, but at the image border, where fewer patches overlap, an un-normalised
  transposed convolution would darken the heatmap toward zero and hide border defects. Pixels the
  grid does not reach (when ``(H - patch) % stride != 0``) copy the nearest covered pixel.
* per-location Gaussians are stored as **float32** Cholesky factors: 57 x 57 locations x 512 x 512
  x 4 bytes = 3.4 GB (float64 would be 6.8 GB); the shared Gaussian stays float64 (1 MB).
  Fitting is chunked over locations (``location_chunk``) so only that many float64 covariances
  exist at a time; the shared Gaussian is fitted from streamed moments, so the training features
  are never all held in memory.
* heatmaps are shown on a scale fixed by **training** maps (mean, standard deviation, 99.9th
  percentile), never by the test image itself. The training maps are **cross-fitted**:
  even-indexed images are scored by a Gaussian fitted on the odd ones and vice versa. In-sample
  scores would be useless here: a per-location Gaussian fitted on fewer images than feature
  dimensions gives its own images distances far below those of any new clean image, so every
  test heatmap would saturate. The Gaussians used for the test images are fitted on all
  training images.

The modules, in the order the data pass through them: :mod:`~cutpaste_lib.localize.patches`
(the grid), :mod:`~cutpaste_lib.localize.features` (dense features), :mod:`~cutpaste_lib.localize.modes`
(shared or per-location), :mod:`~cutpaste_lib.localize.moments`, :mod:`~cutpaste_lib.localize.shared`
and :mod:`~cutpaste_lib.localize.per_location` (the two fits), :mod:`~cutpaste_lib.localize.upsample`,
:mod:`~cutpaste_lib.localize.scale`, :mod:`~cutpaste_lib.localize.patch_density` (fit the patch
density) and :mod:`~cutpaste_lib.localize.pipeline` (score test images, metrics, :func:`localize`).
The Ledoit–Wolf formula, the two-fold cross-fit and the provenance guard are those of
:mod:`cutpaste_lib.density`.

Example:
    >>> import torch
    >>> from cutpaste_lib.localize import receptive_field_upsample
    >>> grid = torch.zeros(1, 57, 57); grid[0, 28, 28] = 1.0
    >>> receptive_field_upsample(grid, patch_size=32, stride=4).shape
    torch.Size([1, 256, 256])
"""

from cutpaste_lib.localize.features import dense_features, iter_dense_features
from cutpaste_lib.localize.modes import MIN_TRAIN_IMAGES, DensityMode, resolve_density_mode
from cutpaste_lib.localize.patch_density import PatchDensity, fit_patch_density
from cutpaste_lib.localize.patches import PatchGrid, extract_patches
from cutpaste_lib.localize.pipeline import (
    LocalizationResult,
    localization_metrics,
    localize,
    score_images,
)
from cutpaste_lib.localize.scale import HeatmapScale
from cutpaste_lib.localize.upsample import gaussian_kernel, receptive_field_upsample

__all__ = [
    "DensityMode",
    "HeatmapScale",
    "LocalizationResult",
    "MIN_TRAIN_IMAGES",
    "PatchDensity",
    "PatchGrid",
    "dense_features",
    "extract_patches",
    "fit_patch_density",
    "gaussian_kernel",
    "iter_dense_features",
    "localization_metrics",
    "localize",
    "receptive_field_upsample",
    "resolve_density_mode",
    "score_images",
]
