"""What every density estimator shares: the fit guard, feature preparation, cross-fitted
training-score statistics (to put ensemble members on one scale) and moving its tensors."""

from __future__ import annotations

import warnings
from typing import ClassVar, Self

import torch
from torch import Tensor

from cutpaste_lib.density.covariance import SingularCovarianceError
from cutpaste_lib.density.crossfit import cross_fit
from cutpaste_lib.density.embeddings import Embeddings, fit_input
from cutpaste_lib.density.features import as_float64, check_finite, l2_normalize

MIN_TRAIN_IMAGES = 2  # a Gaussian (or a KDE bandwidth) needs at least two points
TRAIN_STATS_ROWS = 4096
CROSS_FIT_MIN_ROWS = 6  # 3 per half: a Ledoit-Wolf Gaussian of 2 points is singular


class Density:
    """Base of :class:`GaussianDensity` and :class:`GaussianKDE`.

    Subclasses implement ``_fit_prepared`` (fit on prepared features), ``_score_prepared``,
    ``config`` and name their fitted tensors in ``_tensor_names``.
    """

    normalize: bool
    train_score_mean: Tensor | None = None
    train_score_std: Tensor | None = None
    _tensor_names: ClassVar[tuple[str, ...]] = ("train_score_mean", "train_score_std")

    def config(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def _fit_prepared(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Fit on prepared features; returns them as the estimator sees them (its training rows)."""
        raise NotImplementedError

    def _score_prepared(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _unfitted_copy(self) -> Self:
        """A new, unfitted estimator with the same settings (for the cross-fitting folds)."""
        return type(self)(**self.config())

    def fit(self, data: Embeddings) -> Self:
        """Fit on embeddings of clean train images (see :class:`Embeddings`). Returns ``self``."""
        return self.fit_clean_features(fit_input(data))

    def fit_clean_features(self, features: Tensor) -> Self:
        """Fit on a raw tensor that the caller vouches holds features of clean (un-augmented) train images.

        Prefer :meth:`fit` with an :class:`Embeddings`; this is for code that already checked provenance
        (e.g. dense patch features of the clean train cache).
        """
        x = self._fit_prepared(self._prepare(features, "training features"))
        self._set_train_stats(x)
        return self

    def score(self, features: Tensor | Embeddings) -> Tensor:
        """The anomaly score of each feature vector (higher = more anomalous), float64.

        Each score depends only on its own row (never on the other test images).
        """
        return self._score_prepared(self._prepare(features, "features to score"))

    def _prepare(self, x: Tensor | Embeddings, what: str) -> Tensor:
        if isinstance(x, Embeddings):
            x = x.features
        check_finite(x, what)
        return l2_normalize(as_float64(x)) if self.normalize else x

    def _set_train_stats(self, x: Tensor) -> None:
        """Mean and std of **cross-fitted** training scores (:meth:`cross_fitted_scores`), from at
        most ``TRAIN_STATS_ROWS`` evenly spaced training rows.

        They put ensemble members on a common scale, so they must describe how a *new* clean image
        scores. In-sample scores do not: a Gaussian fitted on N < D images gives its own images
        distances several times smaller, and less spread, than held-out clean ones, by an amount
        that varies from model to model. A subset is plenty for two statistics; MVTec categories
        have fewer training images than that, so there every row is used.
        """
        if x.shape[0] > TRAIN_STATS_ROWS:
            x = x[
                torch.linspace(0, x.shape[0] - 1, TRAIN_STATS_ROWS, device=x.device).round().long()
            ]
        train_scores = self._cross_fitted_prepared(x)
        # Per location for dense features: (N, *locations) -> (*locations).
        self.train_score_mean = train_scores.mean(0)
        self.train_score_std = train_scores.std(0, unbiased=True)

    def cross_fitted_scores(self, features: Tensor | Embeddings, *, folds: int = 2) -> Tensor:
        """Out-of-fold scores of clean training features: two-fold cross-fitting by default.

        ``folds > 2`` fits each fold's estimator on all other rows (``1 - 1/folds`` of them), so the
        scores come closer to those the estimator fitted on all rows gives new clean images: a
        decision threshold needs that (:mod:`cutpaste_lib.detector.threshold`; with fewer images
        than dimensions a Ledoit–Wolf Gaussian on half the rows scores new images lower).

        The even-indexed rows are scored by the same estimator (same settings) fitted on the odd
        rows, and vice versa (:func:`~cutpaste_lib.density.crossfit.cross_fit`), so every score
        is that of an image its density has not seen, as a clean test image would be. Returns the
        in-sample scores of this (fitted) estimator instead when there is too little to
        cross-fit: fewer than 6 rows (a Ledoit–Wolf Gaussian of 2 points is singular), or halves
        too small for the estimator (the "empirical" covariance needs more than D rows per half;
        a warning says so). Same shape and dtype as :meth:`score`.
        """
        return self._cross_fitted_prepared(self._prepare(features, "training features"), folds)

    def _cross_fitted_prepared(self, x: Tensor, folds: int = 2) -> Tensor:
        if x.shape[0] < CROSS_FIT_MIN_ROWS:
            return self._score_prepared(x)

        def fit(rows: Tensor) -> Density:
            half = self._unfitted_copy()
            half._fit_prepared(x[rows])  # x is already prepared: no second normalisation
            return half

        try:
            return cross_fit(
                x.shape[0],
                fit=fit,
                score=lambda half, rows: half._score_prepared(x[rows]),
                device=x.device,
                folds=min(folds, x.shape[0]),
            )
        except SingularCovarianceError:
            warnings.warn(
                f"cross-fitting needs a Gaussian on half of the {x.shape[0]} training rows, and "
                f"that covariance is singular ({self.config()}); the training-score statistics "
                "are in-sample (too small when rows are few): prefer 'ledoit_wolf' or 'ridge'",
                stacklevel=3,
            )
            return self._score_prepared(x)

    def standardize(self, scores: Tensor) -> Tensor:
        """``(scores - mean) / std`` with the statistics of this density's **training** scores."""
        if self.train_score_mean is None:
            raise RuntimeError("call fit() before standardize()")
        mean = self.train_score_mean.to(scores.device)
        std = self.train_score_std.to(scores.device).clamp_min(1e-12)
        return (scores - mean) / std

    def to(self, device: str | torch.device) -> Self:
        """Move the fitted tensors to ``device``; returns ``self``."""
        for name in self._tensor_names:
            value = getattr(self, name)
            if value is not None:
                setattr(self, name, value.to(device))
        return self
