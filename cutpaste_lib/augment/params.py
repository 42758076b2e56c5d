"""The names of the augmentations: variants, sampling constants, parameter types, input checks.

Everything here is data: the ranges of the paper (A.2), the NamedTuples that carry the drawn
parameters from the samplers to the pixel code, and the checks that the public functions run
on their inputs before anything is drawn.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

VARIANTS: tuple[str, ...] = ("cutpaste", "scar", "union", "3way")
Variant = Literal["cutpaste", "scar", "union", "3way"]
Implementation = Literal["batched", "per_image"]
AspectSampling = Literal["log_uniform", "two_interval"]

REFERENCE_SIZE = 256
"""Side of the working image the paper's scar sizes (in pixels) refer to."""

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
IDENTITY = (1.0, 1.0, 1.0, 0.0)  # the factor of each op that leaves the image unchanged
MAX_TRIES = 10  # RandomErasing's number of attempts before it gives up
CUTPASTE_AREA = (0.02, 0.15)  # paper A.2: patch area as a fraction of the image
CUTPASTE_ASPECT = (0.3, 3.3)  # width / height
SCAR_WIDTH = (2, 16)  # pixels of a 256 px image
SCAR_LENGTH = (10, 25)
SCAR_ROTATION = (-45, 45)  # degrees
PASTE_JITTER = 0.1  # ColorJitter magnitude of every pasted patch (all four ops)


class Augmented(NamedTuple):
    """Augmented images (B, 3, H, W) float and the mask of pasted pixels (B, 1, H, W) bool."""

    images: Tensor
    masks: Tensor


class ProxyBatch(NamedTuple):
    """Classifier inputs of one step: images (K*B, 3, h, w), labels (K*B,) int64, masks (K*B, 1, h, w).

    Laid out view by view: the B normal images first (label 0), then the B augmented ones
    (label 1), then for 3-way the B scars (label 2). Image ``k*B + i`` comes from original ``i``.
    """

    images: Tensor
    labels: Tensor
    masks: Tensor


class PasteParams(NamedTuple):
    """Parameters of one paste per image; every field has the batch as first dimension.

    Coordinates are continuous pixel units (pixel ``i`` covers ``[i, i+1)``).
    """

    height: Tensor  # (B,) rectangle extent along rows before rotation (px)
    width: Tensor  # (B,) extent along columns before rotation (px)
    angle: Tensor  # (B,) degrees, counter-clockwise as displayed
    src_y: Tensor  # (B,) centre of the cut rectangle
    src_x: Tensor
    dst_y: Tensor  # (B,) centre of the pasted rectangle
    dst_x: Tensor
    factors: Tensor  # (B, 4) brightness, contrast, saturation factors and hue shift
    order: Tensor  # (B, 4) int64, the order in which the four jitter ops are applied

    def take(self, index: Tensor) -> PasteParams:
        """The parameters of a subset of the images (``index`` into the batch)."""
        return PasteParams(*(f[index] for f in self))


class WholeImageParams(NamedTuple):
    """Per-image shift (int64 pixels, rows and columns) and colour jitter of the whole image."""

    shift_y: Tensor
    shift_x: Tensor
    factors: Tensor
    order: Tensor


class ProxyParams(NamedTuple):
    """Every random choice of one training step, drawn before any pixel is touched.

    ``whole``: the whole-image shift and jitter per original (None: switched off); ``crop``:
    the patch-mode crop corners (B, 2) (None: whole images); ``paste``: the (K-1)*B pastes,
    view by view; ``is_cutpaste``: which pastes are CutPaste (the rest are scars).
    """

    whole: WholeImageParams | None
    crop: Tensor | None
    paste: PasteParams
    is_cutpaste: Tensor


def num_classes(variant: str) -> int:
    """Number of classifier outputs: 3 for "3way", else 2 (normal vs augmented)."""
    check_variant(variant)
    return 3 if variant == "3way" else 2


def views_per_image(variant: str) -> int:
    """How many classifier inputs one original image gives (K in ProxyBatch)."""
    return num_classes(variant)


# ====== input checks ======


def check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def check_implementation(implementation: str) -> None:
    if implementation not in ("batched", "per_image"):
        raise ValueError(f"implementation must be 'batched' or 'per_image', got {implementation!r}")


def check_images(images: Tensor, generator: torch.Generator) -> None:
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"images must be a (B, 3, H, W) tensor, got {shape}")
    if not images.is_floating_point():
        raise TypeError(
            f"images must be float in [0, 1], got {images.dtype}: convert uint8 with images.float() / 255"
        )
    if not isinstance(generator, torch.Generator):
        raise TypeError(
            "generator must be a torch.Generator (e.g. torch.Generator(device).manual_seed(0))"
        )
    if generator.device.type not in (images.device.type, "cpu"):
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}: "
            f"create it with torch.Generator(device={str(images.device)!r}) or on the CPU"
        )


def check_jitter(brightness: float, contrast: float, saturation: float, hue: float) -> None:
    for name, m in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if m < 0:
            raise ValueError(f"{name} jitter must be >= 0, got {m}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")


def check_patch_size(size: tuple[int, int], patch_size: int) -> None:
    H, W = size
    if not 0 < patch_size <= min(H, W):
        raise ValueError(
            f"patch_size must be in [1, {min(H, W)}] for {H}x{W} images, got {patch_size}"
        )
