"""CutPaste, CutPaste-Scar, Union and 3-way proxy batches (Li et al., CVPR 2021, §2 and A.2).

The self-supervised task: tell a normal image from the same image with a patch of itself cut
out, colour-jittered and pasted somewhere else (CutPaste), or with a thin rotated strip pasted
(Scar). Everything here works on float images in [0, 1] of shape (B, 3, H, W) on any device.

One parameter sampler (:func:`sample_cutpaste_params`, :func:`sample_scar_params`,
:func:`sample_jitter`) drives two implementations that give the same pixels:

* ``implementation="per_image"``: readable, one image at a time, slicing plus
  ``torchvision.transforms.functional`` colour jitter. This is the version to read.
* ``implementation="batched"`` (default): the whole batch at once with index arithmetic
  (gather/scatter on flat pixel indices, all augmented views of a step in one call) and a
  batched colour jitter; no loop over images or pixels, four host syncs per batch. This is
  what training uses.

Geometry of a paste. A rectangle of ``height`` x ``width`` pixels (rows x columns) is read at
the source centre and written, rotated by ``angle`` degrees (counter-clockwise as displayed),
at the destination centre. Pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``; a destination
pixel belongs to the paste when its centre, rotated back, falls inside the rectangle, and it
takes the source pixel under that point (nearest neighbour, so no pixel is blended). CutPaste
is the special case ``angle = 0`` with integer sizes and corners: a plain slice copy.

Choices where the paper is silent (repeated in the notebook):

* Aspect ratio = width / height, log-uniform over (0.3, 3.3) as RandomErasing does;
  ``aspect_sampling="two_interval"`` picks (0.3, 1) or (1, 3.3) with probability 1/2 each and
  then a uniform value inside it. Draws whose patch does not fit the image are redrawn (10
  tries, as RandomErasing) and then clamped; this only happens for very elongated images.
* Colour jitter follows ``torchvision.transforms.ColorJitter(0.1, 0.1, 0.1, 0.1)`` (factors
  U(0.9, 1.1), hue shift U(-0.1, 0.1), random order per image). The contrast reference mean is
  the mean grey level of the pasted pixels (for CutPaste exactly the cut patch).
* Scar width and length are continuous (the rotated rectangle is rasterised by pixel centres);
  the unrotated strip is upright (length along rows), as in the authors' sister code, and the
  width range (2-16) overlaps the length range (10-25), so some "scars" are almost square.
* Scar sizes are pixels of the 256 x 256 working image (``reference_size=256``). At another
  resolution they are scaled by ``sqrt(H * W) / 256`` (our choice, so fast-mode 64 px images get
  proportionally small scars), with at least 1 px width and length. In patch mode the scale
  comes from the full image, not the crop: a 64 px crop of a 256 px image keeps 256-px scars,
  while the CutPaste area ratio refers to the crop (the paper: CutPaste inside the crop).
* Whole-image augmentation (:class:`WholeImageAug`, "random translation and color jitters",
  magnitudes unspecified in the paper): shift up to 1/16 of each side with reflection padding,
  brightness/contrast/saturation 0.1, no hue. It is drawn once per original image and shared by
  all its views (normal, CutPaste, Scar), so the views differ only where a patch was pasted and
  the classifier cannot separate the classes on global appearance.

Example:
    >>> import torch
    >>> from cutpaste_lib.augment import make_proxy_batch, num_classes
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 3, 64, 64, generator=g)
    >>> batch = make_proxy_batch(x, "3way", generator=g)
    >>> tuple(batch.images.shape), batch.labels.tolist(), num_classes("3way")
    ((12, 3, 64, 64), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

VARIANTS: tuple[str, ...] = ("cutpaste", "scar", "union", "3way")
Variant = Literal["cutpaste", "scar", "union", "3way"]
Implementation = Literal["batched", "per_image"]
AspectSampling = Literal["log_uniform", "two_interval"]

REFERENCE_SIZE = 256
"""Side of the working image the paper's scar sizes (in pixels) refer to."""

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_IDENTITY = (1.0, 1.0, 1.0, 0.0)  # the factor of each op that leaves the image unchanged
_MAX_TRIES = 10  # RandomErasing's number of attempts before it gives up


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


