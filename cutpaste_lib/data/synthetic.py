"""A synthetic, MVTec-like dataset: three categories drawn procedurally with numpy.

MVTec AD cannot be downloaded on the course machines, so this module paints a stand-in with the
same folder layout (see :mod:`.mvtec`) and the same kind of difficulty:

* ``synth_carpet`` -- an irregular loop-pile carpet (yarn loops of varying shade on a warped
  lattice, mottled tufts, fibres);
* ``synth_grid`` -- a regular woven wire mesh (period, phase and a slight waviness vary);
* ``synth_washer`` -- an aligned object: a brushed-metal flange with three bolt holes, centred,
  in a fixed pose (a few pixels and degrees of jitter).

Normal images differ from each other (texture phase, lighting level and gradient, colour balance,
sensor noise, pose jitter), so "is this image identical to the training set" is not enough.
Defects are *local* (0.2-3 % of the image) and come light or dark, so global statistics such as
the mean brightness do not separate good from defective images; each defect has an exact mask.

Defect types: ``scratch`` (a thin curved line), ``hole`` (a dark irregular pit or void), ``color``
(a tinted stain through which the texture still shows), ``contamination`` (a blob of foreign
fibrous texture), and for the washer also ``missing`` (a chipped-off piece of the rim) and
``deformed`` (a dent or bulge of the outer edge).

How a defect is drawn (and why the mask is exact): every image starts from a *clean* rendering
(its own random stream); the defect draws from a second, independent stream a region ``M`` and a
defective version ``D``; the image is ``where(M, D, clean)`` and the mask is ``M``. So nothing
outside the mask changes, and each defect is designed to change (almost) every pixel of ``M``
visibly. :func:`render_sample` with the same seed returns the clean twin of a defective image.

Files are byte-identical for a given seed (PNG has no timestamp) with the same numpy version on
the same platform (FFT round-off may differ elsewhere); the dataset is written into a
temporary folder and renamed when complete, with a ``synthetic.json`` manifest. Overwriting
replaces only a folder with that manifest (or an empty one): never the user's own files.

Example:
    >>> from cutpaste_lib.data import generate_synthetic, load_split
    >>> root = generate_synthetic("/tmp/synth", size=64, n_train=8, overwrite=True)  # doctest: +SKIP
    >>> len(load_split(root, "synth_washer", "train"))  # doctest: +SKIP
    8
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from cutpaste_lib.data.mvtec import SYNTHETIC_CATEGORIES, category_info
from cutpaste_lib.errors import DatasetError
from cutpaste_lib.io import remove_empty_folders

GENERATOR_VERSION = 2
"""Bumped whenever the drawings change, so :func:`ensure_synthetic` regenerates stale data."""

MANIFEST = "synthetic.json"
_GENERATOR = "cutpaste_lib.data.synthetic"  # the manifest's "generator": a dataset written here

DEFECT_TYPES: dict[str, tuple[str, ...]] = {
    "synth_carpet": ("color", "contamination", "hole", "scratch"),
    "synth_grid": ("color", "contamination", "hole", "scratch"),
    "synth_washer": ("color", "contamination", "deformed", "hole", "missing", "scratch"),
}

Rng = np.random.Generator


# ---------------------------------------------------------------- building blocks


class _Canvas:
    """Pixel-centre coordinates of a square image, in pixels and in image units [0, 1]."""

    def __init__(self, size: int):
        self.size = size
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        self.x, self.y = np.meshgrid(c, c)  # image units, x to the right, y down
        self.px = size / 256.0  # one "reference pixel" of a 256 image, in pixels of this one


def _noise(
    rng: Rng, size: int, slope: float, *, cutoff: float, stretch: float = 1.0, angle: float = 0.0
) -> np.ndarray:
    """Periodic coloured noise (zero mean, unit std), amplitude spectrum ~ f**-slope.

    Frequencies are in cycles per image, so a 64-px image looks like a shrunk 256-px one.
    ``stretch`` > 1 elongates the structures along ``angle`` (fibres, brushed metal).
    """
    white = rng.standard_normal((size, size), dtype=np.float32)
    fy = np.fft.fftfreq(size, d=1.0 / size)[:, None].astype(np.float32)
    fx = np.fft.rfftfreq(size, d=1.0 / size)[None, :].astype(np.float32)
    ca, sa = np.cos(angle), np.sin(angle)
    along, across = fx * ca + fy * sa, -fx * sa + fy * ca
    f = np.sqrt((along * stretch) ** 2 + (across / stretch) ** 2)
    f[0, 0] = 1.0
    amp = f**-slope * np.exp(-((f / cutoff) ** 2))
    amp[0, 0] = 0.0
    out = np.fft.irfft2(np.fft.rfft2(white) * amp, s=(size, size)).astype(np.float32)
    out -= out.mean()
    return out / (out.std() + 1e-8)


def _blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Periodic Gaussian blur of an (H, W) array via the FFT (sigma in pixels)."""
    size = image.shape[0]
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    kernel = np.exp(-2.0 * (np.pi * sigma_px) ** 2 * (fx**2 + fy**2))
    return np.fft.irfft2(np.fft.rfft2(image) * kernel, s=image.shape).astype(np.float32)


