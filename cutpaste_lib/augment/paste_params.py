"""The samplers of one paste per image: CutPaste rectangles (area and aspect ratio, cut and
paste corners) and Scar strips (width, length, angle, centres), each with its colour jitter."""

from __future__ import annotations

import functools
import math
from typing import Any

import torch
from torch import Tensor

from cutpaste_lib.augment.colour import JITTER_DRAWS, jitter_params
from cutpaste_lib.augment.draws import Drawn, Draws, sample
from cutpaste_lib.augment.geometry import box_half_extents
from cutpaste_lib.augment.params import (
    CUTPASTE_AREA,
    CUTPASTE_ASPECT,
    MAX_TRIES,
    PASTE_JITTER,
    SCAR_LENGTH,
    SCAR_ROTATION,
    SCAR_WIDTH,
    AspectSampling,
    PasteParams,
    check_jitter,
)

# per image: width, length, angle, cut centre (y, x), paste centre (y, x) as one (B, 7) draw
SCAR_DRAWS = Draws(strip=(7,), jitter=JITTER_DRAWS)


def aspect_draws(aspect_sampling: str) -> Draws:
    """One log-uniform number, or for "two_interval" a coin and a position in the interval."""
    if aspect_sampling == "log_uniform":
        return Draws(value=())
    return Draws(coin=(), position=())


def cutpaste_draws(aspect_sampling: str) -> Draws:
    """Per image: an area and an aspect ratio for each try, corners, jitter."""
    return Draws(
        area=(MAX_TRIES,),
        aspect=aspect_draws(aspect_sampling).within(MAX_TRIES),
        corners=(4,),  # cut y, x, paste y, x
        jitter=JITTER_DRAWS,
    )


def sample_aspect(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    aspect_sampling: AspectSampling = "log_uniform",
    host_arithmetic: bool = True,
) -> Tensor:
    """Aspect ratios (width / height): log-uniform, or uniform in (lo, 1) or (1, hi) with p = 1/2."""
    check_aspect(aspect_ratio, aspect_sampling)
    draws, body = (
        aspect_draws(aspect_sampling),
        functools.partial(aspect_values, aspect_ratio=aspect_ratio),
    )
    return sample(generator, draws, shape, body, host_arithmetic=host_arithmetic)


def check_aspect(aspect_ratio: tuple[float, float], aspect_sampling: str) -> None:
    lo, hi = aspect_ratio
    if not 0 < lo < hi:
        raise ValueError(f"aspect_ratio must satisfy 0 < low < high, got {aspect_ratio}")
    if aspect_sampling not in ("log_uniform", "two_interval"):
        raise ValueError(
            f"aspect_sampling must be 'log_uniform' or 'two_interval', got {aspect_sampling!r}"
        )
    if aspect_sampling == "two_interval" and not lo < 1 < hi:
        raise ValueError(f"two_interval aspect sampling needs low < 1 < high, got {aspect_ratio}")


def aspect_values(u: Drawn, aspect_ratio: tuple[float, float]) -> Any:
    """Aspect ratios from the uniforms of :func:`aspect_draws` (its pieces say which sampling)."""
    lo, hi = aspect_ratio
    if hasattr(u, "value"):  # log-uniform
        return u.xp.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * u.value)
    pick_low = u.coin < 0.5
    return u.xp.where(pick_low, lo + (1 - lo) * u.position, 1 + (hi - 1) * u.position)


def sample_cutpaste_params(
    batch: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator,
    area_ratio: tuple[float, float] = CUTPASTE_AREA,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    aspect_sampling: AspectSampling = "log_uniform",
    jitter: float = PASTE_JITTER,
    host_arithmetic: bool = True,
) -> PasteParams:
    """CutPaste parameters for ``batch`` images of ``size = (H, W)``.

    Area ~ U(area_ratio) * H * W, aspect (width/height) as :func:`sample_aspect`,
    ``h = round(sqrt(area / aspect))``, ``w = round(sqrt(area * aspect))``; cut and paste
    corners uniform over the positions that keep the whole patch inside the image.
    """
    check_cutpaste(area_ratio, aspect_ratio, aspect_sampling, jitter)
    body = functools.partial(
        cutpaste_params, size=size, area_ratio=area_ratio, aspect_ratio=aspect_ratio, jitter=jitter
    )
    draws = cutpaste_draws(aspect_sampling)
    return sample(generator, draws, (batch,), body, host_arithmetic=host_arithmetic)


