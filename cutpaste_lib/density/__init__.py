"""Density estimation on learned representations: the Gaussian density estimator (GDE) and a KDE.

CutPaste detects anomalies by fitting a multivariate Gaussian to the representations of
**clean** training images and scoring a test image by its squared Mahalanobis distance

    s(x) = (x - mu)^T Sigma^{-1} (x - mu).

With fewer images than feature dimensions the empirical covariance is singular, so by default
Sigma is the Ledoit–Wolf shrinkage estimate ``(1 - a) S + a (tr S / D) I``. The score is computed
through the Cholesky factor ``Sigma = L L^T`` (``||L^{-1}(x - mu)||^2`` with a triangular solve;
no explicit inverse), and the covariance is accumulated in float64, on CPU or GPU.

The modules, in the order the data pass through them:

* :mod:`~cutpaste_lib.density.features`: finite check and L2 normalisation;
* :mod:`~cutpaste_lib.density.embeddings`: :class:`Embeddings` (features plus where they came
  from) and :func:`check_provenance`, which refuses test, defective and augmented images;
* :mod:`~cutpaste_lib.density.covariance`: functional, batched cores on ``(..., N, D)`` tensors
  (:func:`empirical_covariance`, :func:`ledoit_wolf`, :func:`shrink_ledoit_wolf`,
  :func:`cholesky`, :func:`mahalanobis`), so localization can fit one Gaussian per location in
  one call;
* :mod:`~cutpaste_lib.density.crossfit`: :func:`cross_fit`, the two-fold out-of-fold scores;
* :mod:`~cutpaste_lib.density.estimator`, :mod:`~cutpaste_lib.density.gaussian`,
  :mod:`~cutpaste_lib.density.kde`: the estimators :class:`GaussianDensity` and
  :class:`GaussianKDE`, whose ``fit`` takes an :class:`Embeddings`; raw tensors are accepted
  only by the explicitly named :meth:`GaussianDensity.fit_clean_features`;
* :mod:`~cutpaste_lib.density.methods` and :mod:`~cutpaste_lib.density.ensemble`: estimators
  by name, and ensembles standardised by training scores.

Example:
    >>> import torch
    >>> from cutpaste_lib.density import Embeddings, GaussianDensity
    >>> train = Embeddings.clean_train(torch.randn(50, 8, generator=torch.Generator().manual_seed(0)))
    >>> gde = GaussianDensity().fit(train)
    >>> gde.score(torch.zeros(3, 8)).shape
    torch.Size([3])
"""

from cutpaste_lib.density.covariance import (
    SingularCovarianceError,
    cholesky,
    empirical_covariance,
    ledoit_wolf,
    mahalanobis,
    shrink_ledoit_wolf,
)
from cutpaste_lib.density.crossfit import cross_fit, fold_rows
from cutpaste_lib.density.embeddings import Embeddings, ProvenanceError, check_provenance
from cutpaste_lib.density.ensemble import ensemble_scores
from cutpaste_lib.density.estimator import MIN_TRAIN_IMAGES
from cutpaste_lib.density.features import NonFiniteFeaturesError, check_finite, l2_normalize
from cutpaste_lib.density.gaussian import COVARIANCE_METHODS, CovarianceMethod, GaussianDensity
from cutpaste_lib.density.kde import GaussianKDE, kde_log_density, scott_bandwidth
from cutpaste_lib.density.methods import DENSITY_METHODS, make_density

__all__ = [
    "COVARIANCE_METHODS",
    "CovarianceMethod",
    "DENSITY_METHODS",
    "Embeddings",
    "GaussianDensity",
    "GaussianKDE",
    "MIN_TRAIN_IMAGES",
    "NonFiniteFeaturesError",
    "ProvenanceError",
    "SingularCovarianceError",
    "check_finite",
    "check_provenance",
    "cholesky",
    "cross_fit",
    "empirical_covariance",
    "ensemble_scores",
    "fold_rows",
    "kde_log_density",
    "l2_normalize",
    "ledoit_wolf",
    "make_density",
    "mahalanobis",
    "scott_bandwidth",
    "shrink_ledoit_wolf",
]