def _lerp(lo: Sequence[float], hi: Sequence[float], t: np.ndarray) -> np.ndarray:
    lo_a, hi_a = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    return lo_a + (hi_a - lo_a) * t[..., None]


def _lighting(rng: Rng, cv: _Canvas) -> np.ndarray:
    """Per-image illumination: overall gain, a linear gradient and a colour balance, (H, W, 3)."""
    gain = rng.uniform(0.88, 1.12)
    gx, gy = rng.uniform(-0.12, 0.12, size=2)
    balance = rng.uniform(0.97, 1.03, size=3).astype(np.float32)
    field = gain * (1.0 + gx * (cv.x - 0.5) + gy * (cv.y - 0.5))
    return field[..., None] * balance


def _blob(rng: Rng, cv: _Canvas, cx: float, cy: float, radius: float, wobble: float = 0.3):
    """An irregular star-shaped region; returns (mask, normalised radius rho/r(theta))."""
    dx, dy = cv.x - cx, cv.y - cy
    theta = np.arctan2(dy, dx)
    k = np.arange(2, 6, dtype=np.float32)[:, None, None]
    amps = (rng.uniform(0.0, wobble, size=4) / np.arange(1, 5)).astype(np.float32)[:, None, None]
    phases = rng.uniform(0, 2 * np.pi, size=4).astype(np.float32)[:, None, None]
    r = radius * (1.0 + (amps * np.cos(k * theta + phases)).sum(0))
    rel = np.sqrt(dx**2 + dy**2) / np.maximum(r, 1e-6)
    return rel <= 1.0, rel


def _curve_distance(rng: Rng, cv: _Canvas, cx: float, cy: float, length: float) -> np.ndarray:
    """Distance (in pixels) of every pixel to a random gently curved stroke centred at (cx, cy)."""
    angle = rng.uniform(0, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    bend = np.array([-d[1], d[0]]) * rng.uniform(-0.5, 0.5)
    p0, p2 = np.array([cx, cy]) - d, np.array([cx, cy]) + d
    p1 = np.array([cx, cy]) + bend
    t = np.linspace(0, 1, 25)[:, None]
    pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32) * cv.size
    # only pixels near the stroke can be within a few pixels of it: work in its bounding box
    margin = 2 + 3 * cv.px  # > the widest scratch half-width (2 reference pixels + 0.5)
    lo = np.clip(np.floor(pts.min(0) - margin).astype(int), 0, cv.size)
    hi = np.clip(np.ceil(pts.max(0) + margin).astype(int), 0, cv.size)
    py, px = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32) + 0.5
    near = np.full(px.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:], strict=True):  # 24 vectorised segments
        ex, ey = bx - ax, by - ay
        h = np.clip(((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey + 1e-9), 0, 1)
        np.minimum(near, np.hypot(px - ax - h * ex, py - ay - h * ey), out=near)
    best = np.full((cv.size, cv.size), np.inf, dtype=np.float32)
    best[lo[1] : hi[1], lo[0] : hi[0]] = near
    return best


# ---------------------------------------------------------------- the three categories
# Each renderer returns "layers": the clean albedo image (H, W, 3) in [0, 1] before lighting,
# plus whatever a defect needs to redraw part of the scene (the washer's background and shape).


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


_WASHER = {"outer": 0.36, "inner": 0.14, "bolt_ring": 0.255, "bolt": 0.038}
_BOLT_ANGLES = np.deg2rad([-90.0, 30.0, 150.0])


def _washer_shape(cv: _Canvas, pose: dict, outer_bump: Callable | None = None) -> np.ndarray:
    """Anti-aliased coverage (alpha) of the flange from a signed distance in pixels."""
    dx, dy = cv.x - pose["cx"], cv.y - pose["cy"]
    rho = np.sqrt(dx**2 + dy**2)
    theta = np.arctan2(dy, dx) - pose["rot"]
    outer = _WASHER["outer"] + (outer_bump(theta) if outer_bump is not None else 0.0)
    sdf = np.minimum(outer - rho, rho - _WASHER["inner"])
    for a in _BOLT_ANGLES:
        bx = pose["cx"] + _WASHER["bolt_ring"] * np.cos(a + pose["rot"])
        by = pose["cy"] + _WASHER["bolt_ring"] * np.sin(a + pose["rot"])
        sdf = np.minimum(sdf, np.hypot(cv.x - bx, cv.y - by) - _WASHER["bolt"])
    return np.clip(sdf * cv.size + 0.5, 0.0, 1.0).astype(np.float32)


def _washer(rng: Rng, cv: _Canvas) -> dict:
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

# ---------------------------------------------------------------- defects
# Each returns (mask M, defective albedo D); the image becomes where(M, D, clean).


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
            np.hypot(cx - pose["cx"] - _WASHER["bolt_ring"] * np.cos(b + pose["rot"]),
                     cy - pose["cy"] - _WASHER["bolt_ring"] * np.sin(b + pose["rot"]))
            for b in _BOLT_ANGLES
        ]  # fmt: skip
        if min(bolts) > _WASHER["bolt"] + 0.03:
            break
    return float(cx), float(cy)


