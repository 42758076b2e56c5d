"""The Gaussian density estimator (GDE): score = squared Mahalanobis distance to the clean train images.

CutPaste detects anomalies by fitting a multivariate Gaussian to the representations of **clean**
training images and scoring a test image by ``(x - mu)^T Sigma^{-1} (x - mu)``. With fewer images
than feature dimensions the empirical covariance is singular, so by default Sigma is Ledoit–Wolf
shrunk; the score goes through the Cholesky factor (:mod:`cutpaste_lib.density.covariance`).
"""

from __future__ import annotations

from typing import Literal, Self

import torch
from torch import Tensor

from cutpaste_lib.density.covariance import (
    center,
    cholesky,
    gram,
    ledoit_wolf_from_centered,
    mahalanobis,
)
from cutpaste_lib.density.embeddings import Embeddings
from cutpaste_lib.density.estimator import MIN_TRAIN_IMAGES, Density

CovarianceMethod = Literal["ledoit_wolf", "ridge", "empirical"]
COVARIANCE_METHODS: tuple[str, ...] = ("ledoit_wolf", "ridge", "empirical")


class GaussianDensity(Density):
    """Multivariate Gaussian density estimator (GDE); score = squared Mahalanobis distance.

    Args:
        covariance: "ledoit_wolf" (default: shrinkage estimated from the data, well-conditioned when
            N < D), "ridge" (maximum-likelihood covariance + ``ridge * I``) or "empirical" (no
            regularisation; needs N > D and full-rank features).
        ridge: the diagonal loading used by "ridge" (default 1e-6, the ``reg_covar`` default of
            sklearn's ``GaussianMixture``; L2-normalised features have per-dimension variance ~1/D).
        normalize: L2-normalise every feature vector before fitting and scoring (default True, as in
            the authors' sister code; the paper itself does not say).
        per_location: for dense features (N, *locations, D): fit one Gaussian per location (aligned
            objects) instead of one shared by all locations (textures). Ignored for (N, D) features.
        chunk_size: locations fitted at once when ``per_location`` (bounds float64 memory).

    State (after fit): ``mean`` (D,) or (*locations, D), ``cholesky_factor`` (D, D) or
    (*locations, D, D), ``shrinkage`` (a scalar tensor, or one per location), all float64 on the
    device of the fitted features; :meth:`to` moves them.
    """

    _tensor_names = ("mean", "cholesky_factor", "shrinkage", "train_score_mean", "train_score_std")

    def __init__(
        self,
        covariance: CovarianceMethod = "ledoit_wolf",
        *,
        ridge: float = 1e-6,
        normalize: bool = True,
        per_location: bool = False,
        chunk_size: int = 256,
    ) -> None:
        if covariance not in COVARIANCE_METHODS:
            raise ValueError(f"covariance must be one of {COVARIANCE_METHODS}, got {covariance!r}")
        if covariance == "ridge" and not ridge > 0:
            raise ValueError(f"ridge must be > 0, got {ridge}")
        self.covariance_method = covariance
        self.ridge = float(ridge)
        self.normalize = bool(normalize)
        self.per_location = bool(per_location)
        self.chunk_size = int(chunk_size)
        self.mean: Tensor | None = None
        self.cholesky_factor: Tensor | None = None
        self.shrinkage: Tensor | None = None

    def config(self) -> dict:
        """Plain settings (JSON-friendly) that rebuild an unfitted estimator: ``GaussianDensity(**config)``."""
        return {
            "covariance": self.covariance_method,
            "ridge": self.ridge,
            "normalize": self.normalize,
            "per_location": self.per_location,
        }

    def _unfitted_copy(self) -> Self:
        return type(self)(**self.config(), chunk_size=self.chunk_size)

    def _fit_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., N, D) float64 -> mean, Cholesky factor, shrinkage."""
        if x.shape[-2] < MIN_TRAIN_IMAGES:
            raise ValueError(
                f"need at least {MIN_TRAIN_IMAGES} training images to fit a Gaussian, got {x.shape[-2]}"
            )
        mean, xc = center(x)
        cov = gram(xc) / x.shape[-2]
        shrinkage = torch.zeros(cov.shape[:-2], dtype=cov.dtype, device=cov.device)
        if self.covariance_method == "ledoit_wolf":
            cov, shrinkage = ledoit_wolf_from_centered(xc, cov)
        elif self.covariance_method == "ridge":
            cov = cov + self.ridge * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return mean, cholesky(cov), shrinkage

    def _fit_prepared(self, x: Tensor) -> Tensor:
        if x.ndim > 2 and self.per_location:
            loc_shape = x.shape[1:-1]
            xl = x.reshape(x.shape[0], -1, x.shape[-1]).movedim(0, 1)  # (L, N, D)
            parts = [
                self._fit_batch(xl[i : i + self.chunk_size])
                for i in range(0, xl.shape[0], self.chunk_size)
            ]
            mean, factor, shrinkage = (torch.cat(p) for p in zip(*parts))
            self.mean = mean.reshape(*loc_shape, -1)
            self.cholesky_factor = factor.reshape(*loc_shape, *factor.shape[-2:])
            self.shrinkage = shrinkage.reshape(loc_shape)
        else:
            self.mean, self.cholesky_factor, self.shrinkage = self._fit_batch(
                x.reshape(-1, x.shape[-1])
            )
        return x

    def _score_prepared(self, x: Tensor) -> Tensor:
        factor = self._fitted("call fit() first")
        d = self.mean.shape[-1]
        if x.shape[-1] != d:
            raise ValueError(
                f"features have dimension {x.shape[-1]} but the density was fitted on {d}"
            )
        x = x.to(factor.device)
        if self.mean.ndim == 1:
            return mahalanobis(x.reshape(-1, d), self.mean, factor).reshape(x.shape[:-1])
        loc_shape = self.mean.shape[:-1]
        if tuple(x.shape[1:-1]) != tuple(loc_shape):
            raise ValueError(
                f"features have locations {tuple(x.shape[1:-1])}, density has {tuple(loc_shape)}"
            )
        xl = x.reshape(x.shape[0], -1, d).movedim(0, 1)  # (L, M, D)
        mean = self.mean.reshape(-1, d)
        factor = factor.reshape(-1, d, d)
        c = self.chunk_size
        out = torch.cat(
            [
                mahalanobis(xl[i : i + c], mean[i : i + c], factor[i : i + c])
                for i in range(0, xl.shape[0], c)
            ]
        )  # (L, M)
        return out.movedim(0, 1).reshape(x.shape[:-1])

    def score(self, features: Tensor | Embeddings) -> Tensor:
        """Squared Mahalanobis distance of each feature vector: (M, D) -> (M,), (M, *loc, D) -> (M, *loc).

        Float64 on the density's device. Each score depends only on its own row (never on the other
        test images).
        """
        return super().score(features)

    def _fitted(self, hint: str) -> Tensor:
        if self.cholesky_factor is None:
            raise RuntimeError(f"GaussianDensity is not fitted: {hint}")
        return self.cholesky_factor

    @property
    def covariance(self) -> Tensor:
        """The fitted covariance ``L L^T`` (float64)."""
        factor = self._fitted("call fit() first")
        return factor @ factor.mT

    @property
    def precision(self) -> Tensor:
        """``Sigma^{-1}`` from the Cholesky factor (for inspection; scoring never forms it)."""
        return torch.cholesky_inverse(self._fitted("call fit() first"))

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safe with ``torch.load(weights_only=True)``); settings are in :meth:`config`."""
        self._fitted("nothing to save")
        return {name: getattr(self, name) for name in self._tensor_names}

    def load_state_dict(self, state: dict[str, Tensor]) -> Self:
        missing = set(self._tensor_names) - set(state)
        if missing:
            raise ValueError(f"GaussianDensity state is missing {sorted(missing)}")
        mean, factor = state["mean"], state["cholesky_factor"]
        if factor.shape != (*mean.shape, mean.shape[-1]):
            raise ValueError(
                f"inconsistent state: mean {tuple(mean.shape)}, cholesky {tuple(factor.shape)}"
            )
        for name in self._tensor_names:
            setattr(self, name, state[name])
        return self
