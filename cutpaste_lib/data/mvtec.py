"""List folders in the MVTec AD layout (metadata: :mod:`.categories`; decoding: :mod:`.images`).

The layout (the same for the real MVTec AD, for :mod:`.synthetic` output and for your own data)::

    ROOT/<category>/train/good/*.png                 defect-free training images
    ROOT/<category>/test/good/*.png                  defect-free test images
    ROOT/<category>/test/<defect>/*.png              defective test images, one folder per defect type
    ROOT/<category>/ground_truth/<defect>/<stem>_mask.png   pixel masks (0 background, 255 defect)

Images may be .png .jpg .jpeg .bmp .tif .tiff (any case), of any size and aspect ratio, in
grayscale, RGB, RGBA or palette mode: :func:`~.images.read_image` always returns RGB. Listing
order is deterministic (``good`` first, then defect types alphabetically, files by name).

Example:
    >>> from cutpaste_lib.data import category_info, load_split
    >>> category_info("screw")
    CategoryInfo(name='screw', kind='object', aligned=False)
    >>> samples = load_split(root, "synth_grid", "test")  # doctest: +SKIP
    >>> samples[0].label, samples[-1].mask_path.name  # doctest: +SKIP
    (0, '003_mask.png')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cutpaste_lib.data.categories import (
    MVTEC_CATEGORIES,
    MVTEC_OBJECTS,
    MVTEC_TEXTURES,
    SYNTHETIC_CATEGORIES,
    CategoryInfo,
    Kind,
    category_info,
)
from cutpaste_lib.data.images import read_image, read_mask
from cutpaste_lib.errors import DataNotFoundError, DatasetError

__all__ = [
    "IMAGE_EXTENSIONS",
    "MVTEC_CATEGORIES",
    "MVTEC_OBJECTS",
    "MVTEC_TEXTURES",
    "SYNTHETIC_CATEGORIES",
    "CategoryInfo",
    "Kind",
    "Sample",
    "Split",
    "category_info",
    "find_mask",
    "is_image_file",
    "list_categories",
    "load_split",
    "read_image",
    "read_mask",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Suffixes read as images (compared case-insensitively); other files are ignored."""

Split = Literal["train", "test"]


@dataclass(frozen=True)
class Sample:
    """One image of a split.

    Attributes:
        path: the image file.
        label: 0 for a defect-free image, 1 for a defective one.
        defect: ``"good"`` or the defect type (the folder name under ``test/``).
        mask_path: the ground-truth mask of a defective image, ``None`` for good images.
    """

    path: Path
    label: int
    defect: str
    mask_path: Path | None


def is_image_file(path: Path) -> bool:
    """A visible file with one of :data:`IMAGE_EXTENSIONS` (any case)."""
    return (
        path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS
    )


def _images_in(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if is_image_file(p)), key=lambda p: p.name)


def _subdirs(folder: Path) -> list[Path]:
    return sorted(
        (p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
        key=lambda p: p.name,
    )


def list_categories(root: str | Path) -> list[str]:
    """Names of the sub-folders of ``root`` that look like categories (have ``train/`` or ``test/``).

    Raises:
        DataNotFoundError: ``root`` is not a folder.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFoundError(
            f"dataset root not found: {root} (generate one with `cutpaste synth --out {root}` "
            "or point CUTPASTE_DATA at an MVTec AD folder)"
        )
    return [p.name for p in _subdirs(root) if (p / "train").is_dir() or (p / "test").is_dir()]


def _category_dir(root: Path, category: str) -> Path:
    found = list_categories(root)
    if category not in found:
        listing = ", ".join(found) if found else "none"
        raise DataNotFoundError(
            f"category {category!r} not found in {root} (categories found: {listing})"
        )
    return root / category


def _mask_index(root: Path, category: str, defect: str) -> dict[str, Path]:
    folder = root / category / "ground_truth" / defect
    if not folder.is_dir():
        return {}
    return {p.name.lower(): p for p in folder.iterdir() if is_image_file(p)}


def _lookup_mask(index: dict[str, Path], image: Path) -> Path | None:
    for stem in (f"{image.stem}_mask", image.stem):
        for ext in IMAGE_EXTENSIONS:
            hit = index.get(f"{stem}{ext}".lower())
            if hit is not None:
                return hit
    return None


def find_mask(root: str | Path, category: str, defect: str, image: Path) -> Path | None:
    """The ground-truth mask of a defective image: ``<stem>_mask.<ext>`` (MVTec) or ``<stem>.<ext>``."""
    return _lookup_mask(_mask_index(Path(root), category, defect), Path(image))


def load_split(
    root: str | Path, category: str, split: Split, *, require_masks: bool = True
) -> list[Sample]:
    """List the images of one split of one category, with labels and mask paths.

    ``train`` returns the images of ``train/good`` (label 0). ``test`` returns ``test/good``
    (label 0) and every other folder of ``test/`` (label 1, defect type = folder name), each
    defective image with its mask from ``ground_truth/``. With ``require_masks=False`` (image-level
    evaluation, e.g. your own data labelled by folder only) a defective image without a mask is
    kept with ``mask_path=None``.

    Raises:
        DataNotFoundError: ``root``, the category or the split folder is missing.
        DatasetError: no images in ``train/good`` or ``test``, or a defective image has no mask
            (``require_masks``).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root).expanduser()
    cat_dir = _category_dir(root, category)
    split_dir = cat_dir / split
    if split == "train":
        good = split_dir / "good"
        if not good.is_dir():
            raise DataNotFoundError(
                f"no training folder {good} (MVTec layout: <category>/train/good)"
            )
        images = _images_in(good)
        if not images:
            raise DatasetError(
                f"no images in {good} (looked for {', '.join(IMAGE_EXTENSIONS)}, any case)"
            )
        return [Sample(p, 0, "good", None) for p in images]

    if not split_dir.is_dir():
        raise DataNotFoundError(
            f"no test folder {split_dir} (MVTec layout: <category>/test/<defect>)"
        )
    defects = [d.name for d in _subdirs(split_dir)]
    defects.sort(key=lambda name: (name != "good", name))
    samples: list[Sample] = []
    for defect in defects:
        index = _mask_index(root, category, defect) if defect != "good" else {}
        for image in _images_in(split_dir / defect):
            if defect == "good":
                samples.append(Sample(image, 0, "good", None))
                continue
            mask = _lookup_mask(index, image)
            if mask is None and require_masks:
                expected = cat_dir / "ground_truth" / defect / f"{image.stem}_mask.png"
                raise DatasetError(
                    f"defective test image {image} has no mask (expected {expected})"
                )
            samples.append(Sample(image, 1, defect, mask))
    if not samples:
        raise DatasetError(f"no test images in {split_dir}")
    return samples