def _on_object(mask: np.ndarray, layers: dict) -> np.ndarray:
    return mask & (layers["alpha"] >= 0.5) if "alpha" in layers else mask


def _scratch(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray):
    cx, cy = _where_on_object(rng, layers)
    length = rng.uniform(0.15, 0.3) if "pose" not in layers else rng.uniform(0.08, 0.14)
    dist = _curve_distance(rng, cv, cx, cy, length)
    half = max(0.75, rng.uniform(1.0, 2.0) * cv.px)
    mask = _on_object(dist <= half + 0.5, layers)
    profile = np.clip(half + 0.5 - dist, 0.0, 1.0)[..., None]
    sign = 1.0 if rng.uniform() < 0.5 else -1.0  # bright (exposed) or dark (groove) scratch
    strength = rng.uniform(0.3, 0.45) * (0.6 + 0.4 * profile)
    return mask, np.clip(clean + sign * strength, 0.0, 1.0)


def _hole(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray):
    cx, cy = _where_on_object(rng, layers)
    radius = max(rng.uniform(0.025, 0.05), 2.5 / cv.size)
    if "pose" in layers:
        radius *= 0.7
    region, rel = _blob(rng, cv, cx, cy, radius)
    mask = _on_object(region, layers)
    # a dark pit, lit from the upper right: its far wall catches a little light
    side = np.clip((cv.x - cx) * -1 + (cv.y - cy), -radius, radius) / radius
    depth = (0.05 + 0.06 * rel + 0.03 * side)[..., None]
    tone = (
        np.array([1.0, 0.9, 0.85], np.float32) if "pose" not in layers else np.ones(3, np.float32)
    )
    return mask, np.clip(depth * tone, 0.0, 1.0)


_STAINS = [(0.72, 0.22, 0.12), (0.18, 0.36, 0.78), (0.85, 0.68, 0.12), (0.24, 0.58, 0.22)]


def _color(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray):
    cx, cy = _where_on_object(rng, layers)
    radius = rng.uniform(0.04, 0.075) * (0.75 if "pose" in layers else 1.0)
    region, rel = _blob(rng, cv, cx, cy, radius, wobble=0.4)
    mask = _on_object(region, layers)
    tint = np.asarray(_STAINS[rng.integers(len(_STAINS))], np.float32)
    luminance = clean.mean(-1, keepdims=True)
    # the texture shows through (tint scaled by the local brightness); a darker dried rim
    stained = tint * (0.55 + 0.9 * luminance) * (1.0 - 0.25 * (rel[..., None] ** 6))
    opacity = rng.uniform(0.6, 0.8)
    return mask, np.clip(clean * (1 - opacity) + stained * opacity, 0.0, 1.0)