def num_classes(variant: str) -> int:
    """Number of classifier outputs: 3 for "3way", else 2 (normal vs augmented)."""
    _check_variant(variant)
    return 3 if variant == "3way" else 2


def views_per_image(variant: str) -> int:
    """How many classifier inputs one original image gives (K in ProxyBatch)."""
    return num_classes(variant)


# ====== parameter sampler ======


def _rand(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def sample_jitter(
    batch: int,
    *,
    generator: torch.Generator,
    brightness: float = 0.1,
    contrast: float = 0.1,
    saturation: float = 0.1,
    hue: float = 0.1,
) -> tuple[Tensor, Tensor]:
    """Colour-jitter factors (B, 4) and a random op order (B, 4), as ``ColorJitter`` draws them.

    Brightness, contrast and saturation factors are U(max(0, 1-m), 1+m); the hue shift is
    U(-m, m) in turns of the colour wheel. A magnitude of 0 gives the identity factor exactly,
    and identity ops are skipped by both implementations.
    """
    for name, m in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if m < 0:
            raise ValueError(f"{name} jitter must be >= 0, got {m}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
    low = (max(0.0, 1 - brightness), max(0.0, 1 - contrast), max(0.0, 1 - saturation), -hue)
    high = (1 + brightness, 1 + contrast, 1 + saturation, hue)
    u = _rand((batch, 4), generator)
    # column by column with Python bounds: no small host-to-device copy (a sync on CUDA)
    factors = torch.stack(
        [lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(zip(low, high))], 1
    )
    order = _rand((batch, 4), generator).argsort(dim=1)
    return factors, order


def sample_aspect(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    aspect_ratio: tuple[float, float] = (0.3, 3.3),
    aspect_sampling: AspectSampling = "log_uniform",
) -> Tensor:
    """Aspect ratios (width / height): log-uniform, or uniform in (lo, 1) or (1, hi) with p = 1/2."""
    lo, hi = aspect_ratio
    if not 0 < lo < hi:
        raise ValueError(f"aspect_ratio must satisfy 0 < low < high, got {aspect_ratio}")
    if aspect_sampling == "log_uniform":
        return torch.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * _rand(shape, generator))
    if aspect_sampling == "two_interval":
        if not lo < 1 < hi:
            raise ValueError(
                f"two_interval aspect sampling needs low < 1 < high, got {aspect_ratio}"
            )
        pick_low = _rand(shape, generator) < 0.5
        u = _rand(shape, generator)
        return torch.where(pick_low, lo + (1 - lo) * u, 1 + (hi - 1) * u)
    raise ValueError(
        f"aspect_sampling must be 'log_uniform' or 'two_interval', got {aspect_sampling!r}"
    )


def sample_cutpaste_params(
    batch: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: tuple[float, float] = (0.3, 3.3),
    aspect_sampling: AspectSampling = "log_uniform",
    jitter: float = 0.1,
) -> PasteParams:
    """CutPaste parameters for ``batch`` images of ``size = (H, W)``.

    Area ~ U(area_ratio) * H * W, aspect (width/height) as :func:`sample_aspect`,
    ``h = round(sqrt(area / aspect))``, ``w = round(sqrt(area * aspect))``; cut and paste
    corners uniform over the positions that keep the whole patch inside the image.
    """
    H, W = size
    a0, a1 = area_ratio
    if not 0 < a0 <= a1 <= 1:
        raise ValueError(f"area_ratio must satisfy 0 < low <= high <= 1, got {area_ratio}")
    shape = (batch, _MAX_TRIES)
    area = (a0 + (a1 - a0) * _rand(shape, generator)) * (H * W)
    aspect = sample_aspect(
        shape, generator=generator, aspect_ratio=aspect_ratio, aspect_sampling=aspect_sampling
    )
    h = torch.sqrt(area / aspect).round().clamp(min=1)
    w = torch.sqrt(area * aspect).round().clamp(min=1)
    # first try that fits (argmax returns the first maximum); if none fits, clamp try 0
    first = ((h <= H) & (w <= W)).float().argmax(dim=1, keepdim=True)
    h = h.gather(1, first).squeeze(1).clamp(max=H)
    w = w.gather(1, first).squeeze(1).clamp(max=W)
    u = _rand((batch, 4), generator)
    corners = torch.floor(u * torch.stack([H - h + 1, W - w + 1, H - h + 1, W - w + 1], dim=1))
    corners = torch.minimum(corners, torch.stack([H - h, W - w, H - h, W - w], dim=1))
    factors, order = sample_jitter(
        batch,
        generator=generator,
        brightness=jitter,
        contrast=jitter,
        saturation=jitter,
        hue=jitter,
    )
    return PasteParams(
        height=h,
        width=w,
        angle=torch.zeros_like(h),
        src_y=corners[:, 0] + h / 2,
        src_x=corners[:, 1] + w / 2,
        dst_y=corners[:, 2] + h / 2,
        dst_x=corners[:, 3] + w / 2,
        factors=factors,
        order=order,
    )


def scar_scale(size: tuple[int, int], reference_size: int = REFERENCE_SIZE) -> float:
    """Factor that turns the paper's 256-px scar sizes into pixels of an (H, W) image."""
    return math.sqrt(size[0] * size[1]) / reference_size


def sample_scar_params(
    batch: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator,
    width: tuple[float, float] = (2, 16),
    length: tuple[float, float] = (10, 25),
    rotation: tuple[float, float] = (-45, 45),
    jitter: float = 0.1,
    scale: float = 1.0,
) -> PasteParams:
    """Scar parameters: width ~ U(width), length ~ U(length) (times ``scale``, at least 1 px),
    angle ~ U(rotation) degrees. The unrotated scar is vertical (length along rows); the cut is
    axis-aligned and the rotated paste lies fully inside the image.
    """
    H, W = size
    if not (0 < width[0] <= width[1] and 0 < length[0] <= length[1]):
        raise ValueError(f"scar width/length ranges must be positive, got {width}, {length}")
    if rotation[0] > rotation[1]:
        raise ValueError(f"rotation must be (low, high) degrees, got {rotation}")
    u = _rand((batch, 7), generator)
    w = ((width[0] + (width[1] - width[0]) * u[:, 0]) * scale).clamp(1, W)
    l = ((length[0] + (length[1] - length[0]) * u[:, 1]) * scale).clamp(1, H)
    angle = rotation[0] + (rotation[1] - rotation[0]) * u[:, 2]
    ext_y, ext_x = _half_extents(l, w, angle)
    factors, order = sample_jitter(
        batch,
        generator=generator,
        brightness=jitter,
        contrast=jitter,
        saturation=jitter,
        hue=jitter,
    )
    return PasteParams(
        height=l,
        width=w,
        angle=angle,
        src_y=l / 2 + u[:, 3] * (H - l),
        src_x=w / 2 + u[:, 4] * (W - w),
        dst_y=ext_y + u[:, 5] * (H - 2 * ext_y).clamp(min=0),
        dst_x=ext_x + u[:, 6] * (W - 2 * ext_x).clamp(min=0),
        factors=factors,
        order=order,
    )


def _half_extents(height: Tensor, width: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Half height and half width of the axis-aligned box around the rotated rectangle."""
    theta = torch.deg2rad(angle)
    c, s = torch.cos(theta).abs(), torch.sin(theta).abs()
    return 0.5 * (s * width + c * height), 0.5 * (c * width + s * height)


def _unrotate(px: Tensor, py: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
    """Offsets from the paste centre rotated back into the frame of the cut rectangle.

    Rows grow downwards, so a counter-clockwise rotation on screen is x' = cos x + sin y,
    y' = -sin x + cos y; this is its inverse.
    """
    return cos * px - sin * py, sin * px + cos * py


# ====== colour jitter ======


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


def _op(op: int, x: Tensor, f: Tensor, mean: Tensor | None = None) -> Tensor:
    """One jitter op, channels at dim -3; ``f`` has the grey image's shape up to broadcasting.

    ``mean`` is the contrast reference (mean grey level of each patch); None = whole image.
    """
    if op == 0:  # brightness
        return (f * x).clamp(0.0, 1.0)
    if op == 1:  # contrast: blend with the mean grey level
        if mean is None:
            mean = _gray(x).mean(dim=(-3, -2, -1), keepdim=True)
        return (f * x + (1.0 - f) * mean).clamp(0.0, 1.0)
    if op == 2:  # saturation: blend with the grey image
        return (f * x + (1.0 - f) * _gray(x)).clamp(0.0, 1.0)
    return adjust_hue(x, f.squeeze(-3))


def jitter_batched(x: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Colour jitter of whole images (B, 3, H, W), each with its own factors and op order.

    Each image gets each op exactly once: at step k the images whose k-th op is j are
    processed together (index lists built on the host after one sync), and identity ops
    (e.g. hue when its magnitude is 0) are skipped.
    """
    out = x.clone()
    order_h, factors_h = order.tolist(), factors.tolist()  # one host sync for the whole batch
    groups = [
        [
            i
            for i, (o, f) in enumerate(zip(order_h, factors_h))
            if o[step] == op and f[op] != _IDENTITY[op]
        ]
        for step in range(4)
        for op in range(4)
    ]
    # all index lists in one copy to the device (pinned and asynchronous on CUDA: no sync)
    flat = torch.tensor([i for g in groups for i in g], dtype=torch.long)
    flat = flat.pin_memory().to(x.device, non_blocking=True) if x.is_cuda else flat.to(x.device)
    start = 0
    for k, g in enumerate(groups):
        if g:
            idx = flat[start : start + len(g)]
            op = k % 4
            out[idx] = _op(op, out[idx], factors[idx, op].view(-1, 1, 1, 1))
            start += len(g)
    return out


def _segment_mean(values: Tensor, segment: Tensor, batch: int) -> Tensor:
    """Mean of ``values`` (N,) per segment, broadcast back to the N pixels (segments sorted).

    Sums are differences of a float64 cumulative sum: deterministic on CUDA, unlike
    ``index_add_`` (atomics), so a seed reproduces a batch bit for bit on the same device.
    """
    count = torch.bincount(segment, minlength=batch)
    end = count.cumsum(0)
    csum = F.pad(values.double().cumsum(0), (1, 0))
    mean = (csum[end] - csum[end - count]) / count.clamp(min=1)
    return mean.to(values.dtype)[segment]


def jitter_pixels(
    pixels: Tensor,
    segment: Tensor,
    factors: Tensor,
    order: Tensor,
    *,
    strategy: Literal["auto", "where", "subset"] = "auto",
) -> Tensor:
    """Colour jitter of the pasted pixels of a batch, gathered in one flat list.

    Args:
        pixels: (3, N, 1) float, the pixels of all patches one after the other.
        segment: (N,) int64, which image (row of ``factors``) each pixel belongs to; sorted
            (each image's pixels contiguous), as ``nonzero`` returns them.
        factors, order: (B, 4) as :func:`sample_jitter` returns them.
        strategy: "where" computes every op for every pixel at each of the four steps and
            keeps the image's op for that step (no host syncs: the GPU default); "subset"
            computes each op only on the pixels whose image applies it at that step (4x less
            arithmetic, one ``nonzero`` per step and op: the CPU default). Same result.

    Contrast uses the mean grey level of each image's pixels (a segment mean). Ops whose
    factor is the identity are skipped, as :func:`jitter_one` does.
    """
    if strategy == "auto":
        strategy = "where" if pixels.is_cuda else "subset"
    if strategy not in ("where", "subset"):
        raise ValueError(f"strategy must be 'auto', 'where' or 'subset', got {strategy!r}")
    B = factors.shape[0]
    applies = torch.stack([factors[:, k] != _IDENTITY[k] for k in range(4)], 1)[segment]  # (N, 4)
    f_pix = factors[segment].T.unsqueeze(-1)  # (4, N, 1)
    op_pix = order[segment]  # (N, 4)
    # skip ops no image applies (a host sync, so only for "subset", which syncs anyway)
    active = (
        range(4)
        if strategy == "where"
        else [op for op, a in enumerate(applies.any(0).tolist()) if a]
    )
    for step in range(4):
        current = pixels
        for op in active:
            sel = (op_pix[:, step] == op) & applies[:, op]
            if strategy == "where":
                mean = (
                    _segment_mean(_gray(current).view(-1), segment, B).view(1, -1, 1)
                    if op == 1
                    else None
                )
                done = _op(op, current, f_pix[op : op + 1], mean)
                pixels = torch.where(sel.unsqueeze(-1), done, pixels)
                continue
            idx = sel.nonzero().squeeze(1)
            if idx.numel() == 0:
                continue
            sub = current[:, idx]
            mean = None
            if op == 1:
                mean = _segment_mean(_gray(sub).view(-1), segment[idx], B).view(1, -1, 1)
            pixels = pixels.index_copy(1, idx, _op(op, sub, f_pix[op : op + 1, idx], mean))
    return pixels


def jitter_one(image: Tensor, factors: Tensor, order: Tensor) -> Tensor:
    """Readable colour jitter of one image (3, h, w) with torchvision's functional ops."""
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
    for op in order.tolist():
        f = float(factors[op])
        if f != _IDENTITY[op]:
            image = ops[op](image, f)
    return image


# ====== pasting: per image (readable) ======


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
    ext_y, ext_x = (float(e) for e in _half_extents(p.height, p.width, p.angle))
    y0, x0 = max(0, math.floor(float(p.dst_y) - ext_y)), max(0, math.floor(float(p.dst_x) - ext_x))
    y1, x1 = (
        min(H, math.ceil(float(p.dst_y) + ext_y) + 1),
        min(W, math.ceil(float(p.dst_x) + ext_x) + 1),
    )
    ys = torch.arange(y0, y1, device=image.device)[:, None]  # every destination pixel near the scar
    xs = torch.arange(x0, x1, device=image.device)[None, :]
    theta = torch.deg2rad(p.angle)
    ux, uy = _unrotate(xs + 0.5 - p.dst_x, ys + 0.5 - p.dst_y, torch.cos(theta), torch.sin(theta))
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


# ====== pasting: batched ======


def paste_into(out: Tensor, masks: Tensor, images: Tensor, p: PasteParams) -> None:
    """Write M pastes into ``out`` (M, 3, H, W) and ``masks`` (M, 1, H, W) in place, batched.

    Paste ``j`` reads its source from ``images[j % B]`` (so 3-way writes the CutPaste and the
    Scar copies of B originals in one call) and ``out`` must already hold the images to paste
    on. Every pixel of a window around each destination (as large as the largest paste) is
    rotated back into the cut rectangle; the pixels that fall inside are gathered by flat index
    into one list, jittered together (:func:`jitter_pixels`) and written back. No loop over
    images or pixels; two host syncs (window size, number of pasted pixels).
    """
    M = p.height.shape[0]
    B, C, H, W = images.shape
    if M == 0:
        return
    shapes_ok = out.shape == (M, C, H, W) and masks.shape == (M, 1, H, W)
    if not (shapes_ok and out.is_contiguous() and masks.is_contiguous()):
        raise ValueError(f"out/masks must be contiguous ({M}, {C}, {H}, {W}) / ({M}, 1, {H}, {W})")
    dev = images.device
    theta = torch.deg2rad(p.angle)
    cos, sin = torch.cos(theta), torch.sin(theta)
    ext_y, ext_x = _half_extents(p.height, p.width, p.angle)
    ey, ex = torch.stack([ext_y.max(), ext_x.max()]).tolist()  # host sync: window size
    sh, sw = min(H, math.ceil(2 * ey) + 1), min(W, math.ceil(2 * ex) + 1)
    oy = torch.floor(p.dst_y - ext_y).clamp(0, H - sh).long()
    ox = torch.floor(p.dst_x - ext_x).clamp(0, W - sw).long()
    ys = (oy[:, None] + torch.arange(sh, device=dev))[:, :, None]  # (M, sh, 1)
    xs = (ox[:, None] + torch.arange(sw, device=dev))[:, None, :]  # (M, 1, sw)
    ux, uy = _unrotate(
        xs + 0.5 - p.dst_x.view(M, 1, 1),
        ys + 0.5 - p.dst_y.view(M, 1, 1),
        cos.view(M, 1, 1),
        sin.view(M, 1, 1),
    )
    hw, hh = (p.width / 2).view(M, 1, 1), (p.height / 2).view(M, 1, 1)
    inside = (ux >= -hw) & (ux < hw) & (uy >= -hh) & (uy < hh)  # (M, sh, sw)
    src_y = torch.floor(p.src_y.view(M, 1, 1) + uy).long().clamp(0, H - 1)
    src_x = torch.floor(p.src_x.view(M, 1, 1) + ux).long().clamp(0, W - 1)
    sel = inside.view(-1).nonzero().squeeze(1)  # host sync: the pasted pixels, paste by paste
    row = sel // (sh * sw)  # which paste each pixel belongs to (sorted)
    src = (src_y * W + src_x).view(-1)[sel]
    dst = (ys * W + xs).reshape(-1)[sel]
    plane = torch.arange(C, device=dev).view(C, 1) * (H * W)
    src_flat = (row % B * (C * H * W)).view(1, -1) + plane + src.view(1, -1)  # (C, N)
    dst_flat = (row * (C * H * W)).view(1, -1) + plane + dst.view(1, -1)
    pixels = images.reshape(-1).index_select(0, src_flat.view(-1)).view(C, -1, 1)
    pixels = jitter_pixels(pixels, row, p.factors, p.order)
    out.view(-1).index_copy_(0, dst_flat.view(-1), pixels.view(-1))
    masks.view(-1).index_fill_(0, row * (H * W) + dst, True)


def paste_batched(images: Tensor, p: PasteParams) -> Augmented:
    """Apply one paste per image to a batch (B, 3, H, W), without loops (see :func:`paste_into`)."""
    out = images.contiguous().clone()
    masks = torch.zeros(
        images.shape[0], 1, *images.shape[-2:], dtype=torch.bool, device=images.device
    )
    paste_into(out, masks, images.contiguous(), p)
    return Augmented(out, masks)


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
    _check_implementation(implementation)
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


# ====== public augmentations ======


def cutpaste(
    images: Tensor,
    *,
    generator: torch.Generator,
    area_ratio: tuple[float, float] = (0.02, 0.15),
    aspect_ratio: tuple[float, float] = (0.3, 3.3),
    aspect_sampling: AspectSampling = "log_uniform",
    jitter: float = 0.1,
    implementation: Implementation = "batched",
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
    """
    _check_images(images, generator)
    params = sample_cutpaste_params(
        images.shape[0],
        tuple(images.shape[-2:]),
        generator=generator,
        area_ratio=area_ratio,
        aspect_ratio=aspect_ratio,
        aspect_sampling=aspect_sampling,
        jitter=jitter,
    )
    return paste(images, params, kind="cutpaste", implementation=implementation)


def scar(
    images: Tensor,
    *,
    generator: torch.Generator,
    width: tuple[float, float] = (2, 16),
    length: tuple[float, float] = (10, 25),
    rotation: tuple[float, float] = (-45, 45),
    jitter: float = 0.1,
    reference_size: int = REFERENCE_SIZE,
    scale: float | None = None,
    implementation: Implementation = "batched",
) -> Augmented:
    """CutPaste-Scar (paper A.2): a thin jittered strip, rotated, pasted fully inside the image.

    Args:
        images: float (B, 3, H, W) in [0, 1], any device.
        generator: ``torch.Generator`` on the images' device.
        width, length: strip size in pixels of a ``reference_size`` image (paper: 2-16, 10-25 at 256).
        rotation: angle range in degrees (paper: -45 to 45).
        jitter: colour-jitter magnitude (paper: 0.1).
        reference_size: the resolution the pixel sizes refer to; sizes are multiplied by
            ``sqrt(H * W) / reference_size`` (our choice for other resolutions).
        scale: overrides that factor (patch mode passes the full image's scale).
        implementation: "batched" (default) or "per_image" (readable; same pixels).
    """
    _check_images(images, generator)
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
    )
    return paste(images, params, kind="scar", implementation=implementation)


# ====== whole-image augmentation ======


def _reflect(index: Tensor, n: int) -> Tensor:
    """Reflect out-of-range indices back into [0, n) without repeating the edge (like F.pad)."""
    index = index.abs()
    return torch.where(index > n - 1, 2 * (n - 1) - index, index)


@dataclass(frozen=True)
class WholeImageAug:
    """The paper's "random translation and color jitters" of the whole image (magnitudes ours).

    Attributes:
        translate: largest shift as a fraction of each side (1/16: 16 px at 256); the uncovered
            border is filled by reflection so no artificial black edge appears.
        brightness, contrast, saturation, hue: colour-jitter magnitudes as in ``ColorJitter``.
            Hue is 0 by default: a global hue change would teach the model that colour does not
            matter, while colour defects (e.g. MVTec "color" types) are anomalies to detect.
    """

    translate: float = 0.0625
    brightness: float = 0.1
    contrast: float = 0.1
    saturation: float = 0.1
    hue: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.translate < 1:
            raise ValueError(f"translate must be in [0, 1), got {self.translate}")

    def sample(
        self, batch: int, size: tuple[int, int], *, generator: torch.Generator
    ) -> WholeImageParams:
        """Integer shifts uniform in [-T, T] per axis (T = round(translate * side)) and jitter."""
        ty, tx = (min(round(self.translate * s), s - 1) for s in size)
        u = _rand((batch, 2), generator)
        shift_y = torch.floor(u[:, 0] * (2 * ty + 1)).long().clamp(max=2 * ty) - ty
        shift_x = torch.floor(u[:, 1] * (2 * tx + 1)).long().clamp(max=2 * tx) - tx
        factors, order = sample_jitter(
            batch,
            generator=generator,
            brightness=self.brightness,
            contrast=self.contrast,
            saturation=self.saturation,
            hue=self.hue,
        )
        return WholeImageParams(shift_y, shift_x, factors, order)

    def __call__(
        self,
        images: Tensor,
        *,
        generator: torch.Generator,
        implementation: Implementation = "batched",
    ) -> Tensor:
        _check_images(images, generator)
        params = self.sample(images.shape[0], tuple(images.shape[-2:]), generator=generator)
        return apply_whole_image(images, params, implementation=implementation)


def apply_whole_image(
    images: Tensor, p: WholeImageParams, *, implementation: Implementation = "batched"
) -> Tensor:
    """Shift each image by (shift_y, shift_x) with reflection, then colour-jitter it."""
    _check_implementation(implementation)
    B, C, H, W = images.shape
    if implementation == "per_image":
        out = []
        for i in range(B):
            ty, tx = abs(int(p.shift_y[i])), abs(int(p.shift_x[i]))
            padded = (
                F.pad(images[i : i + 1], (tx, tx, ty, ty), mode="reflect")[0]
                if ty or tx
                else images[i]
            )
            y0, x0 = ty - int(p.shift_y[i]), tx - int(p.shift_x[i])
            out.append(jitter_one(padded[:, y0 : y0 + H, x0 : x0 + W], p.factors[i], p.order[i]))
        return torch.stack(out) if out else images.clone()
    rows = _reflect(torch.arange(H, device=images.device) - p.shift_y[:, None], H)  # (B, H)
    cols = _reflect(torch.arange(W, device=images.device) - p.shift_x[:, None], W)  # (B, W)
    idx = (rows[:, :, None] * W + cols[:, None, :]).view(B, 1, -1).expand(B, C, -1)
    shifted = images.reshape(B, C, H * W).gather(2, idx).view(B, C, H, W)
    return jitter_batched(shifted, p.factors, p.order)


# ====== proxy batches ======


def random_crop(
    images: Tensor,
    patch_size: int,
    *,
    generator: torch.Generator,
    implementation: Implementation = "batched",
) -> Tensor:
    """One random patch_size x patch_size crop per image (patch mode: crop first, then paste)."""
    B, C, H, W = images.shape
    if not 0 < patch_size <= min(H, W):
        raise ValueError(
            f"patch_size must be in [1, {min(H, W)}] for {H}x{W} images, got {patch_size}"
        )
    u = _rand((B, 2), generator)
    oy = torch.floor(u[:, 0] * (H - patch_size + 1)).long().clamp(max=H - patch_size)
    ox = torch.floor(u[:, 1] * (W - patch_size + 1)).long().clamp(max=W - patch_size)
    if implementation == "per_image":
        crops = [
            images[i, :, y : y + patch_size, x : x + patch_size]
            for i, (y, x) in enumerate(zip(oy.tolist(), ox.tolist()))
        ]
        return torch.stack(crops) if crops else images[:, :, :patch_size, :patch_size].clone()
    r = torch.arange(patch_size, device=images.device)
    idx = ((oy[:, None, None] + r[:, None]) * W + (ox[:, None, None] + r[None, :])).view(B, 1, -1)
    return (
        images.reshape(B, C, H * W)
        .gather(2, idx.expand(B, C, -1))
        .view(B, C, patch_size, patch_size)
    )


def make_proxy_batch(
    images: Tensor,
    variant: Variant,
    *,
    generator: torch.Generator,
    patch_size: int | None = None,
    whole_image_aug: WholeImageAug | None = WholeImageAug(),  # noqa: B008 (frozen, immutable)
    aspect_sampling: AspectSampling = "log_uniform",
    implementation: Implementation = "batched",
) -> ProxyBatch:
    """The classifier inputs of one training step (see :class:`ProxyBatch` for the layout).

    Order: whole-image augmentation (once per original, shared by its views), then the patch
    crop (patch mode, shared by the views too), then CutPaste and/or Scar on copies. Variants:
    "cutpaste" / "scar" (binary), "union" (each augmented view is CutPaste or Scar with
    probability 1/2, label 1), "3way" (labels 0 normal, 1 CutPaste, 2 Scar).

    Args:
        images: float (B, 3, H, W) in [0, 1] on any device.
        variant: one of :data:`VARIANTS`.
        generator: ``torch.Generator`` on the images' device; same seed, same batch.
        patch_size: crop side for the patch (localization) model, e.g. 64; None = whole image.
        whole_image_aug: the whole-image transform, or None to switch it off.
        aspect_sampling: CutPaste aspect sampling, "log_uniform" or "two_interval".
        implementation: "batched" (training) or "per_image" (readable reference, same output).
    """
    _check_variant(variant)
    _check_images(images, generator)
    _check_implementation(implementation)
    B, _, H, W = images.shape
    scale = scar_scale((H, W))  # scars are sized on the full image, also in patch mode
    x = images
    if whole_image_aug is not None:
        x = whole_image_aug(x, generator=generator, implementation=implementation)
    if patch_size is not None:
        x = random_crop(x, patch_size, generator=generator, implementation=implementation)
    size = tuple(x.shape[-2:])

    def cut(n: int) -> PasteParams:
        return sample_cutpaste_params(n, size, generator=generator, aspect_sampling=aspect_sampling)

    def sc(n: int) -> PasteParams:
        return sample_scar_params(n, size, generator=generator, scale=scale)

    # parameters of the (K-1)*B augmented views, view by view; is_cutpaste picks the
    # readable per-image function (the batched kernel treats both kinds alike)
    if variant == "cutpaste":
        params, is_cutpaste = cut(B), torch.ones(B, dtype=torch.bool, device=x.device)
    elif variant == "scar":
        params, is_cutpaste = sc(B), torch.zeros(B, dtype=torch.bool, device=x.device)
    elif variant == "3way":
        params = PasteParams(*(torch.cat([c, s]) for c, s in zip(cut(B), sc(B))))
        is_cutpaste = torch.arange(2 * B, device=x.device) < B
    else:  # union: each image gets CutPaste or Scar parameters with probability 1/2
        cp_params, scar_params = cut(B), sc(B)
        is_cutpaste = _rand((B,), generator) < 0.5
        params = PasteParams(
            *(
                torch.where(is_cutpaste.view(-1, *[1] * (c.dim() - 1)), c, s)
                for c, s in zip(cp_params, scar_params)
            )
        )
    k = num_classes(variant)
    x = x.contiguous()
    images_out = x.repeat(k, 1, 1, 1)  # every view starts as its original
    masks_out = torch.zeros(k * B, 1, *size, dtype=torch.bool, device=x.device)
    if implementation == "batched":
        paste_into(images_out[B:], masks_out[B:], x, params)  # all augmented views in one call
    else:
        aug = paste(images_out[B:], params, kind=is_cutpaste, implementation="per_image")
        images_out[B:], masks_out[B:] = aug.images, aug.masks
    labels = torch.arange(k, device=x.device).repeat_interleave(B)
    return ProxyBatch(images_out, labels, masks_out)


# ====== checks ======


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}: choose one of {', '.join(VARIANTS)}")


def _check_implementation(implementation: str) -> None:
    if implementation not in ("batched", "per_image"):
        raise ValueError(f"implementation must be 'batched' or 'per_image', got {implementation!r}")


def _check_images(images: Tensor, generator: torch.Generator) -> None:
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
    if generator.device.type != images.device.type:
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}: "
            f"create it with torch.Generator(device={str(images.device)!r})"
        )
