"""Colour jitter as ``torchvision.transforms.ColorJitter`` does it: its sampler and three
implementations (one image with torchvision's functional ops, whole images batched, pasted
pixels batched block by block), which give the same pixels."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torchvision.transforms.functional as TF
from torch import Tensor

from cutpaste_lib.augment.draws import NUMPY_OPS, Drawn, Draws, sample
from cutpaste_lib.augment.params import IDENTITY, check_jitter

JITTER_DRAWS = Draws(factors=(4,), order=(4,))  # per image: four factors, four sort keys


def sample_jitter(
    batch: int,
    *,
    generator: torch.Generator,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    hue: float = 0.1,
    host_arithmetic: bool = True,
) -> tuple[Tensor, Tensor]:
    """Colour-jitter factors (B, 4) and a random op order (B, 4), as ``ColorJitter`` draws them.

    Brightness, contrast and saturation factors are U(max(0, 1-m), 1+m); the hue shift is
    U(-m, m) in turns of the colour wheel. A magnitude of 0 gives the identity factor exactly,
    and identity ops are skipped by both implementations. ``host_arithmetic``: see
    :func:`cutpaste_lib.augment.draws.draw` (the same numbers either way).
    """
    check_jitter(brightness, contrast, saturation, hue)
    magnitudes = (brightness, contrast, saturation, hue)
    body = functools.partial(jitter_params, magnitudes=magnitudes)
    return sample(generator, JITTER_DRAWS, (batch,), body, host_arithmetic=host_arithmetic)


def jitter_params(u: Drawn, magnitudes: tuple[float, float, float, float]) -> tuple[Any, Any]:
    """Factors and op order from the uniforms of :data:`JITTER_DRAWS`."""
    xp = u.xp
    b, c, s, h = magnitudes
    low = (max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h)
    high = (1 + b, 1 + c, 1 + s, h)
    if xp is NUMPY_OPS:  # rows of bounds: two whole-array ops
        lo_row, span_row = _bounds_rows(low, high)
        factors = span_row * u.factors + lo_row  # the same float32 arithmetic as the columns below
    else:  # column by column with Python bounds: no small host-to-device copy (a sync on CUDA)
        factors = torch.stack(
            [lo + (hi - lo) * u.factors[:, k] for k, (lo, hi) in enumerate(zip(low, high))], 1
        )
    return factors, xp.argsort(u.order)


@functools.cache
def _bounds_rows(low: tuple[float, ...], high: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(1, 4) float32 rows of the lower bounds and spans, made once per magnitude setting."""
    lo = np.array([low], dtype=np.float32)
    span = np.array([[hi - lo_ for lo_, hi in zip(low, high)]], dtype=np.float32)
    return lo, span


def _gray(x: Tensor) -> Tensor:
    r, g, b = x.unbind(dim=-3)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(-3)  # torchvision's weights and order


