"""Density estimation on learned representations: the Gaussian density estimator (GDE) and a KDE.

CutPaste detects anomalies by fitting a multivariate Gaussian to the representations of
**clean** training images and scoring a test image by its squared Mahalanobis distance

    s(x) = (x - mu)^T Sigma^{-1} (x - mu).

With fewer images than feature dimensions the empirical covariance is singular, so by default
Sigma is the Ledoit–Wolf shrinkage estimate ``(1 - a) S + a (tr S / D) I``. The score is computed
through the Cholesky factor ``Sigma = L L^T`` (``||L^{-1}(x - mu)||^2`` with a triangular solve;
no explicit inverse), and the covariance is accumulated in float64, on CPU or GPU.

Two layers:

* functional, batched cores on ``(..., N, D)`` tensors: :func:`empirical_covariance`,
  :func:`ledoit_wolf`, :func:`cholesky`, :func:`mahalanobis` (so localization can fit one
  Gaussian per location in one call);
* estimators :class:`GaussianDensity` and :class:`GaussianKDE` whose ``fit`` takes an
  :class:`Embeddings` object that carries where the features came from, and refuses test images,
  defective images and augmented (CutPaste / Scar) images. Raw tensors are accepted only by the
  explicitly named :meth:`GaussianDensity.fit_clean_features`.

Example:
    >>> import torch
    >>> from cutpaste_lib.density import Embeddings, GaussianDensity
    >>> train = Embeddings.clean_train(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)))
    >>> gde = GaussianDensity().fit(train)
    >>> gde.score(torch.zeros(3, 8)).shape
    torch.Size([3])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from cutpaste_lib.errors import CutPasteError

__all__ = [
    "COVARIANCE_METHODS",
    "DENSITY_METHODS",
    "Embeddings",
    "GaussianDensity",
    "GaussianKDE",
    "MIN_TRAIN_IMAGES",
    "NonFiniteFeaturesError",
    "ProvenanceError",
    "SingularCovarianceError",
    "check_finite",
    "cholesky",
    "empirical_covariance",
    "ensemble_scores",
    "kde_log_density",
    "l2_normalize",
    "ledoit_wolf",
    "make_density",
    "mahalanobis",
    "scott_bandwidth",
]

CovarianceMethod = Literal["ledoit_wolf", "ridge", "empirical"]
COVARIANCE_METHODS: tuple[str, ...] = ("ledoit_wolf", "ridge", "empirical")
DENSITY_METHODS: tuple[str, ...] = (*COVARIANCE_METHODS, "kde")
MIN_TRAIN_IMAGES = 2  # a Gaussian (or a KDE bandwidth) needs at least two points
_TRAIN_STATS_ROWS = 4096
_CROSS_FIT_MIN_ROWS = 6  # 3 per half: a Ledoit-Wolf Gaussian of 2 points is singular


class NonFiniteFeaturesError(CutPasteError, ValueError):
    """Features contain NaN or inf (usually a diverged or corrupt model)."""


class SingularCovarianceError(CutPasteError, ValueError):
    """The covariance cannot be factored (not positive definite): choose a regularised estimator."""


class ProvenanceError(CutPasteError, ValueError):
    """Features that must not be used to fit a density (test, defective or augmented images)."""


# ---------------------------------------------------------------- helpers


def check_finite(x: Tensor, what: str = "features") -> Tensor:
    """Raise :class:`NonFiniteFeaturesError` naming how many NaN / inf values ``x`` holds."""
    if not torch.is_tensor(x):
        raise TypeError(f"{what}: expected a torch.Tensor, got {type(x).__name__}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_nan = int(torch.isnan(x).sum())
        n_inf = int(torch.isinf(x).sum())
        raise NonFiniteFeaturesError(
            f"{what} contain {n_nan} NaN and {n_inf} inf values (shape {tuple(x.shape)}): the model "
            "that produced them has probably diverged or the checkpoint is corrupt"
        )
    return x


def l2_normalize(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Divide each feature vector (last dimension) by its L2 norm, as the authors' sister code does."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def _as_float64(x: Tensor) -> Tensor:
    return x.to(torch.float64) if x.dtype != torch.float64 else x


# ---------------------------------------------------------------- functional cores


def _center(x: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 mean and centered samples, without a separate float64 copy of ``x``."""
    mean = x.mean(dim=-2, dtype=torch.float64)
    return mean, torch.sub(x, mean.unsqueeze(-2)).to(torch.float64)


