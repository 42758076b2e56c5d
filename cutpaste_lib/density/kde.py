"""An isotropic Gaussian kernel density estimate, the paper's alternative to the GDE.

The paper compares KDE with the GDE and prefers the GDE: a KDE must keep every training
embedding, its cost grows with N at test time, and in high dimensions it degenerates towards a
nearest-neighbour distance.
"""

from __future__ import annotations

import math
from typing import Literal, Self

import torch
from torch import Tensor

from cutpaste_lib.density.embeddings import Embeddings
from cutpaste_lib.density.estimator import MIN_TRAIN_IMAGES, Density
from cutpaste_lib.density.features import as_float64


def scott_bandwidth(x: Tensor) -> float:
    """Scott's rule for an isotropic Gaussian kernel: ``h = sigma * N^(-1 / (D + 4))``.

    ``sigma^2`` is the mean per-dimension variance. This scales the rule by the data's spread as
    scipy's ``gaussian_kde`` does (sklearn's ``bandwidth="scott"`` omits ``sigma``, which is only
    sensible for standardised data; L2-normalised features have ``sigma ~ 1 / sqrt(D)``).
    """
    x = as_float64(x.reshape(-1, x.shape[-1]))
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
    train = as_float64(train)
    x = as_float64(x).to(train.device)
    n, d = train.shape
    t_sq = (train * train).sum(-1)
    norm = math.log(n) + 0.5 * d * math.log(2.0 * math.pi * bandwidth**2)
    out = []
    for start in range(0, x.shape[0], chunk_size):
        xb = x[start : start + chunk_size]
        sq = ((xb * xb).sum(-1, keepdim=True) + t_sq - 2.0 * xb @ train.mT).clamp_min(0.0)
        out.append(torch.logsumexp(-0.5 * sq / bandwidth**2, dim=-1) - norm)
    return torch.cat(out) if out else x.new_zeros(0)


class GaussianKDE(Density):
    """Isotropic Gaussian kernel density estimate; score = negative log density (higher = more anomalous).

    Args:
        bandwidth: kernel standard deviation ``h``, or "scott" (:func:`scott_bandwidth`, default).
        normalize: L2-normalise features first (default True, like :class:`GaussianDensity`).
    """

    _tensor_names = ("train", "train_score_mean", "train_score_std")

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

    def _fit_prepared(self, x: Tensor) -> Tensor:
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
        return x

    def _score_prepared(self, x: Tensor) -> Tensor:
        if self.train is None:
            raise RuntimeError("GaussianKDE is not fitted: call fit() first")
        shape = x.shape[:-1]
        return -kde_log_density(x.reshape(-1, x.shape[-1]), self.train, self.bandwidth).reshape(
            shape
        )

    def score(self, features: Tensor | Embeddings) -> Tensor:
        """Negative log density of each feature vector (float64, on the training features' device)."""
        return super().score(features)

    def state_dict(self) -> dict[str, Tensor]:
        if self.train is None:
            raise RuntimeError("GaussianKDE is not fitted: nothing to save")
        return {
            "train": self.train,
            "bandwidth": torch.tensor(self.bandwidth, dtype=torch.float64),
            "train_score_mean": self.train_score_mean,
            "train_score_std": self.train_score_std,
        }

    def load_state_dict(self, state: dict[str, Tensor]) -> Self:
        self.train = state["train"]
        self.bandwidth = float(state["bandwidth"])
        self.train_score_mean = state["train_score_mean"]
        self.train_score_std = state["train_score_std"]
        return self