def check_cutpaste(
    area_ratio: tuple[float, float],
    aspect_ratio: tuple[float, float],
    aspect_sampling: str,
    jitter: float,
) -> None:
    a0, a1 = area_ratio
    if not 0 < a0 <= a1 <= 1:
        raise ValueError(f"area_ratio must satisfy 0 < low <= high <= 1, got {area_ratio}")
    check_aspect(aspect_ratio, aspect_sampling)
    check_jitter(jitter, jitter, jitter, jitter)


def cutpaste_params(
    u: Drawn,
    *,
    size: tuple[int, int],
    area_ratio: tuple[float, float] = CUTPASTE_AREA,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    jitter: float = PASTE_JITTER,
) -> PasteParams:
    """CutPaste parameters from the uniforms of :func:`cutpaste_draws`."""
    xp = u.xp
    H, W = size
    a0, a1 = area_ratio
    area = (a0 + (a1 - a0) * u.area) * (H * W)
    aspect = aspect_values(u.aspect, aspect_ratio)
    h = xp.clip(xp.sqrt(area / aspect).round(), 1, None)
    w = xp.clip(xp.sqrt(area * aspect).round(), 1, None)
    # first try that fits; if none fits, clamp try 0
    first = xp.first_true((h <= H) & (w <= W))
    h = xp.clip(xp.take(h, first), None, H)
    w = xp.clip(xp.take(w, first), None, W)
    # corners (cut y, x, paste y, x) uniform over the H-h+1 rows and W-w+1 columns that fit
    room = xp.stack([H - h, W - w, H - h, W - w])
    corners = xp.minimum(xp.floor(u.corners * (room + 1)), room)
    centres = corners + xp.stack([h, w, h, w]) / 2
    factors, order = jitter_params(u.jitter, (jitter,) * 4)
    return PasteParams(h, w, h * 0, *(centres[:, k] for k in range(4)), factors, order)


def sample_scar_params(
    batch: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator,
    width: tuple[float, float] = SCAR_WIDTH,
    length: tuple[float, float] = SCAR_LENGTH,
    rotation: tuple[float, float] = SCAR_ROTATION,
    jitter: float = PASTE_JITTER,
    scale: float = 1.0,
    host_arithmetic: bool = True,
) -> PasteParams:
    """Scar parameters: width ~ U(width), length ~ U(length) (times ``scale``, at least 1 px),
    angle ~ U(rotation) degrees. The unrotated scar is vertical (length along rows); the cut is
    axis-aligned and the rotated paste lies fully inside the image.
    """
    if not (0 < width[0] <= width[1] and 0 < length[0] <= length[1]):
        raise ValueError(f"scar width/length ranges must be positive, got {width}, {length}")
    if rotation[0] > rotation[1]:
        raise ValueError(f"rotation must be (low, high) degrees, got {rotation}")
    check_jitter(jitter, jitter, jitter, jitter)
    ranges = {"width": width, "length": length, "rotation": rotation}
    body = functools.partial(scar_params, size=size, **ranges, jitter=jitter, scale=scale)
    return sample(generator, SCAR_DRAWS, (batch,), body, host_arithmetic=host_arithmetic)


def scar_params(
    u: Drawn,
    *,
    size: tuple[int, int],
    width: tuple[float, float] = SCAR_WIDTH,
    length: tuple[float, float] = SCAR_LENGTH,
    rotation: tuple[float, float] = SCAR_ROTATION,
    jitter: float = PASTE_JITTER,
    scale: float = 1.0,
) -> PasteParams:
    """Scar parameters from the uniforms of :data:`SCAR_DRAWS`."""
    xp = u.xp
    H, W = size
    s = u.strip
    factors, order = jitter_params(u.jitter, (jitter,) * 4)
    w = xp.clip((width[0] + (width[1] - width[0]) * s[:, 0]) * scale, 1, W)
    l = xp.clip((length[0] + (length[1] - length[0]) * s[:, 1]) * scale, 1, H)
    angle = rotation[0] + (rotation[1] - rotation[0]) * s[:, 2]
    ext_y, ext_x = box_half_extents(*xp.abs_cos_sin_deg(angle), l, w)
    return PasteParams(
        height=l,
        width=w,
        angle=angle,
        src_y=l / 2 + s[:, 3] * (H - l),
        src_x=w / 2 + s[:, 4] * (W - w),
        dst_y=ext_y + s[:, 5] * xp.clip(H - 2 * ext_y, 0, None),
        dst_x=ext_x + s[:, 6] * xp.clip(W - 2 * ext_x, 0, None),
        factors=factors,
        order=order,
    )
