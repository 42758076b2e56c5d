"""The three synthetic categories, each drawn from its own random stream.

Each renderer returns "layers": the clean albedo image (H, W, 3) in [0, 1] before lighting, plus
whatever a defect needs to redraw part of the scene (the washer's background, metal, coverage and
pose).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cutpaste_lib.data.synthetic.canvas import Rng, _blur, _Canvas, _lerp, _noise

_WASHER = {"outer": 0.36, "inner": 0.14, "bolt_ring": 0.255, "bolt": 0.038}
_BOLT_ANGLES = np.deg2rad([-90.0, 30.0, 150.0])


def _carpet(rng: Rng, cv: _Canvas) -> dict:
    """Loop-pile carpet: rows of yarn loops (brick pattern), each loop its own shade, on a warped
    lattice, under mottled tufts and fine fibres. Irregular: no two loops or images alike."""
    tufts = _noise(rng, cv.size, 1.4, cutoff=40)
    fibres = _noise(rng, cv.size, 0.6, cutoff=120, stretch=3.0, angle=rng.uniform(-0.2, 0.2) + 0.6)
    warp = _noise(rng, cv.size, 2.0, cutoff=12)
    period = rng.uniform(21, 23)  # loops per image side
    phase = rng.uniform(0, 1, size=2)
    u = (cv.x + 0.02 * warp) * period + phase[0]
    v = (cv.y - 0.015 * warp) * period + phase[1]
    row = np.floor(v)
    u = u + 0.5 * (row % 2)  # brick pattern: every other row shifted by half a loop
    col = np.floor(u)
    fu, fv = u - col - 0.5, v - row - 0.5
    loop = np.sqrt(np.clip(1 - (fu / 0.48) ** 2 - (fv / 0.52) ** 2, 0, 1))
    shades = rng.normal(0.0, 0.06, size=(int(period) + 4, int(period) + 4))
    shade = shades[row.astype(int) % shades.shape[0], col.astype(int) % shades.shape[1]]
    value = np.clip(0.32 + 0.36 * loop + shade + 0.10 * tufts + 0.07 * fibres, 0.0, 1.0)
    dark = np.array([0.30, 0.21, 0.15]) * rng.uniform(0.96, 1.04)
    light = np.array([0.80, 0.65, 0.47]) * rng.uniform(0.96, 1.04)
    return {"albedo": _lerp(dark, light, value)}


def _grid(rng: Rng, cv: _Canvas) -> dict:
    """Plain-woven wire mesh on a dark backing: period, angle, phase and a slight waviness vary."""
    period = rng.uniform(9.4, 10.6)  # wires per image
    angle = np.deg2rad(rng.uniform(-2.0, 2.0))
    phase = rng.uniform(0, 1, size=2)
    wave = 0.006 * _noise(rng, cv.size, 2.0, cutoff=6)
    ca, sa = np.cos(angle), np.sin(angle)
    u = ((cv.x - 0.5) * ca + (cv.y - 0.5) * sa + wave) * period + phase[0]
    v = (-(cv.x - 0.5) * sa + (cv.y - 0.5) * ca - wave) * period + phase[1]
    du, dv = np.abs(u - np.round(u)), np.abs(v - np.round(v))  # distance to a wire, in periods
    half = 0.14  # wire half-width, in periods
    height_u = np.sqrt(np.clip(1 - (du / half) ** 2, 0, 1))  # round wire cross-section
    height_v = np.sqrt(np.clip(1 - (dv / half) ** 2, 0, 1))
    # plain weave: at each crossing one wire lies on top, alternating like a checkerboard
    over = ((np.floor(u + 0.5) + np.floor(v + 0.5)) % 2).astype(np.float32)
    wire = np.maximum(height_u * (0.85 + 0.15 * over), height_v * (1.0 - 0.15 * over))
    grain = _noise(rng, cv.size, 0.4, cutoff=150)
    backing = 0.24 + 0.03 * _noise(rng, cv.size, 1.5, cutoff=30)
    metal = 0.48 + 0.38 * wire + 0.05 * grain
    value = np.where(wire > 0, metal, backing)
    return {"albedo": _lerp((0.0, 0.0, 0.0), (1.0, 0.98, 0.94), np.clip(value, 0, 1))}


def _bolt_offsets(pose: dict) -> list[tuple[float, float]]:
    """The bolt holes' centres relative to the washer's centre, in image units."""
    return [
        (
            _WASHER["bolt_ring"] * np.cos(a + pose["rot"]),
            _WASHER["bolt_ring"] * np.sin(a + pose["rot"]),
        )
        for a in _BOLT_ANGLES
    ]


def _washer_shape(cv: _Canvas, pose: dict, outer_bump: Callable | None = None) -> np.ndarray:
    """Anti-aliased coverage (alpha) of the flange from a signed distance in pixels."""
    dx, dy = cv.x - pose["cx"], cv.y - pose["cy"]
    rho = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx) - pose["rot"]
    outer = _WASHER["outer"] + (outer_bump(theta) if outer_bump is not None else 0.0)
    sdf = np.minimum(outer - rho, rho - _WASHER["inner"])
    for ox, oy in _bolt_offsets(pose):
        bx, by = pose["cx"] + ox, pose["cy"] + oy
        sdf = np.minimum(sdf, np.hypot(cv.x - bx, cv.y - by) - _WASHER["bolt"])
    return np.clip(sdf * cv.size + 0.5, 0.0, 1.0).astype(np.float32)


def _washer(rng: Rng, cv: _Canvas) -> dict:
    """A brushed-metal flange with three bolt holes on cloth, in a fixed pose with a little jitter."""
    pose = {
        "cx": 0.5 + rng.uniform(-0.012, 0.012),
        "cy": 0.5 + rng.uniform(-0.012, 0.012),
        "rot": np.deg2rad(rng.uniform(-2.5, 2.5)),
    }
    light = np.deg2rad(rng.uniform(-60, -30))  # light from the upper right, varying a little
    dx, dy = cv.x - pose["cx"], cv.y - pose["cy"]
    rho = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx)
    # brushed metal: fine concentric streaks (noise along the radius) + the bow-tie highlight of
    # anisotropic reflection + bevels that catch the light on one side of each edge
    streaks = np.interp(rho * 900, np.arange(1200), rng.standard_normal(1200)).astype(np.float32)
    sheen = 0.12 * np.cos(2 * (theta - light))
    bevel = np.exp(-(((_WASHER["outer"] - rho) * 60) ** 2)) - np.exp(
        -(((rho - _WASHER["inner"]) * 60) ** 2)
    )
    metal = 0.58 + sheen + 0.035 * streaks + 0.15 * bevel * np.cos(theta - light)
    metal += 0.02 * _noise(rng, cv.size, 1.0, cutoff=60)
    obj = _lerp((0.0, 0.0, 0.0), (0.97, 0.98, 1.0), np.clip(metal, 0, 1))
    alpha = _washer_shape(cv, pose)
    cloth = (
        0.16
        + 0.02 * _noise(rng, cv.size, 0.8, cutoff=80)
        + 0.02 * _noise(rng, cv.size, 2, cutoff=8)
    )
    shadow = _blur(
        np.roll(alpha, (int(round(4 * cv.px)), int(round(-3 * cv.px))), axis=(0, 1)), 5 * cv.px
    )
    background = _lerp(
        (0.0, 0.0, 0.0), (0.78, 0.86, 1.0), np.clip(cloth * (1 - 0.45 * shadow), 0, 1)
    )
    albedo = background * (1 - alpha[..., None]) + obj * alpha[..., None]
    return {"albedo": albedo, "background": background, "object": obj, "alpha": alpha, "pose": pose}


_RENDERERS: dict[str, Callable[[Rng, _Canvas], dict]] = {
    "synth_carpet": _carpet,
    "synth_grid": _grid,
    "synth_washer": _washer,
}
