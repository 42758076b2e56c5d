"""Decode image and mask files: any mode to RGB, 16-bit/float scaled to 8 bit, masks binarised.

Errors name the file: a missing one raises :class:`~cutpaste_lib.errors.DataNotFoundError`, a
corrupt or truncated one :class:`~cutpaste_lib.errors.DatasetError`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from cutpaste_lib.errors import DataNotFoundError, DatasetError


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
