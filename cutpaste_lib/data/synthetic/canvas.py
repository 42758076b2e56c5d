"""Building blocks shared by the scenes and the defects: pixel coordinates, coloured noise, blur,
per-image lighting, irregular blobs and the distance to a curved stroke.

All sizes are in image units ([0, 1] across the image) unless a name says pixels, so a small image
looks like a shrunk large one.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Rng = np.random.Generator


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
    """Colours between ``lo`` and ``hi`` (RGB) at the values ``t`` in [0, 1]: (..., 3)."""
    lo_a, hi_a = np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    return lo_a + (hi_a - lo_a) * t[..., None]


def _lighting(rng: Rng, cv: _Canvas) -> np.ndarray:
    """Per-image illumination: overall gain, a linear gradient and a colour balance, (H, W, 3)."""
    gain = rng.uniform(0.88, 1.12)
    gx, gy = rng.uniform(-0.12, 0.12, size=2)
    balance = rng.uniform(0.97, 1.03, size=3).astype(np.float32)
    field = gain * (1.0 + gx * (cv.x - 0.5) + gy * (cv.y - 0.5))
    return field[..., None] * balance


def _blob(
    rng: Rng, cv: _Canvas, *, cx: float, cy: float, radius: float, wobble: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """An irregular star-shaped region; returns (mask, normalised radius rho/r(theta))."""
    dx, dy = cv.x - cx, cv.y - cy
    theta = np.arctan2(dy, dx)
    k = np.arange(2, 6, dtype=np.float32)[:, None, None]
    amps = (rng.uniform(0.0, wobble, size=4) / np.arange(1, 5)).astype(np.float32)[:, None, None]
    phases = rng.uniform(0, 2 * np.pi, size=4).astype(np.float32)[:, None, None]
    r = radius * (1.0 + (amps * np.cos(k * theta + phases)).sum(0))
    rel = np.sqrt(dx**2 + dy**2) / np.maximum(r, 1e-6)
    return rel <= 1.0, rel


def _curve_distance(rng: Rng, cv: _Canvas, *, cx: float, cy: float, length: float) -> np.ndarray:
    """Distance (in pixels) of every pixel to a random gently curved stroke centred at (cx, cy).

    The stroke is a quadratic Bezier curve, sampled as a polyline; only pixels in its bounding box
    (plus a margin wider than any scratch) are measured, the others are ``inf``.
    """
    angle = rng.uniform(0, np.pi)
    d = np.array([np.cos(angle), np.sin(angle)]) * length / 2
    bend = np.array([-d[1], d[0]]) * rng.uniform(-0.5, 0.5)
    p0, p2 = np.array([cx, cy]) - d, np.array([cx, cy]) + d
    p1 = np.array([cx, cy]) + bend
    t = np.linspace(0, 1, 25)[:, None]
    pts = ((1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2).astype(np.float32) * cv.size
    margin = 2 + 3 * cv.px  # > the widest scratch half-width (2 reference pixels + 0.5)
    lo = np.clip(np.floor(pts.min(0) - margin).astype(int), 0, cv.size)
    hi = np.clip(np.ceil(pts.max(0) + margin).astype(int), 0, cv.size)
    py, px = np.mgrid[lo[1] : hi[1], lo[0] : hi[0]].astype(np.float32) + 0.5
    near = np.full(px.shape, np.inf, dtype=np.float32)
    for (ax, ay), (bx, by) in zip(pts[:-1], pts[1:], strict=True):  # one vectorised segment each
        ex, ey = bx - ax, by - ay
        h = np.clip(((px - ax) * ex + (py - ay) * ey) / (ex * ex + ey * ey + 1e-9), 0, 1)
        np.minimum(near, np.hypot(px - ax - h * ex, py - ay - h * ey), out=near)
    best = np.full((cv.size, cv.size), np.inf, dtype=np.float32)
    best[lo[1] : hi[1], lo[0] : hi[0]] = near
    return best
