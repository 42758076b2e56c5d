"""Pastes of a whole batch at once: gather/scatter on flat pixel indices, fixed shapes.

Every tensor has a shape fixed by the sampling ranges
(:func:`~cutpaste_lib.augment.geometry.paste_window_bound`), so there is no loop over images
or pixels and no host sync: on a GPU the CPU queues the next batch while the previous training
step still runs. Same pixels as :mod:`cutpaste_lib.augment.paste_one`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cutpaste_lib.augment.colour import jitter_blocks
from cutpaste_lib.augment.geometry import half_extents, unrotate
from cutpaste_lib.augment.params import Augmented, PasteParams


def paste_windows(
    p: PasteParams, size: tuple[int, int], max_pixels: int | None
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Destination pixels of every paste, one fixed-length block each.

    Returns ``dst`` and ``src`` (M, P) flat pixel indices (``y * W + x``) into the destination
    and source images, ``inside`` (M, P) bool, and P. Block ``j`` enumerates paste ``j``'s
    window row by row (``k -> (k // sw_j, k % sw_j)``), exactly the window
    :func:`~cutpaste_lib.augment.paste_one.scar_one` scans; ``inside`` marks the pixels whose
    centre, rotated back, falls in the cut rectangle. Entries past the window
    (``k >= sh_j sw_j``) are padding. ``max_pixels=None`` sizes P from the data (one host
    sync); training passes :func:`~cutpaste_lib.augment.geometry.paste_window_bound` (none).
    """
    H, W = size
    M = p.height.shape[0]
    dev = p.height.device
    ext_y, ext_x = half_extents(p.height, p.width, p.angle)
    y0 = torch.floor(p.dst_y - ext_y).clamp(0, H - 1).long()
    x0 = torch.floor(p.dst_x - ext_x).clamp(0, W - 1).long()
    # same window as scar_one: [floor(c - e), ceil(c + e)] inclusive, inside the image
    sh = ((torch.ceil(p.dst_y + ext_y).long() + 1).clamp(max=H) - y0).clamp(min=1)
    sw = ((torch.ceil(p.dst_x + ext_x).long() + 1).clamp(max=W) - x0).clamp(min=1)
    if max_pixels is None:
        max_pixels = int((sh * sw).max()) if M else 1  # host sync
    elif dev.type == "cpu" and M and not torch.compiler.is_compiling():  # free on the CPU
        needed = int((sh * sw).max())
        if needed > max_pixels:
            raise ValueError(
                f"a paste needs {needed} pixels but max_pixels={max_pixels}: "
                "the bound does not cover the sampling ranges"
            )
    k = torch.arange(max_pixels, device=dev)
    r, c = k // sw.view(M, 1), k % sw.view(M, 1)  # (M, P)
    in_window = r < sh.view(M, 1)
    ys, xs = (y0.view(M, 1) + r).clamp(max=H - 1), x0.view(M, 1) + c
    theta = torch.deg2rad(p.angle)
    ux, uy = unrotate(
        xs + 0.5 - p.dst_x.view(M, 1),
        ys + 0.5 - p.dst_y.view(M, 1),
        torch.cos(theta).view(M, 1),
        torch.sin(theta).view(M, 1),
    )
    hw, hh = (p.width / 2).view(M, 1), (p.height / 2).view(M, 1)
    inside = in_window & (ux >= -hw) & (ux < hw) & (uy >= -hh) & (uy < hh)
    src_y = torch.floor(p.src_y.view(M, 1) + uy).long().clamp(0, H - 1)
    src_x = torch.floor(p.src_x.view(M, 1) + ux).long().clamp(0, W - 1)
    return ys * W + xs, src_y * W + src_x, inside, max_pixels


def paste_into(
    out: Tensor,
    masks: Tensor,
    images: Tensor,
    p: PasteParams,
    *,
    max_pixels: int | None = None,
) -> None:
    """Write M pastes into ``out`` (M, 3, H, W) and ``masks`` (M, 1, H, W) in place, batched.

    Paste ``j`` reads its source from ``images[j % B]`` (so 3-way writes the CutPaste and the
    Scar copies of B originals in one call) and ``out`` must already hold the images to paste
    on. Each paste's window of destination pixels is one block of a fixed length P
    (:func:`paste_windows`): gather the source pixels, jitter all blocks together
    (:func:`~cutpaste_lib.augment.colour.jitter_blocks`), scatter back the pixels inside the
    rectangle. Padding and pixels outside the rotated rectangle are sent to a scratch tail
    past the image, so every write goes to its own address (deterministic, no atomics). With
    ``max_pixels`` from :func:`~cutpaste_lib.augment.geometry.paste_window_bound` nothing here
    waits for the device: no loop over images or pixels and no host sync.
    """
    M = p.height.shape[0]
    B, C, H, W = images.shape
    if M == 0:
        return
    shapes_ok = out.shape == (M, C, H, W) and masks.shape == (M, 1, H, W)
    if not (shapes_ok and out.is_contiguous() and masks.is_contiguous()):
        raise ValueError(f"out/masks must be contiguous ({M}, {C}, {H}, {W}) / ({M}, 1, {H}, {W})")
    dst, src, inside, P = paste_windows(p, (H, W), max_pixels)
    dev, HW = images.device, H * W
    source = (torch.arange(M, device=dev) % B).view(M, 1, 1) * C
    plane = torch.arange(C, device=dev).view(1, C, 1)
    src_flat = (source + plane) * HW + src.view(M, 1, P)  # (M, C, P)
    pixels = images.reshape(-1).index_select(0, src_flat.view(-1)).view(M, C, P, 1)
    pixels = jitter_blocks(pixels, inside.view(M, 1, P, 1), p.factors, p.order)
    # pixels not inside go to the scratch tail [HW, HW + P): one address per entry
    target = torch.where(inside, dst, HW + torch.arange(P, device=dev))  # (M, P)
    scratch = torch.cat([out.view(M, C, HW), out.new_empty(M, C, P)], dim=2)
    scratch.scatter_(2, target.view(M, 1, P).expand(M, C, P), pixels.view(M, C, P))
    out.view(M, C, HW).copy_(scratch[:, :, :HW])
    mask_scratch = torch.cat([masks.view(M, 1, HW), masks.new_empty(M, 1, P)], dim=2)
    mask_scratch.scatter_(2, target.view(M, 1, P), inside.view(M, 1, P))
    masks.view(M, 1, HW).copy_(mask_scratch[:, :, :HW])


def paste_batched(images: Tensor, p: PasteParams, *, max_pixels: int | None = None) -> Augmented:
    """Apply one paste per image to a batch (B, 3, H, W), without loops (see :func:`paste_into`)."""
    out = images.contiguous().clone()
    masks = torch.zeros(
        images.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device
    )
    paste_into(out, masks, images.contiguous(), p, max_pixels=max_pixels)
    return Augmented(out, masks)
