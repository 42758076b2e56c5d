"""Read folders in the MVTec AD layout, and the per-category metadata the paper relies on.

The layout (the same for the real MVTec AD, for :mod:`.synthetic` output and for your own data)::

    ROOT/<category>/train/good/*.png                 defect-free training images
    ROOT/<category>/test/good/*.png                  defect-free test images
    ROOT/<category>/test/<defect>/*.png              defective test images, one folder per defect type
    ROOT/<category>/ground_truth/<defect>/<stem>_mask.png   pixel masks (0 background, 255 defect)

Images may be .png .jpg .jpeg .bmp .tif .tiff (any case), of any size and aspect ratio, in
grayscale, RGB, RGBA or palette mode: :func:`read_image` always returns RGB. Listing order is
deterministic (``good`` first, then defect types alphabetically, files by name).

Example:
    >>> from cutpaste_lib.data import category_info, load_split
    >>> category_info("screw")
    CategoryInfo(name='screw', kind='object', aligned=False)
    >>> samples = load_split(root, "synth_grid", "test")  # doctest: +SKIP
    >>> samples[0].label, samples[-1].mask_path.name  # doctest: +SKIP
    (0, '003_mask.png')
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from cutpaste_lib.errors import DataNotFoundError, DatasetError

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
"""Suffixes read as images (compared case-insensitively); other files are ignored."""

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
Split = Literal["train", "test"]


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


def _open(path: Path) -> Image.Image:
    try:
        image = Image.open(path)
        image.load()  # decode now so a truncated file fails here, naming the file
    except FileNotFoundError:
        raise DataNotFoundError(f"image not found: {path}") from None
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as exc:
        raise DatasetError(
            f"cannot read image {path}: {exc} (corrupt or truncated file?)"
        ) from None
    return image


def _to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float images (some TIFFs) scaled to 8 bit instead of being clipped."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(image, dtype=np.float64)
        peak = float(array.max()) if array.size else 0.0
        if image.mode.startswith("I;16") or (image.mode == "I" and peak > 255):
            scale = 65535.0  # 16-bit data (PIL opens some 16-bit PNGs as mode "I")
        elif image.mode == "F" and peak <= 1.0:
            scale = 1.0  # float image in [0, 1]
        else:
            scale = 255.0 if peak <= 255 else peak
        array = np.clip(array / scale * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(array, mode="L")
    return image


def read_image(path: str | Path) -> Image.Image:
    """Decode an image file as RGB (grayscale replicated, alpha dropped, palette expanded).

    Raises:
        DataNotFoundError: the file does not exist.
        DatasetError: the file is corrupt, truncated or not an image (the message names it).
    """
    image = _to_8bit(_open(Path(path)))
    if image.mode == "P":
        image = image.convert("RGBA")
    return image.convert("RGB") if image.mode != "RGB" else image


def read_mask(
    path: str | Path, size: tuple[int, int], *, image_size: tuple[int, int] | None = None
) -> np.ndarray:
    """Read a ground-truth mask as a boolean (H, W) array at ``size`` = (H, W).

    Binarisation: a mask whose values are only 0/1 is used as is; otherwise pixels >= 128 are
    defective (robust to JPEG noise around 0/255 masks). Resizing is nearest-neighbour, so the
    mask stays binary.

    Args:
        path: the mask file.
        size: (H, W) of the output.
        image_size: (H, W) of the image the mask belongs to, at its original resolution. When
            given, a mask of another size with the same aspect ratio (within 2 %) is resized with
            a warning; another aspect ratio means it belongs to another image: an error.

    Raises:
        DatasetError: corrupt mask, or its aspect ratio differs from its image's.
    """
    path = Path(path)
    mask = _to_8bit(_open(path))
    if mask.mode != "L":
        mask = mask.convert("L")
    w, h = mask.size
    if image_size is not None and (h, w) != tuple(image_size):
        ih, iw = image_size
        if abs((w / h) / (iw / ih) - 1.0) > 0.02:
            raise DatasetError(
                f"mask {path} is {w}x{h} but its image is {iw}x{ih} (different aspect ratio: "
                "is it the mask of another image?)"
            )
        warnings.warn(
            f"mask {path} is {w}x{h}, its image {iw}x{ih}: resizing the mask (nearest)",
            stacklevel=2,
        )
    array = np.asarray(mask)
    binary = array > 0 if array.max() <= 1 else array >= 128
    out_h, out_w = size
    if (h, w) != (out_h, out_w):
        resized = Image.fromarray(binary.astype(np.uint8) * 255).resize(
            (out_w, out_h), Image.NEAREST
        )
        binary = np.asarray(resized) >= 128
    return binary
