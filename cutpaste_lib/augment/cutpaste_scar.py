"""The public paste augmentations: CutPaste and CutPaste-Scar on a batch, with either
implementation (:mod:`~cutpaste_lib.augment.paste_one` or
:mod:`~cutpaste_lib.augment.batched_paste`, same pixels)."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from cutpaste_lib.augment.batched_paste import paste_batched
from cutpaste_lib.augment.geometry import scar_scale
from cutpaste_lib.augment.params import (
    CUTPASTE_AREA,
    CUTPASTE_ASPECT,
    PASTE_JITTER,
    REFERENCE_SIZE,
    SCAR_LENGTH,
    SCAR_ROTATION,
    SCAR_WIDTH,
    AspectSampling,
    Augmented,
    Implementation,
    PasteParams,
    check_images,
    check_implementation,
)
from cutpaste_lib.augment.paste_one import cutpaste_one, scar_one
from cutpaste_lib.augment.paste_params import sample_cutpaste_params, sample_scar_params


def paste(
    images: Tensor,
    params: PasteParams,
    *,
    kind: Literal["cutpaste", "scar"] | Tensor,
    implementation: Implementation = "batched",
) -> Augmented:
    """Apply sampled paste parameters with the chosen implementation (same pixels either way).

    ``kind`` says which readable per-image function to use: "cutpaste", "scar", or a bool
    tensor (B,) that is True for CutPaste images (mixed batches). The batched kernel handles
    both kinds alike (CutPaste is the unrotated, integer-aligned case).
    """
    check_implementation(implementation)
    if implementation == "batched":
        return paste_batched(images, params)
    B = images.shape[0]
    kinds = (
        [kind] * B
        if isinstance(kind, str)
        else ["cutpaste" if k else "scar" for k in kind.tolist()]
    )
    results = [
        (cutpaste_one if kinds[i] == "cutpaste" else scar_one)(images[i], params.take(i))
        for i in range(B)
    ]
    if not results:
        return Augmented(images.clone(), torch.zeros_like(images[:, :1], dtype=torch.bool))
    return Augmented(torch.stack([r[0] for r in results]), torch.stack([r[1] for r in results]))


def cutpaste(
    images: Tensor,
    *,
    generator: torch.Generator,
    area_ratio: tuple[float, float] = CUTPASTE_AREA,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    aspect_sampling: AspectSampling = "log_uniform",
    jitter: float = PASTE_JITTER,
    implementation: Implementation = "batched",
    host_arithmetic: bool = True,
) -> Augmented:
    """CutPaste (paper A.2): cut a rectangle, colour-jitter it, paste it elsewhere in the image.

    Args:
        images: float (B, 3, H, W) in [0, 1], any device.
        generator: ``torch.Generator`` on the images' device.
        area_ratio: patch area as a fraction of the image, uniform (paper: 0.02-0.15).
        aspect_ratio: width/height range (paper: 0.3-3.3).
        aspect_sampling: "log_uniform" (RandomErasing, default) or "two_interval".
        jitter: brightness/contrast/saturation/hue magnitude of the patch jitter (paper: 0.1).
        implementation: "batched" (default) or "per_image" (readable; same pixels).
        host_arithmetic: see :func:`~cutpaste_lib.augment.draws.draw` (same numbers either way).
    """
    check_images(images, generator)
    params = sample_cutpaste_params(
        images.shape[0],
        tuple(images.shape[-2:]),
        generator=generator,
        area_ratio=area_ratio,
        aspect_ratio=aspect_ratio,
        aspect_sampling=aspect_sampling,
        jitter=jitter,
        host_arithmetic=host_arithmetic,
    )
    return paste(images, params, kind="cutpaste", implementation=implementation)


def scar(
    images: Tensor,
    *,
    generator: torch.Generator,
    width: tuple[float, float] = SCAR_WIDTH,
    length: tuple[float, float] = SCAR_LENGTH,
    rotation: tuple[float, float] = SCAR_ROTATION,
    jitter: float = PASTE_JITTER,
    reference_size: int = REFERENCE_SIZE,
    scale: float | None = None,
    implementation: Implementation = "batched",
    host_arithmetic: bool = True,
) -> Augmented:
    """CutPaste-Scar (paper A.2): a thin jittered strip, rotated, pasted fully inside the image.

    ``images``, ``generator``, ``jitter``, ``implementation`` and ``host_arithmetic`` as in
    :func:`cutpaste`.

    Args:
        width, length: strip size in pixels of a ``reference_size`` image (paper: 2-16, 10-25 at 256).
        rotation: angle range in degrees (paper: -45 to 45).
        reference_size: the resolution the pixel sizes refer to; sizes are multiplied by
            ``sqrt(H * W) / reference_size`` (our choice for other resolutions).
        scale: overrides that factor (patch mode passes the full image's scale).
    """
    check_images(images, generator)
    size = tuple(images.shape[-2:])
    params = sample_scar_params(
        images.shape[0],
        size,
        generator=generator,
        width=width,
        length=length,
        rotation=rotation,
        jitter=jitter,
        scale=scar_scale(size, reference_size) if scale is None else scale,
        host_arithmetic=host_arithmetic,
    )
    return paste(images, params, kind="scar", implementation=implementation)
