"""Mixed precision: the one recipe for running the network in bf16 autocast with channels_last.

Every place that runs the network (training, the proxy confusion matrix, feature extraction for
the density, dense patch features, Grad-CAM) asks a :class:`Precision` how to run it, instead of
repeating ``if cuda: x = x.contiguous(channels_last)`` and ``torch.autocast(..., enabled=cuda)``.

Two policies:

- :func:`compute_precision` for training and for classifier predictions: bf16 autocast and
  channels_last on CUDA, and on a CPU with native bf16 matrix units (AVX512-BF16 or AMX, see
  :func:`cpu_bf16_supported`); fp32 on any other CPU, where bf16 is emulated and slower.
  ``CUTPASTE_CPU_BF16=1``/``0`` forces the CPU choice either way.
- :func:`feature_precision` for the features fed to a Gaussian density: channels_last on CUDA but
  fp32 arithmetic everywhere. The density inverts a covariance whose smallest eigenvalues carry
  the anomaly signal, and bf16 keeps 8 bits of mantissa. Measured on fixed trained models, bf16
  features moved the image AUROC and the score ranking a little (benchmarks/RESULTS.md), not
  nothing, so we do not round the features that feed the density (README, "where we chose").
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Precision:
    """How to run a network on one device: ``bf16`` autocast or not, ``channels_last`` or not."""

    device_type: str
    bf16: bool = False
    channels_last: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
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


def cpu_bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles).

    ``CUTPASTE_CPU_BF16`` set to 1/0 (true/false, yes/no, on/off) overrides the detection.
    """
    forced = os.environ.get("CUTPASTE_CPU_BF16", "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if forced:
        raise ValueError(f"CUTPASTE_CPU_BF16 must be 1 or 0 (or unset), got {forced!r}")
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def compute_precision(device: str | torch.device) -> Precision:
    """Training and predictions: bf16 autocast + channels_last on CUDA and on a bf16-capable CPU
    (:func:`cpu_bf16_supported`); fp32 on any other device."""
    kind = _device_type(device)
    fast = kind == "cuda" or (kind == "cpu" and cpu_bf16_supported())
    return Precision(kind, bf16=fast, channels_last=fast)


def feature_precision(device: str | torch.device) -> Precision:
    """Features for a density: fp32 arithmetic everywhere, channels_last on CUDA (layout only)."""
    cuda = _device_type(device) == "cuda"
    return Precision(_device_type(device), bf16=False, channels_last=cuda)
