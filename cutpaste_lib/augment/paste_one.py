"""The readable reference of a paste: one image at a time, slicing plus torchvision jitter.

:mod:`cutpaste_lib.augment.batched_paste` computes the same pixels for a whole batch at once;
this is the version to read (and the one the tests compare it with).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cutpaste_lib.augment.colour import jitter_one
from cutpaste_lib.augment.geometry import half_extents, unrotate
from cutpaste_lib.augment.params import PasteParams


def cutpaste_one(image: Tensor, p: PasteParams) -> tuple[Tensor, Tensor]:
    """CutPaste on one image (3, H, W) with the parameters of one image (0-d fields)."""
    h, w = int(p.height), int(p.width)
    sy, sx = int(p.src_y - h / 2), int(p.src_x - w / 2)  # exact: corners are integers
    dy, dx = int(p.dst_y - h / 2), int(p.dst_x - w / 2)
    patch = image[:, sy : sy + h, sx : sx + w]
    patch = jitter_one(patch, p.factors, p.order)
    out = image.clone()
    out[:, dy : dy + h, dx : dx + w] = patch
    mask = torch.zeros(1, *image.shape[-2:], dtype=torch.bool, device=image.device)
    mask[:, dy : dy + h, dx : dx + w] = True
    return out, mask


def scar_one(image: Tensor, p: PasteParams) -> tuple[Tensor, Tensor]:
    """Scar on one image (3, H, W): cut an upright strip, jitter it, paste it rotated."""
    H, W = image.shape[-2:]
    ext_y, ext_x = (float(e) for e in half_extents(p.height, p.width, p.angle))
    y0, x0 = max(0, math.floor(float(p.dst_y) - ext_y)), max(0, math.floor(float(p.dst_x) - ext_x))
    y1, x1 = (
        min(H, math.ceil(float(p.dst_y) + ext_y) + 1),
        min(W, math.ceil(float(p.dst_x) + ext_x) + 1),
    )
    ys = torch.arange(y0, y1, device=image.device)[:, None]  # every destination pixel near the scar
    xs = torch.arange(x0, x1, device=image.device)[None, :]
    theta = torch.deg2rad(p.angle)
    ux, uy = unrotate(xs + 0.5 - p.dst_x, ys + 0.5 - p.dst_y, torch.cos(theta), torch.sin(theta))
    inside = (ux >= -p.width / 2) & (ux < p.width / 2) & (uy >= -p.height / 2) & (uy < p.height / 2)
    src_y = torch.floor(p.src_y + uy).long().clamp(0, H - 1)[inside]
    src_x = torch.floor(p.src_x + ux).long().clamp(0, W - 1)[inside]
    dst_y, dst_x = (ys + 0 * xs)[inside], (xs + 0 * ys)[inside]
    pixels = image[:, src_y, src_x].unsqueeze(-1)  # (3, n, 1): the strip as a tiny image
    pixels = jitter_one(pixels, p.factors, p.order)
    out = image.clone()
    out[:, dst_y, dst_x] = pixels.squeeze(-1)
    mask = torch.zeros(1, H, W, dtype=torch.bool, device=image.device)
    mask[:, dst_y, dst_x] = True
    return out, mask
