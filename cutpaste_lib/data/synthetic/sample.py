"""One image and its mask: the clean scene, then (optionally) a defect from an independent stream."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cutpaste_lib.data.mvtec import SYNTHETIC_CATEGORIES
from cutpaste_lib.data.synthetic.canvas import _Canvas, _lighting
from cutpaste_lib.data.synthetic.defects import _DEFECTS, DEFECT_TYPES
from cutpaste_lib.data.synthetic.scenes import _RENDERERS


def _seed_sequence(seed: int | Sequence[int]) -> np.random.SeedSequence:
    """A numpy ``SeedSequence`` from an int or a sequence of ints."""
    entropy = [int(seed)] if np.isscalar(seed) else [int(s) for s in seed]
    return np.random.SeedSequence(entropy)


def _check_names(category: str, defect: str, size: int) -> None:
    """Raise ``ValueError`` for an unknown category, a defect it does not have, or a tiny size."""
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
    _check_names(category, defect, size)
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
