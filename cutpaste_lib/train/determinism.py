"""Seeds and the deterministic-algorithms switch of a run.

``deterministic=True`` turns on ``torch.use_deterministic_algorithms(True, warn_only=True)`` (ops
without a deterministic kernel warn instead of failing), turns cuDNN benchmarking off and asks
cuBLAS for a fixed workspace; everything it sets is put back when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator

import numpy as np
import torch

# cuBLAS reproducibility: read when cuBLAS starts (see the CUDA docs on "Results reproducibility").
CUBLAS_WORKSPACE_ENV = "CUBLAS_WORKSPACE_CONFIG"
CUBLAS_WORKSPACE_VALUE = ":4096:8"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms inside the block (or cuDNN autotuning on CUDA when not ``enabled``).

    Leaving the block, also by an exception, puts back everything it set: torch's deterministic
    switch and its warn-only flag, ``cudnn.benchmark`` and ``cudnn.deterministic``, and the
    ``CUBLAS_WORKSPACE_CONFIG`` environment variable (its previous value, or absent).
    """
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    previous_env = os.environ.get(CUBLAS_WORKSPACE_ENV)
    if enabled:
        os.environ.setdefault(CUBLAS_WORKSPACE_ENV, CUBLAS_WORKSPACE_VALUE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2:]
        if enabled:
            if previous_env is None:
                os.environ.pop(CUBLAS_WORKSPACE_ENV, None)
            else:
                os.environ[CUBLAS_WORKSPACE_ENV] = previous_env