_FOREIGN = [
    ((0.70, 0.70, 0.66), (1.0, 1.0, 0.96)),  # white fluff
    ((0.28, 0.30, 0.34), (0.85, 0.88, 0.95)),  # metal shavings
    ((0.08, 0.22, 0.10), (0.40, 0.75, 0.35)),  # green fibres
    ((0.35, 0.05, 0.08), (0.95, 0.35, 0.30)),  # red thread
]


def _contamination(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray):
    cx, cy = _where_on_object(rng, layers)
    radius = rng.uniform(0.035, 0.065)
    region, _ = _blob(rng, cv, cx, cy, radius, wobble=0.6)
    fibres = _noise(rng, cv.size, 0.5, cutoff=140, stretch=4.0, angle=rng.uniform(0, np.pi))
    lo, hi = _FOREIGN[rng.integers(len(_FOREIGN))]
    foreign = _lerp(lo, hi, 1.0 / (1.0 + np.exp(-2.5 * fibres)))
    return region, foreign  # a foreign object lies on top: it may cross the washer's edge


def _missing(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray):
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


def _deformed(rng: Rng, cv: _Canvas, layers: dict, clean: np.ndarray):
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


_DEFECTS: dict[str, Callable] = {
    "scratch": _scratch,
    "hole": _hole,
    "color": _color,
    "contamination": _contamination,
    "missing": _missing,
    "deformed": _deformed,
}


# ---------------------------------------------------------------- one image


def _seed_sequence(seed: int | Sequence[int]) -> np.random.SeedSequence:
    entropy = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
    return np.random.SeedSequence(entropy)


