"""Checks and normalisation applied to feature vectors before any density sees them."""

from __future__ import annotations

import torch
from torch import Tensor

from cutpaste_lib.errors import CutPasteError


class NonFiniteFeaturesError(CutPasteError, ValueError):
    """Features contain NaN or inf (usually a diverged or corrupt model)."""


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


def as_float64(x: Tensor) -> Tensor:
    """``x`` in float64 (``x`` itself when it already is)."""
    return x.to(torch.float64) if x.dtype != torch.float64 else x
