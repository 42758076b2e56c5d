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
  percentile),
  never by the test image itself. The training maps are **cross-fitted**: even-indexed images are
  scored by a Gaussian fitted on the odd ones and vice versa. In-sample scores would be useless
  here: a per-location Gaussian fitted on N < 512 images gives its own images distances far
  below those of any new clean image (we measured 10x-1000x), so every test heatmap would
  saturate. The Gaussians used for the test images are fitted on all training images.

Example:
    >>> import torch
    >>> from cutpaste_lib.localize import receptive_field_upsample
    >>> grid = torch.zeros(1, 57, 57); grid[0, 28, 28] = 1.0
    >>> receptive_field_upsample(grid, patch_size=32, stride=4).shape
    torch.Size([1, 256, 256])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cutpaste_lib import density as _density
from cutpaste_lib.density import GaussianDensity, cholesky, l2_normalize, ledoit_wolf, mahalanobis
from cutpaste_lib.model import eval_mode

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

DensityMode = Literal["shared", "per-location", "auto"]

MIN_TRAIN_IMAGES = {"shared": _density.MIN_TRAIN_IMAGES, "per-location": 4}
"""Clean train images each density needs (per location: the cross-fitted training maps need two
Gaussians on half the images each)."""


# ----------------------------------------------------------------------------- the patch grid
@dataclass(frozen=True)
class PatchGrid:
    """Where the dense patches lie: patch (i, j) is the crop at rows ``stride*i``, columns ``stride*j``.

    Attributes:
        image_size: (H, W) of the images.
        patch_size: side of each square patch (paper A.5: 32).
        stride: step between neighbouring patches (paper: 4).
    """

    image_size: tuple[int, int]
    patch_size: int = 32
    stride: int = 4

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        object.__setattr__(self, "image_size", (h, w))
        if self.patch_size < 1 or self.stride < 1:
            raise ValueError(
                f"patch_size and stride must be positive, got {self.patch_size} and {self.stride}"
            )
        if self.patch_size > min(h, w):
            raise ValueError(
                f"patch_size {self.patch_size} is larger than the images ({h}x{w}): use a smaller --patch-size"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the grid: ``(H - patch) // stride + 1`` each (57 x 57 at 256/32/4)."""
        h, w = self.image_size
        return (h - self.patch_size) // self.stride + 1, (w - self.patch_size) // self.stride + 1

    @property
    def num_locations(self) -> int:
        return self.shape[0] * self.shape[1]


def extract_patches(images: Tensor, patch_size: int, stride: int) -> Tensor:
    """All patches of ``images`` (N, C, H, W) as a view of shape (N, gh, gw, C, patch, patch).

    ``unfold`` twice gives (N, C, gh, gw, p, p); the channel axis must then move **behind** the
    grid axes before any reshape, otherwise flattening mixes channels and locations (the patches
    come out scrambled). No copy is made; index or ``reshape`` the result to materialise patches.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    patches = images.unfold(2, patch_size, stride).unfold(3, patch_size, stride)
    return patches.permute(0, 2, 3, 1, 4, 5)


# ----------------------------------------------------------------------------- dense features
def _encoder_of(model: nn.Module) -> nn.Module:
    """A CutPasteModel's ``.encoder`` (pooled features), or the module itself (any encoder)."""
    return model.encoder if hasattr(model, "encoder") else model


def _encode(encoder: nn.Module, patches: Tensor, max_patches: int) -> Tensor:
    """Pooled features (B, D) float32 of normalised patches (B, C, p, p), ``max_patches`` per pass."""
    cuda = patches.device.type == "cuda"
    out = []
    for k in range(0, patches.shape[0], max_patches):
        x = patches[k : k + max_patches]
        if cuda:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            feats = encoder(x)
        if feats.ndim != 2:
            raise ValueError(
                f"the encoder must return pooled features (B, D), got shape {tuple(feats.shape)}"
            )
        out.append(feats.float())
    return torch.cat(out)


def _as_images(images) -> Tensor:
    images = getattr(images, "images", images)  # an ImageCache or a tensor
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images must be an ImageCache or a (N, 3, H, W) tensor, got {shape}")
    return images


def _normalize(images: Tensor) -> Tensor:
    from cutpaste_lib.data import normalize

    return normalize(images)


def iter_dense_features(
    model: nn.Module,
    images,
    *,
    patch_size: int = 32,
    stride: int = 4,
    max_patches: int = 1024,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(first_index, features (n, gh, gw, D) float32 on device)`` for chunks of images.

    Each forward pass takes up to ``max_patches`` patches (from one image or several); memory is
    bounded by ``max(max_patches, gh * gw)`` patches. Images are uint8 or float in [0, 1] (an
    ImageCache works); they are ImageNet-normalised here.
    """
    from cutpaste_lib.config import resolve_device

    images = _as_images(images)
    device = resolve_device(device) if device is not None else images.device
    grid = PatchGrid(tuple(images.shape[-2:]), patch_size, stride)
    gh, gw = grid.shape
    per_chunk = max(1, max_patches // grid.num_locations)
    encoder = _encoder_of(model)
    with eval_mode(encoder), torch.inference_mode():
        for start in range(0, images.shape[0], per_chunk):
            x = _normalize(images[start : start + per_chunk].to(device))
            patches = extract_patches(x, patch_size, stride).reshape(-1, 3, patch_size, patch_size)
            feats = _encode(encoder, patches, max_patches)
            yield start, feats.reshape(x.shape[0], gh, gw, -1)


def dense_features(
    model: nn.Module,
    images,
    *,
    patch_size: int = 32,
    stride: int = 4,
    max_patches: int = 1024,
    device: str | torch.device | None = None,
) -> Tensor:
    """Pooled features of every patch: (N, gh, gw, D) float32 on CPU (feature (i, j) = patch at (stride*i, stride*j)).

    Holds all features in memory (256 px: 6.6 MB per image); :func:`score_images` streams instead.
    """
    chunks = [
        f.cpu()
        for _, f in iter_dense_features(
            model,
            images,
            patch_size=patch_size,
            stride=stride,
            max_patches=max_patches,
            device=device,
        )
    ]
    return torch.cat(chunks)


# ----------------------------------------------------------------------------- receptive-field upsampling
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


# ----------------------------------------------------------------------------- densities
def resolve_density_mode(
    mode: DensityMode, category: str = ""
) -> Literal["shared", "per-location"]:
    """``"auto"`` -> per-location for aligned categories (``category_info(category).aligned``), else shared."""
    if mode in ("shared", "per-location"):
        return mode
    if mode != "auto":
        raise ValueError(f"density must be 'shared', 'per-location' or 'auto', got {mode!r}")
    from cutpaste_lib.data import category_info

    return "per-location" if category_info(category).aligned else "shared"


class _StreamingMoments:
    """Mean and Ledoit-Wolf covariance of many feature vectors, fed in chunks (float64).

    Accumulates, for ``y = x - c`` with ``c`` the first chunk's mean (a shift that keeps the sums
    small, so nothing cancels catastrophically): ``n``, ``sum y``, ``sum y y^T``, ``sum |y|^2``,
    ``sum |y|^4`` and ``sum |y|^2 y``. The fourth moment about the final mean ``m``, which
    Ledoit-Wolf needs, follows exactly:
    ``sum |y - m|^4 = A - 4 B.m + 4 m^T C m + 2 |m|^2 q - 3 n |m|^4``.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: Tensor | None = None

    def update(self, x: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        if self.shift is None:
            d = x.shape[-1]
            self.shift = x.mean(0)
            z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=x.device)  # noqa: E731
            self.s, self.C, self.B = z(d), z(d, d), z(d)
            self.q, self.A = z(()), z(())
        self._add(x - self.shift)

    def __add__(self, other: _StreamingMoments) -> _StreamingMoments:
        """Moments of the union of both streams (re-expressed about ``self``'s shift)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        out = _StreamingMoments()
        out.shift, out.n = self.shift, self.n
        out.s, out.C, out.B, out.q, out.A = (
            v.clone() for v in (self.s, self.C, self.B, self.q, self.A)
        )
        # other's sums are about other.shift; shifting them by t = other.shift - self.shift is
        # exact algebra but needs the data, so re-express through the same moment identities.
        t = other.shift - self.shift
        n, s, C, B, q, A = other.n, other.s, other.C, other.B, other.q, other.A
        tt = t @ t
        st = s @ t
        out.n += n
        out.s += s + n * t
        out.C += C + torch.outer(s, t) + torch.outer(t, s) + n * torch.outer(t, t)
        q2 = q + 2 * st + n * tt  # sum |y + t|^2
        # sum |y+t|^4 = sum (|y|^2 + 2 y.t + |t|^2)^2
        out.A += A + 4 * (t @ C @ t) + n * tt * tt + 4 * (B @ t) + 2 * tt * q + 4 * tt * st
        # sum |y+t|^2 (y+t) = B + 2 C t + tt s + t (q + 2 s.t + n tt)
        out.B += B + 2 * (C @ t) + tt * s + t * q2
        out.q += q2
        return out

    def _add(self, y: Tensor) -> None:
        r = (y * y).sum(-1)
        self.n += y.shape[0]
        self.s += y.sum(0)
        self.C += y.T @ y
        self.q += r.sum()
        self.A += (r * r).sum()
        self.B += r @ y

    def finalize(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean (D,), Ledoit-Wolf covariance (D, D), shrinkage ())``, as ``density.ledoit_wolf``."""
        if self.n < 2:
            raise ValueError(f"need at least 2 training patches to fit a Gaussian, got {self.n}")
        n, d = self.n, self.s.numel()
        m = self.s / n
        cov = self.C / n - torch.outer(m, m)
        mm = m @ m
        fourth = (
            self.A - 4 * (self.B @ m) + 4 * (m @ self.C @ m) + 2 * mm * self.q - 3 * n * mm * mm
        )
        trace = torch.diagonal(cov).sum()
        mu = trace / d
        delta_ = (cov * cov).sum()
        beta = (fourth / n - delta_) / (d * n)
        delta = (delta_ - 2.0 * mu * trace + d * mu * mu) / d
        beta = torch.minimum(beta, delta)
        shrinkage = torch.where(beta > 0, beta / torch.where(delta > 0, delta, 1.0), 0.0)
        eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
        return self.shift + m, (1.0 - shrinkage) * cov + shrinkage * mu * eye, shrinkage


@dataclass
class HeatmapScale:
    """A fixed display scale from (cross-fitted) **training** maps: ``(map - mean) / std``, shown from 0 to ``high``.

    Attributes:
        mean, std: mean and standard deviation of all training-map pixels.
        high: the 99.9th percentile of the standardised training pixels (top of the colour
            scale; the maximum would let one outlier flatten every heatmap).
        image_mean, image_std: mean and standard deviation of training image scores (max of grid).
    """

    mean: float
    std: float
    high: float
    image_mean: float = 0.0
    image_std: float = 1.0

    @classmethod
    def from_training(cls, train_maps: Tensor, train_image_scores: Tensor) -> HeatmapScale:
        maps = train_maps.double()
        mean, std = float(maps.mean()), float(maps.std().clamp_min(1e-12))
        top = float(np.quantile(train_maps.float().cpu().numpy(), 0.999))
        high = max((top - mean) / std, 1.0)
        img = train_image_scores.double()
        image_std = float(img.std().clamp_min(1e-12)) if img.numel() > 1 else 1.0
        return cls(mean, std, high, float(img.mean()), image_std)

    def standardize(self, maps: Tensor) -> Tensor:
        """``(maps - train mean) / train std`` (same scale for every image)."""
        return (maps - self.mean) / self.std

    def to_dict(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "std": self.std,
            "high": self.high,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }


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
    """

    density: GaussianDensity
    grid: PatchGrid
    mode: str
    scale: HeatmapScale
    sigma: float | None = None
    normalize: bool = True

    def upsample(self, patch_scores: Tensor) -> Tensor:
        return receptive_field_upsample(
            patch_scores,
            patch_size=self.grid.patch_size,
            stride=self.grid.stride,
            image_size=self.grid.image_size,
            sigma=self.sigma,
            normalize=self.normalize,
        )


def _halves(n: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The two folds of the cross-fit: even and odd image indices."""
    idx = torch.arange(n, device=device)
    return idx[0::2], idx[1::2]


def _cross_fitted_scores(f: Tensor) -> Tensor:
    """Out-of-fold scores (L, N) of features f (L, N, D): each half scored by the other half's Gaussian.

    In-sample Mahalanobis distances of a Gaussian fitted on N < D points are far too small (the
    Gaussian has seen them), so they cannot calibrate a heatmap; out-of-fold ones behave like
    scores of new clean images (slightly larger, each Gaussian saw half the data).
    """
    a, b = _halves(f.shape[-2], f.device)
    out = torch.empty(f.shape[:-1], dtype=torch.float32, device=f.device)
    for fit_idx, score_idx in ((a, b), (b, a)):
        part = f[..., fit_idx, :]
        cov, _ = ledoit_wolf(part)
        out[..., score_idx] = mahalanobis(
            f[..., score_idx, :], part.mean(-2), cholesky(cov)
        ).float()
    return out


def _fit_per_location(
    model: nn.Module,
    images: Tensor,
    grid: PatchGrid,
    *,
    max_patches: int,
    location_chunk: int,
    device: torch.device,
) -> tuple[GaussianDensity, Tensor]:
    """One Ledoit-Wolf Gaussian per location, fitted ``location_chunk`` locations at a time.

    Patches are taken location-chunk by location-chunk from all images (each patch is still
    encoded exactly once), so only (N, chunk, D) features and ``chunk`` covariances are alive.
    Returns the density and the two-fold cross-fitted training scores (N, gh, gw).
    """
    n = images.shape[0]
    if n < MIN_TRAIN_IMAGES["per-location"]:
        raise ValueError(
            f"per-location Gaussians need at least {MIN_TRAIN_IMAGES['per-location']} clean train "
            f"images, got {n}"
        )
    gh, gw = grid.shape
    p = grid.patch_size
    encoder = _encoder_of(model)
    x = _normalize(images.to(device))
    view = extract_patches(x, p, grid.stride)  # (N, gh, gw, 3, p, p), no copy
    rows = torch.arange(gh, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, device=device).repeat(gh)
    means, factors, shrinks, train_scores = [], [], [], []
    with eval_mode(encoder), torch.inference_mode():
        for k in range(0, grid.num_locations, location_chunk):
            r, c = rows[k : k + location_chunk], cols[k : k + location_chunk]
            patches = view[:, r, c]  # (N, L, 3, p, p): only this chunk is materialised
            feats = _encode(encoder, patches.reshape(-1, 3, p, p), max_patches)
            f = l2_normalize(feats.double().reshape(n, r.numel(), -1).movedim(1, 0))  # (L, N, D)
            cov, shrink = ledoit_wolf(f)
            mean = f.mean(dim=-2)
            factor = cholesky(cov)
            train_scores.append(_cross_fitted_scores(f))  # (L, N)
            means.append(mean.float())
            factors.append(factor.float())
            shrinks.append(shrink)
    d = means[0].shape[-1]
    scores = torch.cat(train_scores).movedim(0, 1).reshape(n, gh, gw)
    density = GaussianDensity(per_location=True, chunk_size=location_chunk)
    density.load_state_dict(
        {
            "mean": torch.cat(means).reshape(gh, gw, d),
            "cholesky_factor": torch.cat(factors).reshape(gh, gw, d, d),
            "shrinkage": torch.cat(shrinks).reshape(gh, gw),
            "train_score_mean": scores.double().mean(0),
            "train_score_std": scores.double().std(0),
        }
    )
    return density, scores


def _gaussian(
    mean: Tensor, cov: Tensor, shrink: Tensor, scores: Tensor | None = None
) -> GaussianDensity:
    density = GaussianDensity(per_location=False)
    scores = torch.zeros(2, dtype=torch.float64) if scores is None else scores.double()
    return density.load_state_dict(
        {
            "mean": mean,
            "cholesky_factor": cholesky(cov),
            "shrinkage": shrink,
            "train_score_mean": scores.mean(),
            "train_score_std": scores.std(),
        }
    )


def _fit_shared(
    model: nn.Module,
    images: Tensor,
    *,
    patch_size: int,
    stride: int,
    max_patches: int,
    device: torch.device,
    keep_bytes: int = 256 * 2**20,
) -> tuple[GaussianDensity, Tensor]:
    """One Gaussian over all patches of all images, from streamed moments (two passes over the images).

    Pass 1 accumulates the moments of each fold (even / odd images) separately; their sum gives
    the Gaussian over all images. Pass 2 scores each image with the other fold's Gaussian, for
    the cross-fitted training scores (N, gh, gw). Pass 2 reuses pass 1's features when they
    take at most ``keep_bytes`` (at 512-d), else encodes the images again.
    """
    kw = dict(patch_size=patch_size, stride=stride, max_patches=max_patches, device=device)
    grid = PatchGrid(tuple(images.shape[-2:]), patch_size, stride)
    # keep the features for pass 2 when they are small (e.g. fast mode), else encode again
    keep = images.shape[0] * grid.num_locations * 512 * 4 <= keep_bytes
    folds, kept = [_StreamingMoments(), _StreamingMoments()], []
    for start, feats in iter_dense_features(model, images, **kw):
        f = l2_normalize(feats.double())
        for k in range(f.shape[0]):
            folds[(start + k) % 2].update(f[k])
        if keep:
            kept.append((start, feats))
    fold_densities = [_gaussian(*m.finalize()) for m in folds]
    train_scores = []
    for start, feats in kept if keep else iter_dense_features(model, images, **kw):
        for k in range(feats.shape[0]):
            other = fold_densities[1 - (start + k) % 2]
            train_scores.append(other.score(feats[k : k + 1]).float().cpu())
    scores = torch.cat(train_scores)
    return _gaussian(*(folds[0] + folds[1]).finalize(), scores=scores), scores


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

    Returns:
        A :class:`PatchDensity` (Gaussians, grid and training-map scale).
    """
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.density import ProvenanceError

    if torch.is_tensor(train_images):  # the caller vouches for a tensor of clean train images
        split, labels = "train", None
    else:  # an ImageCache; one built without a split name counts as train
        split = getattr(train_images, "split", "train") or "train"
        labels = getattr(train_images, "labels", None)
    if split != "train" or (labels is not None and bool((labels != 0).any())):
        raise ProvenanceError(
            f"refusing to fit the patch density on the {split!r} split"
            + (" with defective images" if labels is not None and bool((labels != 0).any()) else "")
            + ": fit on clean train images only"
        )
    category = category or str(getattr(train_images, "category", ""))
    images = _as_images(train_images)
    dev = resolve_device(device) if device is not None else images.device
    grid = PatchGrid(tuple(images.shape[-2:]), patch_size, stride)
    resolved = resolve_density_mode(mode, category)
    if images.shape[0] < MIN_TRAIN_IMAGES["shared"]:
        raise ValueError(
            f"need at least {MIN_TRAIN_IMAGES['shared']} training images, got {images.shape[0]}"
        )
    if resolved == "per-location":
        density, train_scores = _fit_per_location(
            model, images, grid, max_patches=max_patches, location_chunk=location_chunk, device=dev
        )
    else:
        density, train_scores = _fit_shared(
            model, images, patch_size=patch_size, stride=stride, max_patches=max_patches, device=dev
        )
    result = PatchDensity(density, grid, resolved, HeatmapScale(0.0, 1.0, 1.0), sigma, normalize)
    train_maps = result.upsample(train_scores.to(dev))
    result.scale = HeatmapScale.from_training(train_maps, train_scores.flatten(1).amax(1))
    return result


# ----------------------------------------------------------------------------- scoring
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
    images = _as_images(images)
    grid = patch_density.grid
    if tuple(images.shape[-2:]) != grid.image_size:
        raise ValueError(
            f"images are {tuple(images.shape[-2:])} but the patch density was fitted on {grid.image_size}"
        )
    patch_scores, maps = [], []
    kw = dict(
        patch_size=grid.patch_size, stride=grid.stride, max_patches=max_patches, device=device
    )
    for _, feats in iter_dense_features(model, images, **kw):
        density = patch_density.density
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
    from cutpaste_lib.metrics import aupro, auroc, f1_max, pixel_auroc

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
) -> LocalizationResult:
    """Fit on the clean train cache, score the test cache, and compute the localization metrics.

    ``sigma`` and ``normalize`` set the upsampling (:func:`receptive_field_upsample`):
    ``normalize=False`` is the paper's plain transposed convolution, whose heatmaps fade toward
    the image border; the default divides by the kernel coverage (see the module notes).

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
