"""Run-time configuration shared by the library, the CLI and the notebooks.

One switch shrinks everything for CI and for a first read on a laptop:
``CUTPASTE_FAST=1`` (also ``true``/``yes``). Every notebook reads :func:`fast_mode`
in its first cell; :func:`settings` turns it into concrete sizes.

Example:
    >>> from cutpaste_lib import config
    >>> s = config.settings(fast=True)
    >>> s.image_size, s.steps
    (64, 30)
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
"""The checkout this package was installed from (editable install) or its parent folder."""

_TRUE = {"1", "true", "yes", "on"}


def fast_mode() -> bool:
    """True when ``CUTPASTE_FAST`` asks for the small, CPU-friendly settings."""
    return os.environ.get("CUTPASTE_FAST", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """Sizes used by notebooks and the demo. Full mode follows the paper (README: "Faithful to the paper")."""

    image_size: int
    steps: int
    batch_size: int  # original images per step (3-way: 3x as many classifier inputs)
    patch_size: int  # training crop of the patch model (paper: 64)
    dense_patch: int  # dense-extraction patch size at test time (paper A.5: 32)
    dense_stride: int
    synth_size: int  # source resolution of the generated synthetic images
    synth_train: int  # good training images per synthetic category

    def as_dict(self) -> dict:
        return asdict(self)


PAPER = Settings(
    image_size=256,
    steps=65_536,
    batch_size=32,
    patch_size=64,
    dense_patch=32,
    dense_stride=4,
    synth_size=256,
    synth_train=120,
)
FAST = Settings(
    image_size=64,
    steps=30,
    batch_size=8,
    patch_size=32,
    dense_patch=16,
    dense_stride=4,
    synth_size=128,
    synth_train=24,
)


def settings(fast: bool | None = None) -> Settings:
    """Paper settings, or the fast ones when ``fast`` (default: :func:`fast_mode`)."""
    return FAST if (fast_mode() if fast is None else fast) else PAPER


def data_root() -> Path:
    """Dataset root: ``CUTPASTE_DATA`` if set, else the generated synthetic set under ``data/``."""
    env = os.environ.get("CUTPASTE_DATA")
    if env:
        return Path(env).expanduser()
    return REPO_ROOT / "data" / ("synthetic_fast" if fast_mode() else "synthetic")


def shared_dataset(name: str) -> Path | None:
    """Find a dataset from the team's ``shared/datasets`` folder (never copied into the repo).

    Looks at ``CUTPASTE_<NAME>`` (e.g. ``CUTPASTE_BSDATA``) first, then at ``../shared/datasets/<name>``
    next to the checkout. Returns ``None`` when it is absent, so callers can skip visibly.
    """
    env = os.environ.get(f"CUTPASTE_{name.upper()}")
    candidates = [Path(env).expanduser()] if env else []
    candidates += [p / "shared" / "datasets" / name for p in (REPO_ROOT.parent, REPO_ROOT)]
    for c in candidates:
        if c.is_dir():
            return c
    return None


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when available, else CPU; anything else is validated."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"unknown device {device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but CUDA is not available on this machine")
    return dev


def compile_mode(device: torch.device) -> str:
    """The ``torch.compile`` mode this library trains with on ``device``.

    On CUDA "reduce-overhead": the compiled kernels are also replayed as CUDA graphs, because
    measured on an H200 (benchmarks/RESULTS.md) Python needs about as long to queue an eager
    ResNet-18 step as the GPU needs to run it. Elsewhere "default".
    """
    return "reduce-overhead" if torch.device(device).type == "cuda" else "default"
