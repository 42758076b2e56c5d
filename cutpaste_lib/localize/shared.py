"""One Gaussian shared by every location (textures, unaligned objects), from streamed moments."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Unpack

import torch
from torch import Tensor, nn

from cutpaste_lib.density import GaussianDensity, cholesky, cross_fit, l2_normalize
from cutpaste_lib.localize.features import DenseOptions, iter_dense_features
from cutpaste_lib.localize.moments import StreamingMoments


def gaussian_from_moments(
    moments: StreamingMoments, scores: Tensor | None = None
) -> GaussianDensity:
    """The shared Gaussian of streamed moments; training-score statistics from ``scores`` if given."""
    mean, cov, shrink = moments.finalize()
    scores = torch.zeros(2, dtype=torch.float64) if scores is None else scores.double()
    return GaussianDensity(per_location=False).load_state_dict(
        {
            "mean": mean,
            "cholesky_factor": cholesky(cov),
            "shrinkage": shrink,
            "train_score_mean": scores.mean(),
            "train_score_std": scores.std(),
        }
    )


class _ImageFeatures:
    """Dense features of chosen training images, encoded on demand.

    When the features of all ``n`` images take at most ``keep_bytes`` (judged on the first
    features encoded, so on the encoder's actual feature dimension), each image's features are
    kept after their first encoding and reused; otherwise every request encodes again.
    """

    def __init__(
        self, model: nn.Module, images: Tensor, *, keep_bytes: int, **options: Unpack[DenseOptions]
    ) -> None:
        self.model, self.images, self.options = model, images, options
        self.keep_bytes = keep_bytes
        self.keep: bool | None = None
        self.kept: dict[int, Tensor] = {}

    def __call__(self, rows: Tensor) -> Iterator[Tensor]:
        """Features (1, gh, gw, D) of the images at ``rows``, in that order."""
        if all(int(i) in self.kept for i in rows):
            yield from (self.kept[int(i)] for i in rows)
            return
        for start, feats in iter_dense_features(self.model, self.images[rows], **self.options):
            if self.keep is None:
                n, locations = self.images.shape[0], feats[0, ..., 0].numel()
                total = n * locations * feats.shape[-1] * feats.element_size()
                self.keep = total <= self.keep_bytes
            for k in range(feats.shape[0]):
                if self.keep:
                    self.kept[int(rows[start + k])] = feats[k : k + 1]
                yield feats[k : k + 1]


def fit_shared(
    model: nn.Module,
    images: Tensor,
    *,
    patch_size: int,
    stride: int,
    max_patches: int,
    device: torch.device,
    keep_bytes: int = 256 * 2**20,
    folds: int = 2,
) -> tuple[GaussianDensity, Tensor]:
    """One Gaussian over all patches of all images, from streamed moments.

    The two folds of the cross-fit (even / odd images, :func:`~cutpaste_lib.density.cross_fit`)
    each get a Gaussian from their own streamed moments; each image is scored by the other
    fold's Gaussian, for the cross-fitted training scores (N, gh, gw), and the sum of both
    folds' moments gives the Gaussian over all images. Features are kept between fitting and
    scoring when all of them take at most ``keep_bytes`` (at the encoder's actual feature
    dimension), so every image is encoded once; else each image is encoded twice.
    With ``folds > 2`` each fold is scored by the Gaussian of all other images, and the Gaussian
    over all images takes one more pass.
    """
    features = _ImageFeatures(
        model,
        images,
        keep_bytes=keep_bytes,
        patch_size=patch_size,
        stride=stride,
        max_patches=max_patches,
        device=device,
    )
    fold_moments: list[StreamingMoments] = []

    def fit(rows: Tensor) -> GaussianDensity:
        moments = StreamingMoments()
        for f in features(rows):
            moments.update(l2_normalize(f[0].double()))
        fold_moments.append(moments)
        return gaussian_from_moments(moments)

    def score(density: GaussianDensity, rows: Tensor) -> Tensor:
        return torch.cat([density.score(f).float().cpu() for f in features(rows)])

    n = images.shape[0]
    scores = cross_fit(n, fit=fit, score=score, device=images.device, folds=folds)
    if folds == 2:  # the two folds' moments are the whole set's
        total = fold_moments[0] + fold_moments[1]
    else:
        total = StreamingMoments()
        for f in features(torch.arange(n, device=images.device)):
            total.update(l2_normalize(f[0].double()))
    return gaussian_from_moments(total, scores=scores), scores
