"""The two patch densities: one Gaussian shared by all locations, or one Gaussian per location."""

from __future__ import annotations

from typing import Literal

from cutpaste_lib import density
from cutpaste_lib.data import category_info

DensityMode = Literal["shared", "per-location", "auto"]

MIN_TRAIN_IMAGES = {"shared": density.MIN_TRAIN_IMAGES, "per-location": 4}
"""Clean train images each density needs (per location: the cross-fitted training maps need two
Gaussians on half the images each)."""


def resolve_density_mode(
    mode: DensityMode, category: str = ""
) -> Literal["shared", "per-location"]:
    """``"auto"`` -> per-location for aligned categories (``category_info(category).aligned``), else shared."""
    if mode in ("shared", "per-location"):
        return mode
    if mode != "auto":
        raise ValueError(f"density must be 'shared', 'per-location' or 'auto', got {mode!r}")
    return "per-location" if category_info(category).aligned else "shared"
