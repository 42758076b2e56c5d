"""The defect painters and which defect types each category has.

Each painter takes (rng, canvas, layers, clean albedo) and returns (mask M, defective albedo D);
the image becomes ``where(M, D, clean)``, so nothing outside ``M`` changes. Each is designed to
change (almost) every pixel of ``M`` visibly, so the mask is exact.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cutpaste_lib.data.synthetic.canvas import Rng, _blob, _Canvas, _curve_distance, _lerp, _noise
from cutpaste_lib.data.synthetic.scenes import _WASHER, _bolt_offsets, _washer_shape

DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "synth_carpet": ("color", "contamination", "hole", "scratch"),
    "synth_grid": ("color", "contamination", "hole", "scratch"),
    "synth_washer": ("color", "contamination", "deformed", "hole", "missing", "scratch"),
}

Painted = tuple[np.ndarray, np.ndarray]

_STAINS = [(0.72, 0.22, 0.12), (0.18, 0.36, 0.78), (0.85, 0.68, 0.12), (0.24, 0.58, 0.22)]

_FOREIGN = [
    ((0.70, 0.70, 0.66), (1.0, 1.0, 0.96)),  # white fluff
    ((0.28, 0.30, 0.34), (0.85, 0.88, 0.95)),  # metal shavings
    ((0.08, 0.22, 0.10), (0.40, 0.75, 0.35)),  # green fibres
    ((0.35, 0.05, 0.08), (0.95, 0.35, 0.30)),  # red thread
]


def _where_on_object(rng: Rng, layers: dict) -> tuple[float, float]:
    """A defect centre: anywhere (textures, away from borders) or on the washer's metal."""
    if "pose" not in layers:
        return tuple(rng.uniform(0.18, 0.82, size=2))
    pose = layers["pose"]
    for _ in range(100):
        a = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(_WASHER["inner"] + 0.04, _WASHER["outer"] - 0.04)
        cx, cy = pose["cx"] + r * np.cos(a), pose["cy"] + r * np.sin(a)
        bolts = [
            np.hypot(cx - pose["cx"] - ox, cy - pose["cy"] - oy) for ox, oy in _bolt_offsets(pose)
        ]
        if min(bolts) > _WASHER["bolt"] + 0.03:
            break
    return float(cx), float(cy)


def _on_object(mask: np.ndarray, layers: dict) -> np.ndarray:
    """``mask`` restricted to the washer's metal (textures: unchanged)."""
    return mask & (layers["alpha"] >= 0.5) if "alpha" in layers else mask


def _scratch(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray) -> Painted:
    """A thin curved line, bright (exposed material) or dark (a groove)."""
    cx, cy = _where_on_object(rng, layers)
    length = rng.uniform(0.15, 0.3) if "pose" not in layers else rng.uniform(0.08, 0.14)
    dist = _curve_distance(rng, cv, cx=cx, cy=cy, length=length)
    half = max(0.75, rng.uniform(1.0, 2.0) * cv.px)
    mask = _on_object(dist <= half + 0.5, layers)
    profile = np.clip(half + 0.5 - dist, 0.0, 1.0)[..., None]
    sign = 1.0 if rng.uniform() < 0.5 else -1.0  # bright (exposed) or dark (groove) scratch
    strength = rng.uniform(0.3, 0.45) * (0.6 + 0.4 * profile)
    return mask, np.clip(clean + sign * strength, 0.0, 1.0)


def _hole(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray) -> Painted:
    """A dark irregular pit (textures) or void (the washer)."""
    cx, cy = _where_on_object(rng, layers)
    radius = max(rng.uniform(0.025, 0.05), 2.5 / cv.size)
    if "pose" in layers:
        radius *= 0.7
    region, rel = _blob(rng, cv, cx=cx, cy=cy, radius=radius)
    mask = _on_object(region, layers)
    # a dark pit, lit from the upper right: its far wall catches a little light
    side = np.clip((cv.x - cx) * -1 + (cv.y - cy), -radius, radius) / radius
    depth = (0.05 + 0.06 * rel + 0.03 * side)[..., None]
    tone = (
        np.array([1.0, 0.9, 0.85], np.float32) if "pose" not in layers else np.ones(3, np.float32)
    )
    return mask, np.clip(depth * tone, 0.0, 1.0)


