"""Batched covariance estimators and the Mahalanobis distance, on ``(..., N, D)`` tensors in float64.

* :func:`empirical_covariance`: the maximum-likelihood covariance ``S`` (divides by N).
* :func:`ledoit_wolf`: ``(1 - a) S + a (tr S / D) I`` with the shrinkage ``a`` estimated from the
  data. Its one formula, :func:`shrink_ledoit_wolf`, takes sufficient statistics (``S``, N and
  the fourth moment), so it serves both centred samples held in memory and moments streamed in
  chunks (:class:`cutpaste_lib.localize.moments.StreamingMoments`).
* :func:`cholesky` and :func:`mahalanobis`: the score ``||L^{-1}(x - mu)||^2`` with ``Sigma = L L^T``,
  by a triangular solve (no explicit inverse).

Leading dimensions are batch dimensions, so localization fits one Gaussian per location in one call.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cutpaste_lib.errors import CutPasteError


class SingularCovarianceError(CutPasteError, ValueError):
    """The covariance cannot be factored (not positive definite): choose a regularised estimator."""


def center(x: Tensor) -> tuple[Tensor, Tensor]:
    """Float64 mean and centered samples, without a separate float64 copy of ``x``."""
    mean = x.mean(dim=-2, dtype=torch.float64)
    return mean, torch.sub(x, mean.unsqueeze(-2)).to(torch.float64)


def gram(xc: Tensor) -> Tensor:
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
    mean, xc = center(x)
    return mean, gram(xc) / x.shape[-2]


def shrink_ledoit_wolf(cov: Tensor, *, n: int, fourth_moment: Tensor) -> tuple[Tensor, Tensor]:
    """Ledoit–Wolf shrinkage from sufficient statistics: the one implementation of the formula.

    Args:
        cov: maximum-likelihood covariances ``S`` (..., D, D) about the sample mean.
        n: the number of samples behind ``S``.
        fourth_moment: ``sum_i ||x_i - mean||^4`` (...), over the same samples.

    Returns:
        ``(covariance (..., D, D), shrinkage (...))``: the estimator of
        ``sklearn.covariance.ledoit_wolf_shrinkage``, written in closed forms that avoid a second
        D x D product: ``sum((X^2)^T X^2) = sum_i ||x_i||^4`` and ``sum((X^T X)^2) / N^2 = ||S||_F^2``.
    """
    d = cov.shape[-1]
    trace = torch.diagonal(cov, dim1=-2, dim2=-1).sum(-1)
    mu = trace / d
    delta_ = (cov * cov).sum((-2, -1))
    beta = (fourth_moment / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace + d * mu * mu) / d  # ||S - mu I||_F^2 / D
    beta = torch.minimum(beta, delta)
    shrinkage = torch.where(beta > 0, beta / torch.where(delta > 0, delta, 1.0), 0.0)
    eye = torch.eye(d, dtype=cov.dtype, device=cov.device)
    shrunk = (1.0 - shrinkage)[..., None, None] * cov + (shrinkage * mu)[..., None, None] * eye
    return shrunk, shrinkage


def ledoit_wolf_from_centered(xc: Tensor, cov: Tensor) -> tuple[Tensor, Tensor]:
    """Ledoit–Wolf shrinkage given centered samples ``xc`` (..., N, D) and ``cov = xc^T xc / N``."""
    row_sq = (xc * xc).sum(-1)
    return shrink_ledoit_wolf(cov, n=xc.shape[-2], fourth_moment=(row_sq * row_sq).sum(-1))


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
    _, xc = center(x)
    return ledoit_wolf_from_centered(xc, gram(xc) / x.shape[-2])


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