def adjust_hue(x: Tensor, shift: Tensor | float) -> Tensor:
    """Rotate the hue of RGB images (..., 3, H, W) by ``shift`` turns (per image, broadcastable).

    Same HSV arithmetic as ``torchvision.transforms.functional.adjust_hue``, written so that a
    tensor of shifts applies one per image: value and chroma are kept, and each channel is
    ``v - chroma * clamp(min(k, 4 - k), 0, 1)`` with ``k = (n + 6 h) mod 6``, n = 5, 3, 1.
    """
    r, g, b = x.unbind(dim=-3)
    maxc = x.amax(dim=-3)
    chroma = maxc - x.amin(dim=-3)
    gray = chroma == 0
    div = torch.where(gray, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / div, (maxc - g) / div, (maxc - b) / div
    h = (
        (maxc == r) * (bc - gc)
        + ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
        + ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    )
    h = torch.fmod(h / 6.0 + 1.0, 1.0)
    h = (h + shift) % 1.0
    n = torch.arange(5.0, 0.0, -2.0, device=x.device, dtype=x.dtype).view(3, 1, 1)  # 5, 3, 1
    k = (n + 6.0 * h.unsqueeze(-3)) % 6.0
    return maxc.unsqueeze(-3) - chroma.unsqueeze(-3) * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


def _jitter_steps(
    x: Tensor,
    *,
    factors: Tensor,
    order: Tensor,
    mean_gray: Callable[[Tensor], Tensor],
    hue: bool,
) -> Tensor:
    """The four jitter steps of a batch, branch-free: no host sync, no per-image indexing.

    ``x`` is (M, 3, ...) with one row per image (or patch). At step ``s`` image ``i`` applies
    op ``order[i, s]``. Brightness, contrast and saturation are all one blend followed by a
    clamp, ``clamp(a * x + b * gray(x) + c, 0, 1)`` with per-image coefficients
    (brightness: a = f; contrast: a = f, c = (1 - f) * mean grey; saturation: a = f, b = 1 - f),
    so one fused expression serves every image whatever its op; an image whose op at this step
    is hue gets a = 1, b = c = 0, which is exactly the identity (likewise an identity factor).
    Hue is computed for the whole batch and kept where ``order`` says so (``torch.where``);
    ``hue=False`` skips it when every hue shift is known to be 0.
    """
    M = x.shape[0]
    view = (M,) + (1,) * (x.dim() - 1)
    for step in range(4):
        op = order[:, step]
        f = factors.gather(1, op.unsqueeze(1)).squeeze(1)
        gray = _gray(x)
        a = torch.where(op < 3, f, 1.0).view(view)
        b = torch.where(op == 2, 1.0 - f, 0.0).view(view)
        c = torch.where(op == 1, 1.0 - f, 0.0).view(view) * mean_gray(gray)
        x = (a * x + b * gray + c).clamp_(0.0, 1.0)
        if hue:
            use = ((op == 3) & (f != 0.0)).view(view)
            x = torch.where(use, adjust_hue(x, f.view(view[:-1])), x)
    return x


def _image_mean(gray: Tensor) -> Tensor:
    return gray.mean(dim=(-3, -2, -1), keepdim=True)


def jitter_batched(x: Tensor, factors: Tensor, order: Tensor, *, hue: bool = True) -> Tensor:
    """Colour jitter of whole images (B, 3, H, W), each with its own factors and op order.

    Same result as :func:`jitter_one` image by image (torchvision's functional ops), computed
    for the whole batch at once without a host sync (see :func:`_jitter_steps`). Contrast
    blends with each image's mean grey level. ``hue=False`` is a promise that every hue shift
    is 0 (e.g. :class:`WholeImageAug` with ``hue=0``) and skips the hue arithmetic; the
    default computes it and keeps it where a shift is non-zero.
    """
    return _jitter_steps(x, factors=factors, order=order, mean_gray=_image_mean, hue=hue)


def jitter_blocks(pixels: Tensor, valid: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Colour jitter of pasted pixels laid out one block per paste, padded to one length.

    Args:
        pixels: (M, 3, P, 1) float, row ``j`` holding the pixels of paste ``j`` (and padding).
        valid: (M, 1, P, 1) bool, True for real pixels. Padding does not enter the means and
            its jittered values are meaningless (the caller throws them away).
        factors, order: (M, 4) as :func:`sample_jitter` returns them.

    Contrast blends with the mean grey level of each paste's valid pixels, as
    ``TF.adjust_contrast`` does on the cut patch. Fixed shapes throughout: no host sync.
    """
    weight = valid.to(pixels.dtype)
    count = weight.sum(dim=(-2, -1), keepdim=True).clamp(min=1.0)

    def mean_gray(gray: Tensor) -> Tensor:
        return (gray * weight).sum(dim=(-2, -1), keepdim=True) / count

    return _jitter_steps(pixels, factors=factors, order=order, mean_gray=mean_gray, hue=True)


def jitter_one(image: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Readable colour jitter of one image (3, h, w) with torchvision's functional ops."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op in order.tolist():
        f = float(factors[op])
        if f != IDENTITY[op]:
            image = ops[op](image, f)
    return image
