"""Geometry of a paste: the rotated rectangle's bounding box, the inverse rotation, the scar
scale at other resolutions, and the static bound on the pixels any paste can touch."""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor

from cutpaste_lib.augment.draws import abs_cos_sin_deg
from cutpaste_lib.augment.params import CUTPASTE_ASPECT, REFERENCE_SIZE


def scar_scale(size: tuple[int, int], reference_size: int = REFERENCE_SIZE) -> float:
    """Factor that turns the paper's 256-px scar sizes into pixels of an (H, W) image."""
    return math.sqrt(size[0] * size[1]) / reference_size


def half_extents(height: Tensor, width: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Half height and half width of the axis-aligned box around the rotated rectangle."""
    return box_half_extents(*abs_cos_sin_deg(angle), height, width)


def box_half_extents(c: Any, s: Any, height: Any, width: Any) -> tuple[Any, Any]:
    """:func:`half_extents` from |cos| and |sin| of the angle (tensors or NumPy arrays)."""
    return 0.5 * (s * width + c * height), 0.5 * (c * width + s * height)


def unrotate(px: Tensor, py: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Offsets from the paste centre rotated back into the frame of the cut rectangle.

    Rows grow downwards, so a counter-clockwise rotation on screen is x' = cos x + sin y,
    y' = -sin x + cos y; this is its inverse.
    """
    return cos * px - sin * py, sin * px + cos * py


def paste_window_bound(
    size: tuple[int, int],
    *,
    area_ratio: tuple[float, float] | None = None,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    scar_width: tuple[float, float] | None = None,
    scar_length: tuple[float, float] | None = None,
    scale: float = 1.0,
) -> int:
    """Most destination pixels any paste of these sampling ranges can need (a static bound).

    The batched kernel examines, for paste ``j``, the ``sh_j x sw_j`` window of destination
    pixels around it (:func:`~cutpaste_lib.augment.batched_paste.paste_windows`). Giving it
    this bound, computed on the host from the ranges alone, fixes every tensor's shape in
    advance, so no host sync is needed to size the work. CutPaste: with area A <= a1 H W and
    aspect a, ``h <= sqrt(A / a) + 0.5`` and ``w <= sqrt(A a) + 0.5`` (rounding), and the
    window is ``(h + 1) x (w + 1)``. Scar: a ``w x l`` strip rotated by any angle fits in a
    box of side ``sqrt(w^2 + l^2)``; the window adds up to 3 pixels per side (floor/ceil and
    the closing row).
    """
    H, W = size
    bound = 1
    if area_ratio is not None:
        area = area_ratio[1] * H * W
        worst = max(a**-0.5 + a**0.5 for a in aspect_ratio)  # convex in log a: an endpoint
        bound = max(bound, math.ceil(area + 1.5 * math.sqrt(area) * worst + 2.25))
    if scar_width is not None and scar_length is not None:
        w = min(W, max(1.0, scar_width[1] * scale))
        l = min(H, max(1.0, scar_length[1] * scale))
        side = math.sqrt(w * w + l * l) + 3
        bound = max(bound, math.ceil(min(H, side)) * math.ceil(min(W, side)))
    return min(bound, H * W)
