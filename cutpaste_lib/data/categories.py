"""Category metadata: the MVTec AD and synthetic names, and what the pipeline assumes of each.

Example:
    >>> from cutpaste_lib.data import category_info
    >>> category_info("screw")
    CategoryInfo(name='screw', kind='object', aligned=False)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

MVTEC_TEXTURES: tuple[str, ...] = ("carpet", "grid", "leather", "tile", "wood")
MVTEC_OBJECTS: tuple[str, ...] = (
    "bottle",
    "cable",
    "capsule",
    "hazelnut",
    "metal_nut",
    "pill",
    "screw",
    "toothbrush",
    "transistor",
    "zipper",
)
MVTEC_CATEGORIES: tuple[str, ...] = MVTEC_TEXTURES + MVTEC_OBJECTS
"""The 15 MVTec AD categories in the paper's table order (textures first)."""

SYNTHETIC_CATEGORIES: tuple[str, ...] = ("synth_carpet", "synth_grid", "synth_washer")
"""Categories written by :func:`cutpaste_lib.data.generate_synthetic`."""

# Our choice (README, "where we chose"; the paper does not state it): objects photographed in a
# fixed pose get one Gaussian per location; textures, hazelnut and screw (free rotation) share one
# Gaussian over all locations. metal_nut counts as aligned: its nuts lie in one orientation, which
# is what makes its "flip" defect (a nut upside down) an anomaly.
_ALIGNED_OBJECTS = frozenset(
    {"bottle", "cable", "capsule", "metal_nut", "pill", "toothbrush", "transistor", "zipper"}
)
_TEXTURES = frozenset(MVTEC_TEXTURES) | {"synth_carpet", "synth_grid"}
_KNOWN_OBJECTS = frozenset(MVTEC_OBJECTS) | {"synth_washer"}
_ALIGNED = _ALIGNED_OBJECTS | {"synth_washer"}

Kind = Literal["texture", "object"]


@dataclass(frozen=True)
class CategoryInfo:
    """What the pipeline needs to know about a category.

    Attributes:
        name: folder name of the category.
        kind: ``"texture"`` (stationary pattern) or ``"object"``.
        aligned: the object always appears in the same pose, so localization may fit one
            Gaussian per feature-map location instead of one shared by all locations.
    """

    name: str
    kind: Kind
    aligned: bool


def category_info(
    name: str, *, kind: Kind | None = None, aligned: bool | None = None
) -> CategoryInfo:
    """Metadata of a category: the MVTec categories of the paper, the synthetic ones, or defaults.

    Unknown names (your own data) default to ``kind="object", aligned=False``, i.e. one
    Gaussian shared by all locations, which is the safe choice when the pose varies.
    ``kind`` and ``aligned`` override the table.

    Raises:
        ValueError: ``kind`` is not ``"texture"`` or ``"object"``.
    """
    if kind is not None and kind not in ("texture", "object"):
        raise ValueError(f"kind must be 'texture' or 'object', got {kind!r}")
    known_kind: Kind = "texture" if name in _TEXTURES else "object"
    return CategoryInfo(
        name=name,
        kind=known_kind if kind is None else kind,
        aligned=(name in _ALIGNED) if aligned is None else bool(aligned),
    )
