"""Every random choice of one proxy batch, drawn before any pixel is touched: whole-image
augmentation, patch crop, CutPaste and/or Scar, and for "union" the coin between them."""

from __future__ import annotations

from typing import Any

import torch

from cutpaste_lib.augment.draws import Drawn, Draws, draw, map_arrays
from cutpaste_lib.augment.geometry import scar_scale
from cutpaste_lib.augment.params import (
    CUTPASTE_ASPECT,
    REFERENCE_SIZE,
    AspectSampling,
    PasteParams,
    ProxyParams,
    Variant,
    check_patch_size,
    check_variant,
)
from cutpaste_lib.augment.paste_params import (
    SCAR_DRAWS,
    check_aspect,
    cutpaste_draws,
    cutpaste_params,
    scar_params,
)
from cutpaste_lib.augment.patch_crop import CROP_DRAWS, crop_corners
from cutpaste_lib.augment.transfer import move_params
from cutpaste_lib.augment.whole_image import WHOLE_IMAGE_DRAWS, WholeImageAug


def sample_proxy_params(
    batch: int,
    size: tuple[int, int],
    variant: Variant,
    *,
    generator: torch.Generator,
    patch_size: int | None = None,
    whole_image_aug: WholeImageAug | None = WholeImageAug(),  # noqa: B008 (frozen, immutable)
    aspect_sampling: AspectSampling = "log_uniform",
    device: torch.device | str | None = None,
    host_arithmetic: bool = True,
    scar_reference: int = REFERENCE_SIZE,
) -> ProxyParams:
    """Draw every parameter of one proxy batch of ``batch`` originals of ``size = (H, W)``.

    All the randomness of :func:`~cutpaste_lib.augment.proxy.make_proxy_batch` lives here, in
    this order: whole-image augmentation, patch crop, CutPaste and/or Scar, and for "union"
    the coin between them. Scars are sized on the full image, also in patch mode, as pixels of
    a ``scar_reference`` image (paper: 256) scaled to ``size``.

    ``device``: where the parameters are wanted (default: the generator's device). Drawn on a
    CPU generator for another device, they are sent there in one pinned, non-blocking copy
    per dtype (:func:`~cutpaste_lib.augment.transfer.move_params`), straight from the
    samplers' arrays; training does this. ``host_arithmetic``: see
    :func:`~cutpaste_lib.augment.draws.draw` (the same numbers either way).
    """
    xp_tensor, params = draw_proxy_params(
        batch,
        size,
        variant,
        generator=generator,
        patch_size=patch_size,
        whole_image_aug=whole_image_aug,
        aspect_sampling=aspect_sampling,
        host_arithmetic=host_arithmetic,
        scar_reference=scar_reference,
    )
    if device is not None and not _same_device(torch.device(device), generator.device):
        return move_params(params, torch.device(device))
    return map_arrays(params, xp_tensor)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def proxy_draws(
    variant: str,
    *,
    patch_size: int | None,
    whole_image_aug: WholeImageAug | None,
    aspect_sampling: str,
) -> Draws:
    """What one proxy batch draws per original, in order (the order is part of a seed)."""
    pieces: dict[str, Any] = {}
    if whole_image_aug is not None:
        pieces["whole"] = WHOLE_IMAGE_DRAWS
    if patch_size is not None:
        pieces["crop"] = CROP_DRAWS
    if variant != "scar":
        pieces["cutpaste"] = cutpaste_draws(aspect_sampling)
    if variant != "cutpaste":
        pieces["scar"] = SCAR_DRAWS
    if variant == "union":
        pieces["coin"] = ()  # between CutPaste and Scar
    return Draws(**pieces)


def draw_proxy_params(
    batch: int,
    size: tuple[int, int],
    variant: str,
    *,
    generator: torch.Generator,
    patch_size: int | None,
    whole_image_aug: WholeImageAug | None,
    aspect_sampling: AspectSampling,
    host_arithmetic: bool,
    scar_reference: int = REFERENCE_SIZE,
) -> tuple[Any, ProxyParams]:
    """:func:`sample_proxy_params` with the arrays of the samplers' arithmetic as leaves, and
    the function that turns such an array into a torch tensor."""
    check_variant(variant)
    # every check first, then one draw for the whole batch
    if whole_image_aug is not None:
        whole_image_aug._check()
    if patch_size is not None:
        check_patch_size(size, patch_size)
    if variant != "scar":
        check_aspect(CUTPASTE_ASPECT, aspect_sampling)
    layout = proxy_draws(
        variant,
        patch_size=patch_size,
        whole_image_aug=whole_image_aug,
        aspect_sampling=aspect_sampling,
    )
    u = draw(generator, layout, (batch,), host_arithmetic=host_arithmetic)
    crop_size = size if patch_size is None else (patch_size, patch_size)
    whole = None if whole_image_aug is None else whole_image_aug._params(u.whole, size)
    corners = None if patch_size is None else crop_corners(u.crop, size, patch_size)
    pastes = _pastes(u, variant, crop_size, scar_scale(size, scar_reference))
    return u.xp.tensor, ProxyParams(whole, corners, *pastes)


def _pastes(
    u: Drawn, variant: str, crop_size: tuple[int, int], scale: float
) -> tuple[PasteParams, Any]:
    """The pastes of the augmented views and which of them are CutPaste."""
    xp = u.xp
    # CutPaste inside the crop; scars sized on the full image, also in patch mode
    cp = None if variant == "scar" else cutpaste_params(u.cutpaste, size=crop_size)
    sc = None if variant == "cutpaste" else scar_params(u.scar, size=crop_size, scale=scale)
    batch = (cp if cp is not None else sc).height.shape[0]
    if variant == "cutpaste":
        return cp, xp.full(batch, True, cp.height)
    if variant == "scar":
        return sc, xp.full(batch, False, sc.height)
    if variant == "3way":
        params = PasteParams(*(xp.concatenate([c, s]) for c, s in zip(cp, sc)))
        kinds = [xp.full(batch, True, cp.height), xp.full(batch, False, cp.height)]
        return params, xp.concatenate(kinds)
    # union: each image gets CutPaste or Scar parameters with probability 1/2
    is_cutpaste = u.coin < 0.5
    params = PasteParams(
        *(xp.where(is_cutpaste.reshape(-1, *[1] * (c.ndim - 1)), c, s) for c, s in zip(cp, sc))
    )
    return params, is_cutpaste
