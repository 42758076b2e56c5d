"""Run-time configuration shared by the library, the CLI and the notebooks.

Two **protocols** size everything (model, training, data), chosen by ``CUTPASTE_PROTOCOL``:

* ``laptop`` (the default): chosen by measurement on a 2-core CPU (``benchmarks/laptop_protocol.py``,
  ``benchmarks/RESULTS.md``) so that the models of the course learn there in minutes; CI runs it too;
* ``paper``: the paper's protocol (A.1: 256 px, 65,536 steps, 8-layer head), for a GPU.

``CUTPASTE_FAST=1`` (CI's switch) keeps the laptop protocol and only shrinks what the notebooks
sample for their statistical checks (:func:`fast_mode`). Every notebook reads :func:`settings` in
its first cell.

Example:
    >>> from cutpaste_lib import config
    >>> config.PROTOCOLS["paper"].image_size, config.PROTOCOLS["paper"].steps
    (256, 65536)
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
    """True when ``CUTPASTE_FAST`` asks for CI's smaller statistical samples in the notebooks."""
    return os.environ.get("CUTPASTE_FAST", "").strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """What one protocol trains: model, schedule, resolution and data sizes.

    ``steps``/``lr``/``batch_size`` are those of the image-level model, ``patch_steps`` those of the
    patch (localization) model; both are 3-way, ResNet-18 from scratch unless ``encoder`` says
    otherwise.
    """

    name: str
    image_size: int
    steps: int
    batch_size: int  # original images per step (3-way: 3x as many classifier inputs)
    patch_size: int  # training crop of the patch model (paper: 64)
    dense_patch: int  # dense-extraction patch size at test time (paper A.5: 32)
    dense_stride: int
    synth_size: int  # source resolution of the generated synthetic images
    synth_train: int  # good training images per synthetic category
    patch_steps: int  # training steps of the patch model
    patch_batch_size: int = 32  # original images per step of the patch model (paper: 32)
    lr: float = 0.03  # peak learning rate, one cosine cycle (paper A.1: SGD 0.03)
    optimizer: str = "sgd"  # "sgd" (paper) or "adamw"
    head_depth: int = 8  # hidden layers of the projection head (paper: 8 x 512)
    # image side the scar sizes refer to (paper: 256 px, scaled to image_size)
    scar_reference: int = 256
    encoder: str = "resnet18"

    def as_dict(self) -> dict:
        return asdict(self)


PAPER = Settings(
    name="paper",
    image_size=256,
    steps=65_536,
    batch_size=32,
    patch_size=64,
    dense_patch=32,
    dense_stride=4,
    synth_size=256,
    synth_train=120,
    patch_steps=65_536,
)
LAPTOP = Settings(
    name="laptop",
    image_size=64,
    steps=400,
    batch_size=8,
    patch_size=32,
    dense_patch=16,
    dense_stride=4,
    synth_size=128,
    synth_train=120,
    patch_steps=200,
    patch_batch_size=16,
    lr=1e-3,
    optimizer="adamw",
    head_depth=1,
    scar_reference=128,
)
"""Chosen by measurement on 2 CPU cores (benchmarks/RESULTS.md): the paper's encoder and 3-way task,
a 1-layer head and AdamW so that a few hundred steps learn, 64 px and batch 8 so that a step takes
about half a second, scars sized as for a 128 px image (at 64 px the paper's scaling leaves them one
pixel wide). One category's image and patch models train in about 5.5 minutes on two cores."""
PROTOCOLS: dict[str, Settings] = {s.name: s for s in (PAPER, LAPTOP)}
STORY_CATEGORY = "synth_carpet"
"""The synthetic category that carries the course through notebooks 02-05 and ``cutpaste demo``."""


def protocol() -> str:
    """The protocol asked for: ``CUTPASTE_PROTOCOL``, else ``laptop``. A CPU never gets the paper's
    weeks of training unless someone asks for them."""
    name = os.environ.get("CUTPASTE_PROTOCOL", "").strip().lower()
    if not name:
        return "laptop"
    if name not in PROTOCOLS:
        raise ValueError(
            f"CUTPASTE_PROTOCOL={name!r} is not a protocol: use one of {', '.join(PROTOCOLS)}"
        )
    return name


def settings(protocol_name: str | None = None) -> Settings:
    """The settings of ``protocol_name`` (default :func:`protocol`)."""
    if protocol_name is None:
        protocol_name = protocol()
    try:
        return PROTOCOLS[protocol_name]
    except KeyError:
        raise ValueError(
            f"unknown protocol {protocol_name!r}: use one of {', '.join(PROTOCOLS)}"
        ) from None


def synthetic_folder(s: Settings) -> Path:
    """Where the synthetic set of settings ``s`` is generated: one folder per data size (the laptop
    protocol's is ``data/synthetic_128px_120``, the paper's ``data/synthetic``)."""
    if (s.synth_size, s.synth_train) == (PAPER.synth_size, PAPER.synth_train):
        return REPO_ROOT / "data" / "synthetic"
    return REPO_ROOT / "data" / f"synthetic_{s.synth_size}px_{s.synth_train}"


def data_root() -> Path:
    """Dataset root: ``CUTPASTE_DATA`` if set, else the protocol's synthetic set under ``data/``."""
    env = os.environ.get("CUTPASTE_DATA")
    if env:
        return Path(env).expanduser()
    return synthetic_folder(settings())


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