def _gram(xc: Tensor) -> Tensor:
    """``xc^T xc`` (..., D, D) computing only the lower block triangle (10/16 of a full product's flops)."""
    d = xc.shape[-1]
    if d < 256:
        return xc.mT @ xc
    b = -(-d // 4)
    out = xc.new_empty(*xc.shape[:-2], d, d)
    for i in range(0, d, b):
        block = xc[..., i : i + b].mT @ xc[..., : i + b]  # rows i..i+b, columns 0..i+b
        out[..., i : i + b, : i + b] = block
        out[..., :i, i : i + b] = block[..., :, :i].mT
    return out


def empirical_covariance(x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and maximum-likelihood covariance (divides by N, like scikit-learn) of ``x`` (..., N, D).

    Returns ``(mean (..., D), covariance (..., D, D))`` in float64.
    """
    mean, xc = _center(x)
    return mean, _gram(xc) / x.shape[-2]


def _ledoit_wolf_from_centered(xc: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """Ledoit–Wolf shrinkage given centered samples ``xc`` (..., N, D) and ``cov = xc^T xc / N``."""
    n, d = xc.shape[-2], xc.shape[-1]
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    mu = trace / d
    # Same estimator as sklearn.covariance.ledoit_wolf_shrinkage, in closed forms that avoid a second
    # D x D product: sum((X^2)^T X^2) = sum_n ||x_n||^4 and sum((X^T X)^2) / N^2 = ||S||_F^2.
    row_sq = (xc * xc).sum(-1)
    beta_ = (row_sq * row_sq).sum(-1)
    delta_ = (cov * cov).sum((-2, -1))
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu * mu) / d  # ||S - mu I||_F^2 / D
    beta = torch.minimum(beta, delta)
    shrinkage = torch.where(beta > 0, beta / torch.where(delta > 0, delta, 1.0), 0.0)
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    shrunk = (1.0 - shrinkage)[..., None, None] * cov + (shrinkage * mu)[..., None, None] * eye
    return shrunk, shrinkage


def ledoit_wolf(x: Tensor) -> tuple[Tensor, Tensor]:
    """Ledoit–Wolf shrunk covariance of ``x`` (..., N, D), batched over the leading dimensions.

    ``Sigma = (1 - a) S + a mu I`` with ``S`` the maximum-likelihood covariance, ``mu = tr(S) / D`` and
    the shrinkage ``a`` estimated from the data (Ledoit & Wolf, 2004), exactly the estimator of
    ``sklearn.covariance.LedoitWolf`` (``assume_centered=False``). Works for N < D.

    Returns:
        ``(covariance (..., D, D) float64, shrinkage (...) float64)``.
    """
    if x.shape[-2] < 2:
        raise ValueError(f"ledoit_wolf needs at least 2 samples, got {x.shape[-2]}")
    _, xc = _center(x)
    return _ledoit_wolf_from_centered(xc, _gram(xc) / x.shape[-2])


def cholesky(covariance: Tensor) -> Tensor:
    """Lower Cholesky factor ``L`` (..., D, D) of ``covariance``; a clear error when it is not positive definite."""
    factor, info = torch.linalg.cholesky_ex(covariance)
    if bool((info > 0).any()):
        raise SingularCovarianceError(
            "the covariance is singular or not positive definite (fewer images than feature dimensions, "
            "or constant features): use the 'ledoit_wolf' or 'ridge' covariance instead of 'empirical'"
        )
    return factor


def mahalanobis(x: Tensor, mean: Tensor, cholesky: Tensor) -> Tensor:
    """**Squared** Mahalanobis distance ``(x - mu)^T Sigma^{-1} (x - mu)``, the paper's anomaly score.

    Args:
        x: points (..., M, D).
        mean: means (..., D), broadcast against ``x``'s leading dimensions.
        cholesky: lower Cholesky factors (..., D, D) of the covariances (``Sigma = L L^T``).

    Returns:
        (..., M) squared distances, ``||L^{-1}(x - mu)||^2`` via a triangular solve (no inverse), in
        the dtype of ``cholesky`` (float64 when produced by this module).
    """
    # (x - mu) laid out as columns (..., D, M), contiguous: the fastest layout for the triangular solve.
    diff = (x.mT - mean.to(cholesky.dtype).unsqueeze(-1)).to(cholesky.dtype).contiguous()
    z = torch.linalg.solve_triangular(cholesky, diff, upper=False)  # z = L^{-1}(x - mu)
    return (z * z).sum(-2)


def scott_bandwidth(x: Tensor) -> float:
    """Scott's rule for an isotropic Gaussian kernel: ``h = sigma * N^(-1 / (D + 4))``.

    ``sigma^2`` is the mean per-dimension variance. This scales the rule by the data's spread as
    scipy's ``gaussian_kde`` does (sklearn's ``bandwidth="scott"`` omits ``sigma``, which is only
    sensible for standardised data; L2-normalised features have ``sigma ~ 1 / sqrt(D)``).
    """
    x = _as_float64(x.reshape(-1, x.shape[-1]))
    n, d = x.shape
    sigma = math.sqrt(float(x.var(dim=0, unbiased=False).mean()))
    return sigma * n ** (-1.0 / (d + 4))


def kde_log_density(
    x: Tensor, train: Tensor, bandwidth: float, *, chunk_size: int = 4096
) -> Tensor:
    """Log density of an isotropic Gaussian KDE, ``log (1/N) sum_i N(x; x_i, h^2 I)``, for ``x`` (M, D).

    Matches ``sklearn.neighbors.KernelDensity(kernel="gaussian", bandwidth=h).score_samples``.
    Computed in float64 in chunks of test points (memory ``chunk_size x N``).
    """
    if not bandwidth > 0:
        raise ValueError(f"KDE bandwidth must be > 0, got {bandwidth}")
    train = _as_float64(train)
    x = _as_float64(x).to(train.device)
    n, d = train.shape
    t_sq = (train * train).sum(-1)
    norm = math.log(n) + 0.5 * d * math.log(2.0 * math.pi * bandwidth**2)
    out = []
    for start in range(0, x.shape[0], chunk_size):
        xb = x[start : start + chunk_size]
        sq = ((xb * xb).sum(-1, keepdim=True) + t_sq - 2.0 * xb @ train.mT).clamp_min(0.0)
        out.append(torch.logsumexp(-0.5 * sq / bandwidth**2, dim=-1) - norm)
    return torch.cat(out) if out else x.new_zeros(0)


# ---------------------------------------------------------------- provenance


@dataclass(frozen=True)
class Embeddings:
    """Features plus where they came from, so a density cannot be fitted on the wrong images by accident.

    Build it with :meth:`from_cache` (what :func:`cutpaste_lib.evaluate.embed` does) or
    :meth:`clean_train`. Only ``split == "train"``, all labels 0 and ``augmentation is None`` may
    be fitted.

    Attributes:
        features: (N, D) pooled features or (N, *locations, D) dense patch features.
        labels: int64 (N,), 0 good / 1 defective.
        defects: N defect names ("good" for good images).
        split: "train" or "test".
        category: dataset category ("" when unknown).
        augmentation: None for real images; the proxy-task augmentation ("cutpaste", "scar", ...)
            applied to them otherwise (such embeddings are for figures only, never for fitting).
    """

    features: Tensor
    labels: Tensor
    defects: tuple[str, ...]
    split: str
    category: str = ""
    augmentation: str | None = None
    paths: tuple = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.features) or self.features.ndim < 2:
            raise ValueError(
                "Embeddings.features must be a tensor of shape (N, D) or (N, *locations, D)"
            )
        n = self.features.shape[0]
        labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1).cpu()
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "defects", tuple(self.defects))
        object.__setattr__(self, "paths", tuple(self.paths))
        if labels.numel() != n or len(self.defects) != n or (self.paths and len(self.paths) != n):
            raise ValueError(
                f"Embeddings: {n} feature rows but {labels.numel()} labels, {len(self.defects)} defect names"
                f" and {len(self.paths)} paths"
            )

    @classmethod
    def from_cache(cls, cache, features: Tensor, *, augmentation: str | None = None) -> Embeddings:
        """Attach an :class:`~cutpaste_lib.data.ImageCache`'s split, labels, defects and paths to ``features``."""
        if features.shape[0] != len(cache):
            raise ValueError(
                f"{features.shape[0]} feature rows for an image cache of {len(cache)} images"
            )
        return cls(
            features=features,
            labels=cache.labels,
            defects=tuple(cache.defects),
            split=str(cache.split),
            category=str(getattr(cache, "category", "")),
            augmentation=augmentation,
            paths=tuple(getattr(cache, "paths", ())),
        )

    @classmethod
    def clean_train(cls, features: Tensor, *, category: str = "") -> Embeddings:
        """Declare ``features`` to come from un-augmented, defect-free training images (tests, notebooks)."""
        n = features.shape[0]
        return cls(features, torch.zeros(n, dtype=torch.int64), ("good",) * n, "train", category)

    def __len__(self) -> int:
        return self.features.shape[0]

    def check_fittable(self) -> None:
        """Raise :class:`ProvenanceError` unless these are embeddings of clean training images."""
        if self.augmentation is not None:
            raise ProvenanceError(
                f"refusing to fit a density on {self.augmentation!r}-augmented embeddings: the detector must "
                "model clean images only (fitting on proxy-task augmentations leaks them into the detector)"
            )
        if self.split != "train":
            raise ProvenanceError(
                f"refusing to fit a density on the {self.split!r} split: fit on the train split only "
                "(a density fitted on test images would score them with test-set information)"
            )
        if bool((self.labels != 0).any()):
            raise ProvenanceError(
                f"refusing to fit a density on {int((self.labels != 0).sum())} defective images: "
                "fit on defect-free images only"
            )


def _fit_input(data: Embeddings) -> Tensor:
    if torch.is_tensor(data):
        raise TypeError(
            "fit() takes an Embeddings object (e.g. cutpaste_lib.evaluate.embed(model, train_cache)), so the "
            "density cannot be fitted on augmented or test images by accident; for a tensor you know holds "
            "clean train features, call fit_clean_features(features)"
        )
    if not isinstance(data, Embeddings):
        raise TypeError(f"fit() takes an Embeddings object, got {type(data).__name__}")
    data.check_fittable()
    return data.features


# ---------------------------------------------------------------- estimators


class _Density:
    """Shared fitting guard and training-score statistics (for ensembles)."""

    normalize: bool
    train_score_mean: Tensor | None = None
    train_score_std: Tensor | None = None

    def fit(self, data: Embeddings):
        """Fit on embeddings of clean train images (see :class:`Embeddings`). Returns ``self``."""
        return self.fit_clean_features(_fit_input(data))

    def fit_clean_features(self, features: Tensor):  # pragma: no cover - abstract
        raise NotImplementedError

    def _prepare(self, x: Tensor | Embeddings, what: str) -> Tensor:
        if isinstance(x, Embeddings):
            x = x.features
        check_finite(x, what)
        return l2_normalize(_as_float64(x)) if self.normalize else x

    def _set_train_stats(self, x: Tensor) -> None:
        """Mean and std of **cross-fitted** training scores (:meth:`cross_fitted_scores`), from at
        most 4,096 evenly spaced training rows.

        They put ensemble members on a common scale, so they must describe how a *new* clean image
        scores. In-sample scores do not: a Gaussian fitted on N < D images gives its own images
        distances several times smaller, and less spread, than held-out clean ones, by an amount
        that varies from model to model. A subset is plenty for two statistics; MVTec categories
        have fewer than 4,096 training images, where every row is used.
        """
        if not self._train_stats:
            return
        if x.shape[0] > _TRAIN_STATS_ROWS:
            x = x[
                torch.linspace(0, x.shape[0] - 1, _TRAIN_STATS_ROWS, device=x.device).round().long()
            ]
        train_scores = self._cross_fitted_prepared(x)
        # Per location for dense features: (N, *locations) -> (*locations).
        self.train_score_mean = train_scores.mean(0)
        self.train_score_std = train_scores.std(0, unbiased=True)

    _train_stats = True  # False on the half-data copies that cross_fitted_scores fits

    def cross_fitted_scores(self, features: Tensor | Embeddings) -> Tensor:
        """Out-of-fold scores of clean training features: two-fold cross-fitting.

        The even-indexed rows are scored by the same estimator (same settings) fitted on the odd
        rows, and vice versa, so every score is that of an image its density has not seen, as a
        clean test image would be. Returns the in-sample scores of this (fitted) estimator
        instead when there is too little to cross-fit: fewer than 6 rows (a Ledoit–Wolf
        Gaussian of 2 points is singular), or halves too small for the estimator (the
        "empirical" covariance needs more than D rows per half; a warning says so).
        Same shape and dtype as :meth:`score`.
        """
        return self._cross_fitted_prepared(self._prepare(features, "training features"))

    def _cross_fitted_prepared(self, x: Tensor) -> Tensor:
        if x.shape[0] < _CROSS_FIT_MIN_ROWS:
            return self._score_prepared(x)
        settings = {**self.config(), "normalize": False}  # x is already prepared
        out = None
        even = torch.arange(0, x.shape[0], 2, device=x.device)
        odd = torch.arange(1, x.shape[0], 2, device=x.device)
        for fit_rows, score_rows in ((odd, even), (even, odd)):
            half = type(self)(**settings)
            half._train_stats = False
            if hasattr(self, "chunk_size"):
                half.chunk_size = self.chunk_size
            try:
                half.fit_clean_features(x[fit_rows])
            except SingularCovarianceError:
                warnings.warn(
                    f"cross-fitting needs a Gaussian on half of the {x.shape[0]} training rows, and "
                    f"that covariance is singular ({self.config()}); the training-score statistics "
                    "are in-sample (too small when rows are few): prefer 'ledoit_wolf' or 'ridge'",
                    stacklevel=3,
                )
                return self._score_prepared(x)
            scores = half._score_prepared(x[score_rows])
            if out is None:
                out = scores.new_empty((x.shape[0], *scores.shape[1:]))
            out[score_rows] = scores
        return out

    def standardize(self, scores: Tensor) -> Tensor:
        """``(scores - mean) / std`` with the statistics of this density's **training** scores."""
        if self.train_score_mean is None:
            raise RuntimeError("call fit() before standardize()")
        mean = self.train_score_mean.to(scores.device)
        std = self.train_score_std.to(scores.device).clamp_min(1e-12)
        return (scores - mean) / std


class GaussianDensity(_Density):
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

    def _fit_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x (..., N, D) float64 -> mean, Cholesky factor, shrinkage."""
        if x.shape[-2] < MIN_TRAIN_IMAGES:
            raise ValueError(
                f"need at least {MIN_TRAIN_IMAGES} training images to fit a Gaussian, got {x.shape[-2]}"
            )
        mean, xc = _center(x)
        cov = _gram(xc) / x.shape[-2]
        shrinkage = torch.zeros(cov.shape[:-2], dtype=cov.dtype, device=cov.device)
        if self.covariance_method == "ledoit_wolf":
            cov, shrinkage = _ledoit_wolf_from_centered(xc, cov)
        elif self.covariance_method == "ridge":
            cov = cov + self.ridge * torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
        return mean, cholesky(cov), shrinkage

    def fit_clean_features(self, features: Tensor) -> GaussianDensity:
        """Fit on a raw tensor that the caller vouches holds features of clean (un-augmented) train images.

        Prefer :meth:`fit` with an :class:`Embeddings`; this is for code that already checked provenance
        (e.g. dense patch features of the clean train cache).
        """
        x = self._prepare(features, "training features")
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
        self._set_train_stats(x)
        return self

    def _score_prepared(self, x: Tensor) -> Tensor:
        if self.cholesky_factor is None:
            raise RuntimeError("GaussianDensity is not fitted: call fit() first")
        d = self.mean.shape[-1]
        if x.shape[-1] != d:
            raise ValueError(
                f"features have dimension {x.shape[-1]} but the density was fitted on {d}"
            )
        x = x.to(self.cholesky_factor.device)
        if self.mean.ndim == 1:
            return mahalanobis(x.reshape(-1, d), self.mean, self.cholesky_factor).reshape(
                x.shape[:-1]
            )
        loc_shape = self.mean.shape[:-1]
        if tuple(x.shape[1:-1]) != tuple(loc_shape):
            raise ValueError(
                f"features have locations {tuple(x.shape[1:-1])}, density has {tuple(loc_shape)}"
            )
        xl = x.reshape(x.shape[0], -1, d).movedim(0, 1)  # (L, M, D)
        mean = self.mean.reshape(-1, d)
        factor = self.cholesky_factor.reshape(-1, d, d)
        out = torch.cat(
            [
                mahalanobis(
                    xl[i : i + self.chunk_size],
                    mean[i : i + self.chunk_size],
                    factor[i : i + self.chunk_size],
                )
                for i in range(0, xl.shape[0], self.chunk_size)
            ]
        )  # (L, M)
        return out.movedim(0, 1).reshape(x.shape[:-1])

    def score(self, features: Tensor | Embeddings) -> Tensor:
        """Squared Mahalanobis distance of each feature vector: (M, D) -> (M,), (M, *loc, D) -> (M, *loc).

        Float64 on the density's device. Each score depends only on its own row (never on the other
        test images).
        """
        return self._score_prepared(self._prepare(features, "features to score"))

    @property
    def covariance(self) -> Tensor:
        """The fitted covariance ``L L^T`` (float64)."""
        if self.cholesky_factor is None:
            raise RuntimeError("GaussianDensity is not fitted: call fit() first")
        return self.cholesky_factor @ self.cholesky_factor.mT

    @property
    def precision(self) -> Tensor:
        """``Sigma^{-1}`` from the Cholesky factor (for inspection; scoring never forms it)."""
        if self.cholesky_factor is None:
            raise RuntimeError("GaussianDensity is not fitted: call fit() first")
        return torch.cholesky_inverse(self.cholesky_factor)

    def to(self, device: str | torch.device) -> GaussianDensity:
        for name in ("mean", "cholesky_factor", "shrinkage", "train_score_mean", "train_score_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors only (safe with ``torch.load(weights_only=True)``); settings are in :meth:`config`."""
        if self.cholesky_factor is None:
            raise RuntimeError("GaussianDensity is not fitted: nothing to save")
        return {
            "mean": self.mean,
            "cholesky_factor": self.cholesky_factor,
            "shrinkage": self.shrinkage,
            "train_score_mean": self.train_score_mean,
            "train_score_std": self.train_score_std,
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> GaussianDensity:
        missing = {
            "mean",
            "cholesky_factor",
            "shrinkage",
            "train_score_mean",
            "train_score_std",
        } - set(state)
        if missing:
            raise ValueError(f"GaussianDensity state is missing {sorted(missing)}")
        mean, factor = state["mean"], state["cholesky_factor"]
        if factor.shape != (*mean.shape, mean.shape[-1]):
            raise ValueError(
                f"inconsistent state: mean {tuple(mean.shape)}, cholesky {tuple(factor.shape)}"
            )
        for name in ("mean", "cholesky_factor", "shrinkage", "train_score_mean", "train_score_std"):
            setattr(self, name, state[name])
        return self


class GaussianKDE(_Density):
    """Isotropic Gaussian kernel density estimate; score = negative log density (higher = more anomalous).

    The paper compares KDE with the GDE and prefers the GDE: a KDE must keep every training
    embedding, its cost grows with N at test time, and in 512 dimensions it degenerates towards a
    nearest-neighbour distance.

    Args:
        bandwidth: kernel standard deviation ``h``, or "scott" (:func:`scott_bandwidth`, default).
        normalize: L2-normalise features first (default True, like :class:`GaussianDensity`).
    """

    def __init__(
        self, bandwidth: float | Literal["scott"] = "scott", *, normalize: bool = True
    ) -> None:
        if bandwidth != "scott" and not (isinstance(bandwidth, int | float) and bandwidth > 0):
            raise ValueError(f"bandwidth must be 'scott' or a positive number, got {bandwidth!r}")
        self.bandwidth_rule = bandwidth
        self.normalize = bool(normalize)
        self.bandwidth: float | None = None
        self.train: Tensor | None = None

    def config(self) -> dict:
        return {"bandwidth": self.bandwidth_rule, "normalize": self.normalize}

    def fit_clean_features(self, features: Tensor) -> GaussianKDE:
        """Fit on a raw tensor of clean train features (prefer :meth:`fit` with :class:`Embeddings`)."""
        x = self._prepare(features, "training features")
        x = x.reshape(-1, x.shape[-1])
        if x.shape[0] < MIN_TRAIN_IMAGES:
            raise ValueError(
                f"need at least {MIN_TRAIN_IMAGES} training images for a KDE, got {x.shape[0]}"
            )
        self.train = x
        self.bandwidth = (
            scott_bandwidth(x) if self.bandwidth_rule == "scott" else float(self.bandwidth_rule)
        )
        if not self.bandwidth > 0:
            raise ValueError("Scott's bandwidth is 0: the training features are all identical")
        self._set_train_stats(x)
        return self

    def _score_prepared(self, x: Tensor) -> Tensor:
        if self.train is None:
            raise RuntimeError("GaussianKDE is not fitted: call fit() first")
        shape = x.shape[:-1]
        return -kde_log_density(x.reshape(-1, x.shape[-1]), self.train, self.bandwidth).reshape(
            shape
        )

    def score(self, features: Tensor | Embeddings) -> Tensor:
        """Negative log density of each feature vector (float64, on the training features' device)."""
        return self._score_prepared(self._prepare(features, "features to score"))

    def to(self, device: str | torch.device) -> GaussianKDE:
        for name in ("train", "train_score_mean", "train_score_std"):
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self

    def state_dict(self) -> dict[str, Tensor]:
        if self.train is None:
            raise RuntimeError("GaussianKDE is not fitted: nothing to save")
        return {
            "train": self.train,
            "bandwidth": torch.tensor(self.bandwidth, dtype=torch.float64),
            "train_score_mean": self.train_score_mean,
            "train_score_std": self.train_score_std,
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> GaussianKDE:
        self.train = state["train"]
        self.bandwidth = float(state["bandwidth"])
        self.train_score_mean = state["train_score_mean"]
        self.train_score_std = state["train_score_std"]
        return self


def make_density(method: str = "ledoit_wolf", **kwargs) -> GaussianDensity | GaussianKDE:
    """``"ledoit_wolf" | "ridge" | "empirical"`` -> :class:`GaussianDensity`; ``"kde"`` -> :class:`GaussianKDE`."""
    if method == "kde":
        return GaussianKDE(**kwargs)
    if method in COVARIANCE_METHODS:
        return GaussianDensity(method, **kwargs)
    raise ValueError(f"unknown density {method!r}: choose one of {DENSITY_METHODS}")


def ensemble_scores(
    test_scores: Sequence[Tensor], train_scores: Sequence[Tensor] | None = None, *, densities=None
) -> Tensor:
    """Average of several models' scores, each first standardised with its **training**-score statistics.

    The paper ensembles 5 models; their scores live on different scales, so each is turned into
    ``(s - mean_train) / std_train`` before averaging. Test statistics are never used.

    Args:
        test_scores: one (M,) score tensor per model (same images, same order).
        train_scores: one tensor of training scores per model, or
        densities: the fitted densities (their stored training-score statistics are used).
    """
    if (train_scores is None) == (densities is None):
        raise ValueError("pass exactly one of train_scores or densities")
    if not test_scores:
        raise ValueError("ensemble_scores needs at least one model's scores")
    refs = train_scores if train_scores is not None else densities
    if len(refs) != len(test_scores):
        raise ValueError(
            f"{len(test_scores)} test score tensors but {len(refs)} training references"
        )
    shape = test_scores[0].shape
    total = torch.zeros(shape, dtype=torch.float64)
    for s, ref in zip(test_scores, refs):
        if s.shape != shape:
            raise ValueError(f"score tensors differ in shape: {tuple(s.shape)} vs {tuple(shape)}")
        s = check_finite(s, "scores").to(torch.float64).cpu()
        if train_scores is not None:
            t = check_finite(ref, "training scores").to(torch.float64).cpu()
            total += (s - t.mean()) / t.std().clamp_min(1e-12)
        else:
            total += ref.standardize(s.to(ref.train_score_mean.device)).cpu()
    return total / len(test_scores)
