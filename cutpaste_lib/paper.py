"""The paper's published numbers, as data, so our tables can sit next to them.

Every number is copied from Li, Sohn, Yoon, Pfister, "CutPaste: Self-Supervised Learning for
Anomaly Detection and Localization", CVPR 2021 (arXiv:2104.04015, v1), as transcribed in the
project's design notes. Values are percentages (AUROC x 100), the mean over 5 seeds.

The per-category means reproduce the paper's stated "mean" rows to within rounding (checked in
``tests/test_paper.py``): a typo in this file would make that test fail.

Example:
    >>> from cutpaste_lib import paper
    >>> paper.image_auroc("screw", "3way")
    86.3
    >>> paper.pixel_auroc("not_an_mvtec_category") is None
    True
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Literal

from cutpaste_lib.data.categories import MVTEC_OBJECTS, MVTEC_TEXTURES

CITATION = (
    "Li, Sohn, Yoon, Pfister. CutPaste: Self-Supervised Learning for Anomaly Detection and "
    "Localization. CVPR 2021 (arXiv:2104.04015)."
)

# The category names and their order are the data module's (one list in the library); the
# tables below are checked to cover exactly these (tests/test_paper.py).
TEXTURES: tuple[str, ...] = MVTEC_TEXTURES
OBJECTS: tuple[str, ...] = MVTEC_OBJECTS
CATEGORIES: tuple[str, ...] = TEXTURES + OBJECTS
"""The 15 MVTec AD categories in the paper's table order (textures first)."""

TABLE1_VARIANTS: tuple[str, ...] = ("cutpaste", "scar", "3way")
"""The trained variants of Table 1 (the ``ensemble`` column is built from the seeds' models)."""

TABLE1_COLUMNS: tuple[str, ...] = TABLE1_VARIANTS + ("ensemble",)

# Table 1: image AUROC, ResNet-18 trained from scratch, mean of 5 seeds.
# Columns: CutPaste (binary), CutPaste (scar, binary), CutPaste (3-way), Ensemble.
_TABLE1_ROWS: dict[str, tuple[float, float, float, float]] = {
    "carpet": (67.9, 94.6, 93.1, 93.9),
    "grid": (99.9, 95.5, 99.9, 100.0),
    "leather": (99.7, 100.0, 100.0, 100.0),
    "tile": (95.9, 89.4, 93.4, 94.6),
    "wood": (94.9, 98.7, 98.6, 99.1),
    "bottle": (99.2, 98.0, 98.3, 98.2),
    "cable": (87.1, 78.8, 80.6, 81.2),
    "capsule": (87.9, 95.3, 96.2, 98.2),
    "hazelnut": (91.3, 96.7, 97.3, 98.3),
    "metal_nut": (96.8, 97.9, 99.3, 99.9),
    "pill": (93.4, 85.8, 92.4, 94.9),
    "screw": (54.4, 83.7, 86.3, 88.7),
    "toothbrush": (99.2, 96.7, 98.3, 99.4),
    "transistor": (96.4, 91.1, 95.5, 96.1),
    "zipper": (99.4, 99.5, 99.4, 99.9),
}
TABLE1 = MappingProxyType(
    {c: MappingProxyType(dict(zip(TABLE1_COLUMNS, v))) for c, v in _TABLE1_ROWS.items()}
)
"""``TABLE1[category][column]`` with column in :data:`TABLE1_COLUMNS`."""

TABLE1_MEAN = MappingProxyType({"cutpaste": 90.9, "scar": 93.5, "3way": 95.2, "ensemble": 96.1})
"""The paper's stated mean row of Table 1 (all 15 categories)."""

TABLE5_UNION = MappingProxyType({"texture": 97.3, "object": 92.8, "all": 94.3})
"""Binary (Union) variant, normal vs (CutPaste or Scar): only group averages are published."""