def _color(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray) -> Painted:
    """A tinted stain through which the texture still shows, with a darker dried rim."""
    cx, cy = _where_on_object(rng, layers)
    radius = rng.uniform(0.04, 0.075) * (0.75 if "pose" in layers else 1.0)
    region, rel = _blob(rng, cv, cx=cx, cy=cy, radius=radius, wobble=0.4)
    mask = _on_object(region, layers)
    tint = np.asarray(_STAINS[rng.integers(len(_STAINS))], np.float32)
    luminance = clean.mean(-1, keepdims=True)
    # the texture shows through (tint scaled by the local brightness); a darker dried rim
    stained = tint * (0.55 + 0.9 * luminance) * (1.0 - 0.25 * (rel[..., None] ** 6))
    opacity = rng.uniform(0.6, 0.8)
    return mask, np.clip(clean * (1 - opacity) + stained * opacity, 0.0, 1.0)


def _contamination(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray) -> Painted:
    """A blob of foreign fibrous material lying on top (it may cross the washer's edge)."""
    cx, cy = _where_on_object(rng, layers)
    radius = rng.uniform(0.035, 0.065)
    region, _ = _blob(rng, cv, cx=cx, cy=cy, radius=radius, wobble=0.6)
    fibres = _noise(rng, cv.size, 0.5, cutoff=140, stretch=4.0, angle=rng.uniform(0, np.pi))
    lo, hi = _FOREIGN[rng.integers(len(_FOREIGN))]
    foreign = _lerp(lo, hi, 1.0 / (1.0 + np.exp(-2.5 * fibres)))
    return region, foreign  # a foreign object lies on top: it may cross the washer's edge


def _missing(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray) -> Painted:
    """A piece chipped off the washer's rim: the background shows through."""
    pose = layers["pose"]
    dx, dy = cv.x - pose["cx"], cv.y - pose["cy"]
    rho = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx)
    centre = rng.uniform(-np.pi, np.pi)
    half = np.deg2rad(rng.uniform(10, 20))
    gap = np.abs(np.angle(np.exp(1j * (theta - centre))))  # angular distance, wraps correctly
    ring = _WASHER["outer"] - _WASHER["inner"]
    depth = ring * rng.uniform(0.35, 0.9) * (1 - 0.3 * (gap / half) ** 2)  # a curved fracture
    region = (gap <= half) & (rho >= _WASHER["outer"] - depth)
    mask = region & (layers["alpha"] >= 0.5)
    return mask, layers["background"]


def _deformed(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray) -> Painted:
    """A dent or bulge of the washer's outer edge: the flange is redrawn with a bumped rim."""
    centre = rng.uniform(-np.pi, np.pi)
    width = np.deg2rad(rng.uniform(10, 18))
    amount = max(rng.uniform(0.02, 0.035), 2.5 / cv.size) * (1 if rng.uniform() < 0.5 else -1)

    def bump(theta: np.ndarray) -> np.ndarray:
        gap = np.angle(np.exp(1j * (theta - centre)))
        return amount * np.exp(-0.5 * (gap / width) ** 2)

    alpha2 = _washer_shape(cv, layers["pose"], outer_bump=bump)
    mask = (alpha2 >= 0.5) != (layers["alpha"] >= 0.5)
    a = alpha2[..., None]
    return mask, layers["background"] * (1 - a) + layers["object"] * a


_DEFECTS: dict[str, Callable[[Rng, _Canvas, dict, np.ndarray], Painted]] = {
    "scratch": _scratch,
    "hole": _hole,
    "color": _color,
    "contamination": _contamination,
    "missing": _missing,
    "deformed": _deformed,
}
