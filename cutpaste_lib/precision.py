"""Mixed precision: the one recipe for running the network in bf16 autocast with channels_last.

Every place that runs the network (training, the proxy confusion matrix, feature extraction for
the density, dense patch features, Grad-CAM) asks a :class:`Precision` how to run it, instead of
repeating ``if cuda: x = x.contiguous(channels_last)`` and ``torch.autocast(..., enabled=cuda)``.

Two policies:

- :func:`compute_precision` for training and for classifier predictions: bf16 autocast and
  channels_last on CUDA; fp32 elsewhere.
- :func:`feature_precision` for the features fed to a Gaussian density: channels_last on CUDA but
  fp32 arithmetic everywhere. The density inverts a covariance whose smallest eigenvalues carry
  the anomaly signal; bf16 keeps 8 bits of mantissa, so we do not round the features that feed it
  (README, "where we chose").
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch
from torch import Tensor


@dataclass(frozen=True)
class Precision:
    """How to run a network on one device: ``bf16`` autocast or not, ``channels_last`` or not."""

    device_type: str
    bf16: bool = False
    channels_last: bool = False

    def autocast(self) -> ContextManager:
        """The autocast context of this policy (a no-op context when ``bf16`` is off)."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def prepare(self, x: Tensor) -> Tensor:
        """``x`` in the memory format this policy runs in (a 4-D batch; other ranks unchanged)."""
        if self.channels_last and x.ndim == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def module_format(self) -> torch.memory_format:
        """The memory format to move a model to (``model.to(memory_format=...)``)."""
        return torch.channels_last if self.channels_last else torch.preserve_format


def _device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def compute_precision(device: str | torch.device) -> Precision:
    """Training and predictions: bf16 autocast + channels_last on CUDA, fp32 on any other device."""
    cuda = _device_type(device) == "cuda"
    return Precision(_device_type(device), bf16=cuda, channels_last=cuda)


def feature_precision(device: str | torch.device) -> Precision:
    """Features for a density: fp32 arithmetic everywhere, channels_last on CUDA (layout only)."""
    cuda = _device_type(device) == "cuda"
    return Precision(_device_type(device), bf16=False, channels_last=cuda)