TABLE2_PIXEL = MappingProxyType(
    {
        "carpet": 98.3,
        "grid": 97.5,
        "leather": 99.5,
        "tile": 90.5,
        "wood": 95.5,
        "bottle": 97.6,
        "cable": 90.0,
        "capsule": 97.4,
        "hazelnut": 97.3,
        "metal_nut": 93.1,
        "pill": 95.7,
        "screw": 96.7,
        "toothbrush": 98.1,
        "transistor": 93.0,
        "zipper": 99.3,
    }
)
"""Table 2: pixel AUROC of the 3-way patch model (64x64 crops, dense 32x32 patches, stride 4)."""

TABLE2_MEAN = 96.0

GRADCAM_PIXEL_AUROC_MEAN = 88.3
"""Grad-CAM on the image-level 3-way model explaining the anomaly score (average only)."""

TABLE3 = MappingProxyType(
    {
        "pooled, pretrained only": 94.5,
        "pooled, fine-tuned (3-way)": 96.6,
        "level-7, pretrained only": 96.8,
        "level-7, fine-tuned (3-way)": 97.1,
    }
)
"""Table 3: mean image AUROC of an ImageNet-pretrained EfficientNet-B4 (the only pretrained runs).

The library reproduces the "pooled" rows only: it scores the globally pooled encoder features;
the "level-7" rows (features of an intermediate EfficientNet block) have no counterpart here.
"""

TABLE3_PROTOCOL = (
    "EfficientNet-B4, ImageNet-pretrained; batch 24; head only for 10 epochs at lr 0.03 "
    "(backbone frozen), then all layers for 64 epochs at lr 1e-4; batch-norm layers frozen."
)

OTHER_IMPLEMENTATIONS = MappingProxyType(
    {
        "ImageNet-pretrained ResNet-18, no training, GDE (mean image AUROC)": 90.8,
        "public PyTorch reimplementation, from scratch, 10k steps: CutPaste": 88.3,
        "public PyTorch reimplementation, from scratch, 10k steps: scar": 89.1,
        "public PyTorch reimplementation, from scratch, 10k steps: 3-way": 91.0,
    }
)
"""Reference points from other implementations: NOT the paper's numbers (sources in
:data:`OTHER_SOURCES`)."""

_RUNINHO = "https://github.com/Runinho/pytorch-cutpaste (README, 'Comparison to Li et al.')"
OTHER_SOURCES = MappingProxyType(
    {
        "ImageNet-pretrained ResNet-18, no training, GDE (mean image AUROC)": (
            "https://github.com/Runinho/pytorch-cutpaste/issues/6 (avg AUROC 0.908 with the "
            "torchvision ImageNet ResNet-18 weights and that repository's evaluation)"
        ),
        "public PyTorch reimplementation, from scratch, 10k steps: CutPaste": _RUNINHO,
        "public PyTorch reimplementation, from scratch, 10k steps: scar": _RUNINHO,
        "public PyTorch reimplementation, from scratch, 10k steps: 3-way": _RUNINHO,
    }
)
"""Where each :data:`OTHER_IMPLEMENTATIONS` number was published."""

Kind = Literal["texture", "object"]


def kind(category: str) -> Kind | None:
    """``"texture"`` or ``"object"`` for an MVTec category, ``None`` for any other name."""
    if category in TEXTURES:
        return "texture"
    if category in OBJECTS:
        return "object"
    return None


def image_auroc(category: str, column: str) -> float | None:
    """Table 1 value (percent) for ``column`` in :data:`TABLE1_COLUMNS`; ``None`` if not published.

    Raises:
        ValueError: ``column`` is not a Table 1 column (a typo must not read as "no number").
    """
    if column not in TABLE1_COLUMNS:
        raise ValueError(
            f"unknown Table 1 column {column!r}: valid are {', '.join(TABLE1_COLUMNS)}"
        )
    row = TABLE1.get(category)
    return None if row is None else row[column]


def pixel_auroc(category: str) -> float | None:
    """Table 2 value (percent) for ``category``; ``None`` for a non-MVTec name."""
    return TABLE2_PIXEL.get(category)
