"""One Ledoit–Wolf Gaussian per grid location (aligned objects), fitted chunk of locations by chunk."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cutpaste_lib.data import normalize
from cutpaste_lib.density import (
    GaussianDensity,
    cholesky,
    cross_fit,
    l2_normalize,
    ledoit_wolf,
    mahalanobis,
)
from cutpaste_lib.localize.features import encode, encoder_of
from cutpaste_lib.localize.modes import MIN_TRAIN_IMAGES
from cutpaste_lib.localize.patches import PatchGrid, extract_patches
from cutpaste_lib.model import eval_mode


def _gaussians(f: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean (L, D), Cholesky factor (L, D, D) and shrinkage (L,) of features f (L, N, D)."""
    cov, shrink = ledoit_wolf(f)
    return f.mean(dim=-2), cholesky(cov), shrink


def _cross_fitted_scores(f: Tensor, folds: int = 2) -> Tensor:
    """Out-of-fold scores (N, L) float32 of features f (L, N, D): each half scored by the other half's Gaussians.

    In-sample Mahalanobis distances of a Gaussian fitted on N < D points are far too small (the
    Gaussian has seen them), so they cannot calibrate a heatmap; out-of-fold ones behave like
    scores of new clean images (slightly larger, each Gaussian saw half the data).
    """
    return cross_fit(
        f.shape[-2],
        fit=lambda rows: _gaussians(f[:, rows])[:2],
        score=lambda g, rows: mahalanobis(f[:, rows], *g).float().mT,
        device=f.device,
        folds=folds,
    )


def fit_per_location(
    model: nn.Module,
    images: Tensor,
    grid: PatchGrid,
    *,
    max_patches: int,
    location_chunk: int,
    device: torch.device,
    folds: int = 2,
) -> tuple[GaussianDensity, Tensor]:
    """One Ledoit-Wolf Gaussian per location, fitted ``location_chunk`` locations at a time.

    Patches are taken location-chunk by location-chunk from all images (each patch is still
    encoded exactly once), so only (N, chunk, D) features and ``chunk`` covariances are alive.
    The Cholesky factors are stored in float32 (a full 256 px grid of 512-d float64 factors
    would not fit most GPUs). Returns the density and the cross-fitted training scores
    (N, gh, gw) (``folds`` folds, two by default).
    """
    n = images.shape[0]
    if n < MIN_TRAIN_IMAGES["per-location"]:
        raise ValueError(
            f"per-location Gaussians need at least {MIN_TRAIN_IMAGES['per-location']} clean train "
            f"images, got {n}"
        )
    gh, gw = grid.shape
    p = grid.patch_size
    encoder = encoder_of(model)
    x = normalize(images.to(device))
    view = extract_patches(x, p, grid.stride)  # (N, gh, gw, 3, p, p), no copy
    rows = torch.arange(gh, device=device).repeat_interleave(gw)
    cols = torch.arange(gw, device=device).repeat(gh)
    means, factors, shrinks, train_scores = [], [], [], []
    with eval_mode(encoder), torch.inference_mode():
        for k in range(0, grid.num_locations, location_chunk):
            r, c = rows[k : k + location_chunk], cols[k : k + location_chunk]
            patches = view[:, r, c]  # (N, L, 3, p, p): only this chunk is materialised
            feats = encode(encoder, patches.reshape(-1, 3, p, p), max_patches)
            f = l2_normalize(feats.double().reshape(n, r.numel(), -1).movedim(1, 0))  # (L, N, D)
            mean, factor, shrink = _gaussians(f)
            train_scores.append(_cross_fitted_scores(f, folds))  # (N, L)
            means.append(mean.float())
            factors.append(factor.float())
            shrinks.append(shrink)
    d = means[0].shape[-1]
    scores = torch.cat(train_scores, dim=1).reshape(n, gh, gw)
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