def render_sample(
    category: str, defect: str = "good", *, size: int = 256, seed: int | Sequence[int] = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one image and its mask.

    The clean scene and the defect use independent random streams derived from ``seed``, so
    ``render_sample(c, "good", seed=s)`` is the clean twin of ``render_sample(c, "hole", seed=s)``:
    the two differ exactly inside the returned mask.

    Args:
        category: one of :data:`SYNTHETIC_CATEGORIES`.
        defect: ``"good"`` or one of ``DEFECT_TYPES[category]``.
        size: side of the square image in pixels.
        seed: an int or a sequence of ints (entropy of a numpy ``SeedSequence``).

    Returns:
        (image uint8 (H, W, 3), mask bool (H, W)); the mask is all False for ``"good"``.
    """
    if category not in _RENDERERS:
        raise ValueError(
            f"unknown synthetic category {category!r}; choose from {', '.join(SYNTHETIC_CATEGORIES)}"
        )
    if defect != "good" and defect not in DEFECT_TYPES[category]:
        raise ValueError(
            f"defect {defect!r} is not drawn for {category}; choose from good, {', '.join(DEFECT_TYPES[category])}"
        )
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    scene_seq, defect_seq = _seed_sequence(seed).spawn(2)
    scene_rng = np.random.default_rng(scene_seq)
    cv = _Canvas(size)
    layers = _RENDERERS[category](scene_rng, cv)
    light = _lighting(scene_rng, cv)
    sensor = scene_rng.normal(0.0, 1.2 / 255, size=(size, size, 3)).astype(np.float32)
    albedo = layers["albedo"].astype(np.float32)
    mask = np.zeros((size, size), dtype=bool)
    if defect != "good":
        mask, damaged = _DEFECTS[defect](np.random.default_rng(defect_seq), cv, layers, albedo)
        albedo = np.where(mask[..., None], damaged, albedo).astype(np.float32)
    image = np.clip(albedo * light + sensor, 0.0, 1.0)
    return (image * 255 + 0.5).astype(np.uint8), mask


# ---------------------------------------------------------------- the dataset


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def default_test_counts(n_train: int) -> tuple[int, int]:
    """(good test images, images per defect type) used with ``n_train`` training images."""
    return max(10, n_train // 3), max(4, n_train // 8)


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _plan_category(folder: Path, category: str, counts: dict, seed: int) -> list[tuple]:
    """Create the category's folders and list one job per image: (category, defect, entropy, paths)."""
    cat_id = _stable_id(category)
    plan = [("train", "good", counts["n_train"]), ("test", "good", counts["n_test_good"])]
    plan += [("test", d, counts["n_test_defect"]) for d in DEFECT_TYPES[category]]
    jobs = []
    for split, defect, n in plan:
        (folder / split / defect).mkdir(parents=True)
        if defect != "good":
            (folder / "ground_truth" / defect).mkdir(parents=True)
        for i in range(n):
            entropy = (seed, cat_id, _stable_id(split), _stable_id(defect), i)
            mask_path = (
                folder / "ground_truth" / defect / f"{i:03d}_mask.png" if defect != "good" else None
            )
            jobs.append(
                (category, defect, entropy, folder / split / defect / f"{i:03d}.png", mask_path)
            )
    return jobs


def _run_job(job: tuple, size: int) -> None:
    category, defect, entropy, image_path, mask_path = job
    image, mask = render_sample(category, defect, size=size, seed=entropy)
    _save_png(image_path, image)
    if mask_path is not None:
        _save_png(mask_path, mask.astype(np.uint8) * 255)


def generate_synthetic(
    out: str | Path,
    *,
    categories: Sequence[str] | None = None,
    size: int = 256,
    n_train: int = 120,
    n_test_good: int | None = None,
    n_test_defect: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the synthetic dataset in MVTec layout under ``out`` and return ``out``.

    Everything is written into a temporary sibling folder that is renamed to ``out`` only when
    complete, so an interrupted run leaves no partial dataset. Each image's random stream depends
    only on (seed, category, split, defect, index): adding a category does not change the others.

    Args:
        out: dataset root to create.
        categories: subset of :data:`SYNTHETIC_CATEGORIES` (default: all).
        size: image side in pixels (MVTec images are 700-1024 px; the paper resizes to 256).
        n_train: defect-free training images per category.
        n_test_good: defect-free test images (default: ``default_test_counts(n_train)[0]``).
        n_test_defect: test images per defect type (default: ``default_test_counts(n_train)[1]``).
        seed: base seed; the same seed gives byte-identical files.
        overwrite: replace an existing ``out`` (otherwise an existing folder is an error). Only
            a synthetic dataset written here (it has a ``synthetic.json`` manifest) or an empty
            folder is replaced, never any other folder, the working directory or a parent of it.
        progress: show a tqdm bar.

    Raises:
        DatasetError: ``out`` exists and ``overwrite`` is False, ``out`` may not be replaced
            (see ``overwrite``), or an argument is invalid.
        OSError: ``out`` cannot be created (no permission, read-only or missing file system);
            nothing is left behind, not even the parent folders created for it.
    """
    out = Path(out).expanduser()
    names = list(SYNTHETIC_CATEGORIES if categories is None else categories)
    unknown = [c for c in names if c not in SYNTHETIC_CATEGORIES]
    if unknown or not names:
        raise DatasetError(
            f"unknown synthetic categories {unknown or names}: choose from {', '.join(SYNTHETIC_CATEGORIES)}"
        )
    good, per_defect = default_test_counts(n_train)
    counts = {
        "n_train": int(n_train),
        "n_test_good": good if n_test_good is None else int(n_test_good),
        "n_test_defect": per_defect if n_test_defect is None else int(n_test_defect),
    }
    if counts["n_train"] < 1 or counts["n_test_good"] < 1 or counts["n_test_defect"] < 1:
        raise DatasetError(f"every count must be at least 1, got {counts}")
    if size < 16:
        raise DatasetError(f"size must be at least 16 pixels, got {size}")
    if out.exists() and not overwrite:
        raise DatasetError(
            f"{out} already exists: choose another folder or pass overwrite=True (--overwrite)"
        )
    _check_replaceable(out)

    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:  # name the folder asked for, not the random temporary one
        remove_empty_folders(created)
        raise OSError(exc.errno, exc.strerror, str(out)) from exc
    ok = False
    try:
        manifest = {
            "generator": _GENERATOR,
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "size": int(size),
            **counts,
            "categories": {},
        }
        jobs = []
        for category in sorted(names):
            jobs += _plan_category(tmp / category, category, counts, int(seed))
            info = category_info(category)
            manifest["categories"][category] = {
                "kind": info.kind,
                "aligned": info.aligned,
                "defects": list(DEFECT_TYPES[category]),
            }
        # numpy's FFTs and zlib release the GIL, so threads overlap; each image has its own
        # random stream, so the files do not depend on the order in which threads finish
        pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
        try:
            done = pool.map(lambda job: _run_job(job, int(size)), jobs)
            if progress:
                from tqdm.auto import tqdm

                done = tqdm(done, total=len(jobs), desc="synthetic images", unit="img")
            for _ in done:
                pass
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)  # stop queued images before cleaning up
            raise
        pool.shutdown(wait=True)
        (tmp / MANIFEST).write_text(
            json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )
        _check_replaceable(out)  # again: the folder may have changed while the images were drawn
        if out.exists():  # overwrite: move the old tree aside first, delete it only after the swap
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            try:
                os.replace(out, trash / "old")
            except BaseException:
                trash.rmdir()
                raise
            try:
                os.replace(tmp, out)
            except BaseException:
                os.replace(trash / "old", out)  # put the old dataset back
                trash.rmdir()
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
        ok = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            remove_empty_folders(created)
    return out


def _check_replaceable(out: Path) -> None:
    """Refuse to overwrite anything but a dataset written by :func:`generate_synthetic` or an empty
    folder, and never the working directory or a folder above it (``out`` may not exist yet)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"{out} is a file, not a dataset folder: refusing to replace it")
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working directory was deleted: it cannot be ``out``
        cwd = None
    if cwd is not None and cwd.is_relative_to(out.resolve()):
        raise DatasetError(
            f"{out} is the working directory or a folder above it: refusing to delete it"
        )
    manifest = read_manifest(out)
    made_here = isinstance(manifest, dict) and manifest.get("generator") == _GENERATOR
    if not made_here and any(out.iterdir()):
        raise DatasetError(
            f"{out} is not a synthetic dataset made by cutpaste synth (no {MANIFEST} written by "
            "it): refusing to delete it; choose another folder or remove it yourself"
        )


def read_manifest(root: str | Path) -> dict | None:
    """The ``synthetic.json`` of a generated dataset, or ``None`` (not generated here, or unreadable)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def ensure_synthetic(root: str | Path | None = None, *, fast: bool | None = None) -> Path:
    """Return a dataset root, generating the synthetic set first when it is missing or stale.

    * ``CUTPASTE_DATA`` set (and ``root`` not given): that folder is used as is (real MVTec or your
      own data); it must exist and contain at least one category.
    * Otherwise ``root`` (default: ``config.data_root()``, i.e. ``data/synthetic`` or
      ``data/synthetic_fast``) is generated with the sizes of ``config.settings(fast)`` unless a
      manifest with exactly those settings is already there. A folder without a manifest is never
      overwritten: if it holds categories it is used as is.

    Raises:
        DataNotFoundError: ``CUTPASTE_DATA`` points to a missing or empty folder.
    """
    from cutpaste_lib import config
    from cutpaste_lib.data.mvtec import list_categories
    from cutpaste_lib.errors import DataNotFoundError

    if root is None and os.environ.get("CUTPASTE_DATA"):
        user_root = config.data_root()
        if not list_categories(user_root):  # raises DataNotFoundError when the folder is missing
            raise DataNotFoundError(
                f"CUTPASTE_DATA={user_root} contains no category folder (<category>/train/good)"
            )
        return user_root
    fast = config.fast_mode() if fast is None else fast
    if root is None:
        root = config.REPO_ROOT / "data" / ("synthetic_fast" if fast else "synthetic")
    root = Path(root).expanduser()
    s = config.settings(fast)
    n_test_good, n_test_defect = default_test_counts(s.synth_train)
    wanted = {
        "version": GENERATOR_VERSION, "seed": 0, "size": s.synth_size, "n_train": s.synth_train,
        "n_test_good": n_test_good, "n_test_defect": n_test_defect,
    }  # fmt: skip
    manifest = read_manifest(root)
    if manifest is not None:
        current = {k: manifest.get(k) for k in wanted}
        if current == wanted and sorted(manifest.get("categories", {})) == sorted(
            SYNTHETIC_CATEGORIES
        ):
            return root
    elif root.exists() and any(root.iterdir()):
        if list_categories(root):
            return root
        raise DatasetError(
            f"{root} exists, is not empty and holds no dataset: remove it or pick another root"
        )
    return generate_synthetic(
        root, size=s.synth_size, n_train=s.synth_train, n_test_good=n_test_good,
        n_test_defect=n_test_defect, seed=0, overwrite=True,
    )  # fmt: skip
