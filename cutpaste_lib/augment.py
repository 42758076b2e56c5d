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
  branch-free batched colour jitter. Every tensor has a shape fixed by the sampling ranges
  (:func:`paste_window_bound`), so there is no loop over images or pixels and no host sync:
  on a GPU the CPU queues the next batch while the previous training step still runs. This
  is what training uses.

The samplers draw every number of a batch first and then do a few dozen operations on arrays
of about 32 numbers. With a CPU generator (what training uses, also for a GPU) that arithmetic
runs in NumPy on one ``torch.rand`` draw, because a torch operation on such a tiny tensor costs
more in dispatch than the arithmetic; with a GPU generator it runs in torch on the device. On
the same draws both give the same parameters bit for bit (tested).

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

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.functional as TF
from torch import Tensor

from cutpaste_lib.config import compile_mode

VARIANTS: tuple[str, ...] = ("cutpaste", "scar", "union", "3way")
Variant = Literal["cutpaste", "scar", "union", "3way"]
Implementation = Literal["batched", "per_image"]
AspectSampling = Literal["log_uniform", "two_interval"]

REFERENCE_SIZE = 256
"""Side of the working image the paper's scar sizes (in pixels) refer to."""

JITTER_OPS = ("brightness", "contrast", "saturation", "hue")
_IDENTITY = (1.0, 1.0, 1.0, 0.0)  # the factor of each op that leaves the image unchanged
_MAX_TRIES = 10  # RandomErasing's number of attempts before it gives up
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


class _ArrayOps(NamedTuple):
    """The handful of array functions the samplers' arithmetic needs, for NumPy or torch.

    The samplers are written once against these. With a CPU generator (training draws there)
    they run on NumPy views of the drawn uniforms: a proxy batch needs a few hundred numbers,
    a torch op on such tiny tensors costs about 8 microseconds of dispatch and a NumPy op 1-2,
    and this CPU time is paid at every training step. Elsewhere they run on torch tensors, so
    a GPU generator never sends anything to the host. Both give bit-identical float32 results
    (IEEE-rounded +, -, *, /, sqrt, floor, round-half-even, stable argsort; the exponential
    and the trigonometry are torch's in both), which a test checks.
    """

    tensor: Callable[[Any], Tensor]  # working array -> torch tensor
    sqrt: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    exp: Callable[[Any], Any]
    abs_cos_sin_deg: Callable[[Any], tuple[Any, Any]]  # degrees -> (|cos|, |sin|)
    clip: Callable[[Any, Any, Any], Any]  # (x, low or None, high or None)
    minimum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    stack: Callable[[list[Any]], Any]  # columns (B,) -> (B, k)
    concatenate: Callable[[list[Any]], Any]  # along the first axis
    full: Callable[[int, bool, Any], Any]  # (n, flag, an array on the device) -> bool (n,)
    argsort: Callable[[Any], Any]  # stable, along the last axis
    first_true: Callable[[Any], Any]  # bool (B, T) -> index of the first True per row (0: none)
    take: Callable[[Any, Any], Any]  # (x (B, T), that index) -> (B,)
    to_long: Callable[[Any], Any]


def _abs_cos_sin_deg(angle: Tensor) -> tuple[Tensor, Tensor]:
    theta = torch.deg2rad(angle)
    return torch.cos(theta).abs(), torch.sin(theta).abs()


_TORCH_OPS = _ArrayOps(
    tensor=lambda t: t,
    sqrt=torch.sqrt,
    floor=torch.floor,
    exp=torch.exp,
    abs_cos_sin_deg=_abs_cos_sin_deg,
    clip=torch.clamp,
    minimum=torch.minimum,
    where=torch.where,
    stack=lambda cols: torch.stack(cols, dim=1),
    concatenate=torch.cat,
    full=lambda n, flag, like: torch.full((n,), flag, device=like.device),
    argsort=lambda x: x.argsort(dim=-1, stable=True),
    first_true=lambda m: m.float().argmax(dim=1, keepdim=True),
    take=lambda x, i: x.gather(1, i).squeeze(1),
    to_long=lambda x: x.long(),
)


def _np_clip(x: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """``np.clip`` as two plain ufuncs (np.clip's own wrapper costs more than the work here)."""
    if low is not None:
        x = np.maximum(x, low)
    return x if high is None else np.minimum(x, high)


_NUMPY_OPS = _ArrayOps(
    tensor=torch.from_numpy,
    sqrt=np.sqrt,
    floor=np.floor,
    exp=lambda x: torch.exp(torch.from_numpy(x)).numpy(),
    abs_cos_sin_deg=lambda a: tuple(t.numpy() for t in _abs_cos_sin_deg(torch.from_numpy(a))),
    clip=_np_clip,
    minimum=np.minimum,
    where=np.where,
    stack=lambda cols: np.stack(cols, axis=1),
    concatenate=np.concatenate,
    full=lambda n, flag, like: np.full(n, flag),
    argsort=lambda x: np.argsort(x, axis=-1, kind="stable"),
    first_true=lambda m: m.argmax(axis=1),
    take=lambda x, i: x[np.arange(len(x)), i],
    to_long=lambda x: x.astype(np.int64),
)
_HOST_ARITHMETIC = True  # False: torch arithmetic for CPU draws too (the tests compare both)


class _Uniforms:
    """U[0, 1) float32 numbers in draw order, as arrays of the samplers' arithmetic.

    ``draw(*shape)`` hands out the next numbers. On the CPU, given the ``count`` a sampler will
    need, they all come from one ``torch.rand(count)`` sliced in order: the CPU generator
    fills a tensor number by number, so this equals drawing piece by piece (tested), for one
    dispatch instead of a dozen. Elsewhere each piece is its own ``torch.rand`` on the device.
    """

    def __init__(self, generator: torch.Generator, count: int) -> None:
        self.generator = generator
        self.xp = _NUMPY_OPS if _HOST_ARITHMETIC and generator.device.type == "cpu" else _TORCH_OPS
        self.count = count
        self.used = 0
        self._flat = _rand((count,), generator).numpy() if self.xp is _NUMPY_OPS else None

    def __call__(self, *shape: int) -> Any:
        n = math.prod(shape)
        if self.used + n > self.count:
            raise AssertionError(f"sampler drew more than the {self.count} numbers it announced")
        self.used += n
        if self._flat is None:
            return _rand(shape, self.generator)
        return self._flat[self.used - n : self.used].reshape(shape)

    def check(self) -> None:
        """Exactly the announced numbers were drawn (a miscount would shift every later number
        of the seed)."""
        if self.used != self.count:
            raise AssertionError(f"sampler drew {self.used} numbers, announced {self.count}")

    def finish(self, out: Any) -> Any:
        """``out`` with torch tensors for its arrays, after :meth:`check`."""
        self.check()
        return _map_arrays(out, self.xp.tensor)


def _map_arrays(node: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every tensor or NumPy array of a nest of (named) tuples."""
    if isinstance(node, (Tensor, np.ndarray)):
        return fn(node)
    if isinstance(node, tuple):
        children = (_map_arrays(child, fn) for child in node)
        return type(node)(*children) if hasattr(node, "_fields") else tuple(children)
    return node


def _check_jitter(brightness: float, contrast: float, saturation: float, hue: float) -> None:
    for name, m in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        if m < 0:
            raise ValueError(f"{name} jitter must be >= 0, got {m}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")


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
    _check_jitter(brightness, contrast, saturation, hue)
    draw = _Uniforms(generator, _JITTER_DRAWS * batch)
    out = _jitter(draw, batch, (brightness, contrast, saturation, hue))
    return draw.finish(out)


_JITTER_DRAWS = 8  # numbers per image: four factors, four sort keys for the order


def _jitter(
    draw: _Uniforms, batch: int, magnitudes: tuple[float, float, float, float]
) -> tuple[Any, Any]:
    xp = draw.xp
    b, c, s, h = magnitudes
    low = (max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -h)
    high = (1 + b, 1 + c, 1 + s, h)
    u = draw(batch, 4)
    if xp is _NUMPY_OPS:  # rows of bounds: two whole-array ops
        lo_row, span_row = _bounds_rows(low, high)
        factors = span_row * u + lo_row  # the same float32 arithmetic as the columns below
    else:  # column by column with Python bounds: no small host-to-device copy (a sync on CUDA)
        factors = torch.stack(
            [lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(zip(low, high))], 1
        )
    order = xp.argsort(draw(batch, 4))
    return factors, order


@functools.cache
def _bounds_rows(low: tuple[float, ...], high: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(1, 4) float32 rows of the lower bounds and spans, made once per magnitude setting."""
    lo = np.array([low], dtype=np.float32)
    span = np.array([[hi - lo_ for lo_, hi in zip(low, high)]], dtype=np.float32)
    return lo, span


def sample_aspect(
    shape: tuple[int, ...],
    *,
    generator: torch.Generator,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    aspect_sampling: AspectSampling = "log_uniform",
) -> Tensor:
    """Aspect ratios (width / height): log-uniform, or uniform in (lo, 1) or (1, hi) with p = 1/2."""
    _check_aspect(aspect_ratio, aspect_sampling)
    draw = _Uniforms(generator, _aspect_draws(aspect_sampling) * math.prod(shape))
    return draw.finish(_aspect(draw, shape, aspect_ratio, aspect_sampling))


def _check_aspect(aspect_ratio: tuple[float, float], aspect_sampling: str) -> None:
    lo, hi = aspect_ratio
    if not 0 < lo < hi:
        raise ValueError(f"aspect_ratio must satisfy 0 < low < high, got {aspect_ratio}")
    if aspect_sampling not in ("log_uniform", "two_interval"):
        raise ValueError(
            f"aspect_sampling must be 'log_uniform' or 'two_interval', got {aspect_sampling!r}"
        )
    if aspect_sampling == "two_interval" and not lo < 1 < hi:
        raise ValueError(f"two_interval aspect sampling needs low < 1 < high, got {aspect_ratio}")


def _aspect_draws(aspect_sampling: str) -> int:
    return 1 if aspect_sampling == "log_uniform" else 2  # two_interval: a coin and a position


def _aspect(
    draw: _Uniforms,
    shape: tuple[int, ...],
    aspect_ratio: tuple[float, float],
    aspect_sampling: str,
) -> Any:
    lo, hi = aspect_ratio
    if aspect_sampling == "log_uniform":
        return draw.xp.exp(math.log(lo) + (math.log(hi) - math.log(lo)) * draw(*shape))
    pick_low = draw(*shape) < 0.5
    u = draw(*shape)
    return draw.xp.where(pick_low, lo + (1 - lo) * u, 1 + (hi - 1) * u)


def sample_cutpaste_params(
    batch: int,
    size: tuple[int, int],
    *,
    generator: torch.Generator,
    area_ratio: tuple[float, float] = CUTPASTE_AREA,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    aspect_sampling: AspectSampling = "log_uniform",
    jitter: float = PASTE_JITTER,
) -> PasteParams:
    """CutPaste parameters for ``batch`` images of ``size = (H, W)``.

    Area ~ U(area_ratio) * H * W, aspect (width/height) as :func:`sample_aspect`,
    ``h = round(sqrt(area / aspect))``, ``w = round(sqrt(area * aspect))``; cut and paste
    corners uniform over the positions that keep the whole patch inside the image.
    """
    _check_cutpaste(area_ratio, aspect_ratio, aspect_sampling, jitter)
    draw = _Uniforms(generator, _cutpaste_draws(batch, aspect_sampling))
    out = _cutpaste(draw, batch, size, area_ratio, aspect_ratio, aspect_sampling, jitter)
    return draw.finish(out)


def _check_cutpaste(
    area_ratio: tuple[float, float],
    aspect_ratio: tuple[float, float],
    aspect_sampling: str,
    jitter: float,
) -> None:
    a0, a1 = area_ratio
    if not 0 < a0 <= a1 <= 1:
        raise ValueError(f"area_ratio must satisfy 0 < low <= high <= 1, got {area_ratio}")
    _check_aspect(aspect_ratio, aspect_sampling)
    _check_jitter(jitter, jitter, jitter, jitter)


def _cutpaste_draws(batch: int, aspect_sampling: str) -> int:
    return batch * (_MAX_TRIES * (1 + _aspect_draws(aspect_sampling)) + 4 + _JITTER_DRAWS)


def _cutpaste(
    draw: _Uniforms,
    batch: int,
    size: tuple[int, int],
    area_ratio: tuple[float, float],
    aspect_ratio: tuple[float, float],
    aspect_sampling: str,
    jitter: float,
) -> PasteParams:
    xp = draw.xp
    H, W = size
    a0, a1 = area_ratio
    shape = (batch, _MAX_TRIES)
    area = (a0 + (a1 - a0) * draw(*shape)) * (H * W)
    aspect = _aspect(draw, shape, aspect_ratio, aspect_sampling)
    h = xp.clip(xp.sqrt(area / aspect).round(), 1, None)
    w = xp.clip(xp.sqrt(area * aspect).round(), 1, None)
    # first try that fits; if none fits, clamp try 0
    first = xp.first_true((h <= H) & (w <= W))
    h = xp.clip(xp.take(h, first), None, H)
    w = xp.clip(xp.take(w, first), None, W)
    # corners (cut y, x, paste y, x) uniform over the H-h+1 rows and W-w+1 columns that fit
    room = xp.stack([H - h, W - w, H - h, W - w])
    corners = xp.minimum(xp.floor(draw(batch, 4) * (room + 1)), room)
    centres = corners + xp.stack([h, w, h, w]) / 2
    factors, order = _jitter(draw, batch, (jitter,) * 4)
    return PasteParams(
        height=h,
        width=w,
        angle=h * 0,
        src_y=centres[:, 0],
        src_x=centres[:, 1],
        dst_y=centres[:, 2],
        dst_x=centres[:, 3],
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
    width: tuple[float, float] = SCAR_WIDTH,
    length: tuple[float, float] = SCAR_LENGTH,
    rotation: tuple[float, float] = SCAR_ROTATION,
    jitter: float = PASTE_JITTER,
    scale: float = 1.0,
) -> PasteParams:
    """Scar parameters: width ~ U(width), length ~ U(length) (times ``scale``, at least 1 px),
    angle ~ U(rotation) degrees. The unrotated scar is vertical (length along rows); the cut is
    axis-aligned and the rotated paste lies fully inside the image.
    """
    if not (0 < width[0] <= width[1] and 0 < length[0] <= length[1]):
        raise ValueError(f"scar width/length ranges must be positive, got {width}, {length}")
    if rotation[0] > rotation[1]:
        raise ValueError(f"rotation must be (low, high) degrees, got {rotation}")
    _check_jitter(jitter, jitter, jitter, jitter)
    draw = _Uniforms(generator, _SCAR_DRAWS * batch)
    out = _scar(draw, batch, size, width, length, rotation, jitter, scale)
    return draw.finish(out)


_SCAR_DRAWS = 7 + _JITTER_DRAWS  # width, length, angle, cut centre (2), paste centre (2)


def _scar(
    draw: _Uniforms,
    batch: int,
    size: tuple[int, int],
    width: tuple[float, float],
    length: tuple[float, float],
    rotation: tuple[float, float],
    jitter: float,
    scale: float,
) -> PasteParams:
    xp = draw.xp
    H, W = size
    u = draw(batch, 7)
    factors, order = _jitter(draw, batch, (jitter,) * 4)
    w = xp.clip((width[0] + (width[1] - width[0]) * u[:, 0]) * scale, 1, W)
    l = xp.clip((length[0] + (length[1] - length[0]) * u[:, 1]) * scale, 1, H)
    angle = rotation[0] + (rotation[1] - rotation[0]) * u[:, 2]
    ext_y, ext_x = _box_half_extents(*xp.abs_cos_sin_deg(angle), l, w)
    return PasteParams(
        height=l,
        width=w,
        angle=angle,
        src_y=l / 2 + u[:, 3] * (H - l),
        src_x=w / 2 + u[:, 4] * (W - w),
        dst_y=ext_y + u[:, 5] * xp.clip(H - 2 * ext_y, 0, None),
        dst_x=ext_x + u[:, 6] * xp.clip(W - 2 * ext_x, 0, None),
        factors=factors,
        order=order,
    )


def _half_extents(height: Tensor, width: Tensor, angle: Tensor) -> tuple[Tensor, Tensor]:
    """Half height and half width of the axis-aligned box around the rotated rectangle."""
    return _box_half_extents(*_abs_cos_sin_deg(angle), height, width)


def _box_half_extents(c: Any, s: Any, height: Any, width: Any) -> tuple[Any, Any]:
    """:func:`_half_extents` from |cos| and |sin| of the angle (tensors or NumPy arrays)."""
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


def _jitter_steps(
    x: Tensor,
    factors: Tensor,
    order: Tensor,
    mean_gray: Callable[[Tensor], Tensor],
    *,
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


def jitter_batched(x: Tensor, factors: Tensor, order: Tensor, *, hue: bool = True) -> Tensor:
    """Colour jitter of whole images (B, 3, H, W), each with its own factors and op order.

    Same result as :func:`jitter_one` image by image (torchvision's functional ops), computed
    for the whole batch at once without a host sync (see :func:`_jitter_steps`). Contrast
    blends with each image's mean grey level. ``hue=False`` is a promise that every hue shift
    is 0 (e.g. :class:`WholeImageAug` with ``hue=0``) and skips the hue arithmetic; the
    default computes it and keeps it where a shift is non-zero.
    """
    return _jitter_steps(
        x, factors, order, lambda g: g.mean(dim=(-3, -2, -1), keepdim=True), hue=hue
    )  # fmt: skip


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

    return _jitter_steps(pixels, factors, order, mean_gray, hue=True)


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


def paste_window_bound(
    size: tuple[int, int],
    *,
    area_ratio: tuple[float, float] | None = None,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    scar_width: tuple[float, float] | None = None,
    scar_length: tuple[float, float] | None = None,
    scale: float = 1.0,
) -> int:
    """Most destination pixels any paste of these sampling ranges can need (a static bound).

    The batched kernel examines, for paste ``j``, the ``sh_j x sw_j`` window of destination
    pixels around it (:func:`_paste_windows`). Giving it this bound, computed on the host from
    the ranges alone, fixes every tensor's shape in advance, so no host sync is needed to size
    the work. CutPaste: with area A <= a1 H W and aspect a, ``h <= sqrt(A / a) + 0.5`` and
    ``w <= sqrt(A a) + 0.5`` (rounding), and the window is ``(h + 1) x (w + 1)``. Scar: a
    ``w x l`` strip rotated by any angle fits in a box of side ``sqrt(w^2 + l^2)``; the window
    adds up to 3 pixels per side (floor/ceil and the closing row).
    """
    H, W = size
    bound = 1
    if area_ratio is not None:
        area = area_ratio[1] * H * W
        worst = max(a**-0.5 + a**0.5 for a in aspect_ratio)  # convex in log a: an endpoint
        bound = max(bound, math.ceil(area + 1.5 * math.sqrt(area) * worst + 2.25))
    if scar_width is not None and scar_length is not None:
        w = min(W, max(1.0, scar_width[1] * scale))
        l = min(H, max(1.0, scar_length[1] * scale))
        side = math.sqrt(w * w + l * l) + 3
        bound = max(bound, math.ceil(min(H, side)) * math.ceil(min(W, side)))
    return min(bound, H * W)


def _paste_windows(
    p: PasteParams, size: tuple[int, int], max_pixels: int | None
) -> tuple[Tensor, Tensor, Tensor, int]:
    """Destination pixels of every paste, one fixed-length block each.

    Returns ``dst`` and ``src`` (M, P) flat pixel indices (``y * W + x``) into the destination
    and source images, ``inside`` (M, P) bool, and P. Block ``j`` enumerates paste ``j``'s
    window row by row (``k -> (k // sw_j, k % sw_j)``), exactly the window :func:`scar_one`
    scans; ``inside`` marks the pixels whose centre, rotated back, falls in the cut rectangle.
    Entries past the window (``k >= sh_j sw_j``) are padding. ``max_pixels=None`` sizes P from
    the data (one host sync); training passes :func:`paste_window_bound` (none).
    """
    H, W = size
    M = p.height.shape[0]
    dev = p.height.device
    ext_y, ext_x = _half_extents(p.height, p.width, p.angle)
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
    ux, uy = _unrotate(
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
    (:func:`_paste_windows`): gather the source pixels, jitter all blocks together
    (:func:`jitter_blocks`), scatter back the pixels inside the rectangle. Padding and pixels
    outside the rotated rectangle are sent to a scratch tail past the image, so every write
    goes to its own address (deterministic, no atomics). With ``max_pixels`` from
    :func:`paste_window_bound` nothing here waits for the device: no loop over images or
    pixels and no host sync.
    """
    M = p.height.shape[0]
    B, C, H, W = images.shape
    if M == 0:
        return
    shapes_ok = out.shape == (M, C, H, W) and masks.shape == (M, 1, H, W)
    if not (shapes_ok and out.is_contiguous() and masks.is_contiguous()):
        raise ValueError(f"out/masks must be contiguous ({M}, {C}, {H}, {W}) / ({M}, 1, {H}, {W})")
    dst, src, inside, P = _paste_windows(p, (H, W), max_pixels)
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
    area_ratio: tuple[float, float] = CUTPASTE_AREA,
    aspect_ratio: tuple[float, float] = CUTPASTE_ASPECT,
    aspect_sampling: AspectSampling = "log_uniform",
    jitter: float = PASTE_JITTER,
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
    width: tuple[float, float] = SCAR_WIDTH,
    length: tuple[float, float] = SCAR_LENGTH,
    rotation: tuple[float, float] = SCAR_ROTATION,
    jitter: float = PASTE_JITTER,
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
        self._check()
        draw = _Uniforms(generator, self._draws(batch))
        out = self._sample(draw, batch, size)
        return draw.finish(out)

    def _check(self) -> None:
        _check_jitter(self.brightness, self.contrast, self.saturation, self.hue)

    def _draws(self, batch: int) -> int:
        return batch * (2 + _JITTER_DRAWS)

    def _sample(self, draw: _Uniforms, batch: int, size: tuple[int, int]) -> WholeImageParams:
        xp = draw.xp
        ty, tx = (min(round(self.translate * s), s - 1) for s in size)
        u = draw(batch, 2)
        shift_y = xp.clip(xp.to_long(xp.floor(u[:, 0] * (2 * ty + 1))), None, 2 * ty) - ty
        shift_x = xp.clip(xp.to_long(xp.floor(u[:, 1] * (2 * tx + 1))), None, 2 * tx) - tx
        magnitudes = (self.brightness, self.contrast, self.saturation, self.hue)
        factors, order = _jitter(draw, batch, magnitudes)
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
        return apply_whole_image(images, params, implementation=implementation, hue=self.hue > 0)


def apply_whole_image(
    images: Tensor,
    p: WholeImageParams,
    *,
    implementation: Implementation = "batched",
    hue: bool = True,
) -> Tensor:
    """Shift each image by (shift_y, shift_x) with reflection, then colour-jitter it.

    ``hue=False`` promises that every hue shift in ``p`` is 0 (skips that arithmetic; see
    :func:`jitter_batched`).
    """
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
    return jitter_batched(shifted, p.factors, p.order, hue=hue)


# ====== proxy batches ======


def sample_crop(
    batch: int, size: tuple[int, int], patch_size: int, *, generator: torch.Generator
) -> Tensor:
    """Top-left corners (B, 2) int64 (rows, columns) of uniform patch_size x patch_size crops."""
    _check_patch_size(size, patch_size)
    draw = _Uniforms(generator, 2 * batch)
    out = _crop_corners(draw, batch, size, patch_size)
    return draw.finish(out)


def _check_patch_size(size: tuple[int, int], patch_size: int) -> None:
    H, W = size
    if not 0 < patch_size <= min(H, W):
        raise ValueError(
            f"patch_size must be in [1, {min(H, W)}] for {H}x{W} images, got {patch_size}"
        )


def _crop_corners(draw: _Uniforms, batch: int, size: tuple[int, int], patch_size: int) -> Any:
    xp = draw.xp
    H, W = size
    u = draw(batch, 2)
    oy = xp.clip(xp.to_long(xp.floor(u[:, 0] * (H - patch_size + 1))), None, H - patch_size)
    ox = xp.clip(xp.to_long(xp.floor(u[:, 1] * (W - patch_size + 1))), None, W - patch_size)
    return xp.stack([oy, ox])


def crop(
    images: Tensor,
    corners: Tensor,
    patch_size: int,
    *,
    implementation: Implementation = "batched",
) -> Tensor:
    """Cut one patch_size x patch_size crop per image at ``corners`` (B, 2) (rows, columns)."""
    B, C, H, W = images.shape
    if implementation == "per_image":
        crops = [
            images[i, :, y : y + patch_size, x : x + patch_size]
            for i, (y, x) in enumerate(corners.tolist())
        ]
        return torch.stack(crops) if crops else images[:, :, :patch_size, :patch_size].clone()
    r = torch.arange(patch_size, device=images.device)
    oy, ox = corners[:, 0], corners[:, 1]
    idx = ((oy[:, None, None] + r[:, None]) * W + (ox[:, None, None] + r[None, :])).view(B, 1, -1)
    return (
        images.reshape(B, C, H * W)
        .gather(2, idx.expand(B, C, -1))
        .view(B, C, patch_size, patch_size)
    )


def random_crop(
    images: Tensor,
    patch_size: int,
    *,
    generator: torch.Generator,
    implementation: Implementation = "batched",
) -> Tensor:
    """One random patch_size x patch_size crop per image (patch mode: crop first, then paste)."""
    corners = sample_crop(
        images.shape[0], tuple(images.shape[-2:]), patch_size, generator=generator
    )
    return crop(images, corners, patch_size, implementation=implementation)


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
) -> ProxyParams:
    """Draw every parameter of one proxy batch of ``batch`` originals of ``size = (H, W)``.

    All the randomness of :func:`make_proxy_batch` lives here, in this order: whole-image
    augmentation, patch crop, CutPaste and/or Scar, and for "union" the coin between them.
    Scars are sized on the full image, also in patch mode (see the module notes).

    ``device``: where the parameters are wanted (default: the generator's device). Drawn on a
    CPU generator for another device, they are sent there in one pinned, non-blocking copy
    per dtype (:func:`move_params`), straight from the samplers' arrays; training does this.
    """
    draw, params = _draw_proxy_params(
        batch, size, variant, generator, patch_size, whole_image_aug, aspect_sampling
    )
    if device is not None and not _same_device(torch.device(device), generator.device):
        draw.check()
        return move_params(params, torch.device(device))
    return draw.finish(params)


def _same_device(a: torch.device, b: torch.device) -> bool:
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


def _draw_proxy_params(
    batch: int,
    size: tuple[int, int],
    variant: str,
    generator: torch.Generator,
    patch_size: int | None,
    whole_image_aug: WholeImageAug | None,
    aspect_sampling: AspectSampling,
) -> tuple[_Uniforms, ProxyParams]:
    """:func:`sample_proxy_params` with the arrays of the samplers' arithmetic as leaves."""
    _check_variant(variant)
    scale = scar_scale(size)
    crop_size = size if patch_size is None else (patch_size, patch_size)
    uses_cutpaste, uses_scar = variant != "scar", variant != "cutpaste"
    # checks first, then one draw for the whole batch (see _Uniforms), consumed in this order
    count = 0
    if whole_image_aug is not None:
        whole_image_aug._check()
        count += whole_image_aug._draws(batch)
    if patch_size is not None:
        _check_patch_size(size, patch_size)
        count += 2 * batch
    if uses_cutpaste:
        _check_aspect(CUTPASTE_ASPECT, aspect_sampling)
        count += _cutpaste_draws(batch, aspect_sampling)
    if uses_scar:
        count += _SCAR_DRAWS * batch
    if variant == "union":
        count += batch  # the coin between CutPaste and Scar
    draw = _Uniforms(generator, count)
    xp = draw.xp

    whole = None if whole_image_aug is None else whole_image_aug._sample(draw, batch, size)
    corners = None if patch_size is None else _crop_corners(draw, batch, size, patch_size)
    cp = sc = None
    if uses_cutpaste:
        cp = _cutpaste(
            draw, batch, crop_size, CUTPASTE_AREA, CUTPASTE_ASPECT, aspect_sampling, PASTE_JITTER
        )
    if uses_scar:
        sc = _scar(
            draw, batch, crop_size, SCAR_WIDTH, SCAR_LENGTH, SCAR_ROTATION, PASTE_JITTER, scale
        )
    if variant == "cutpaste":
        params, is_cutpaste = cp, xp.full(batch, True, cp.height)
    elif variant == "scar":
        params, is_cutpaste = sc, xp.full(batch, False, sc.height)
    elif variant == "3way":
        params = PasteParams(*(xp.concatenate([c, s]) for c, s in zip(cp, sc)))
        is_cutpaste = xp.concatenate(
            [xp.full(batch, True, cp.height), xp.full(batch, False, cp.height)]
        )
    else:  # union: each image gets CutPaste or Scar parameters with probability 1/2
        is_cutpaste = draw(batch) < 0.5
        params = PasteParams(
            *(xp.where(is_cutpaste.reshape(-1, *[1] * (c.ndim - 1)), c, s) for c, s in zip(cp, sc))
        )
    return draw, ProxyParams(whole, corners, params, is_cutpaste)


def apply_proxy_params(
    images: Tensor,
    params: ProxyParams,
    variant: Variant,
    *,
    patch_size: int | None = None,
    whole_hue: bool = False,
    max_pixels: int | None = None,
    implementation: Implementation = "batched",
) -> ProxyBatch:
    """Build the proxy batch from drawn parameters: no randomness, shapes fixed by the inputs.

    Whole-image augmentation (shared by all views of an original), then the crop (shared
    too), then the pastes on copies. ``whole_hue`` says whether the whole-image jitter has
    a hue component; ``max_pixels`` bounds the pixels of one paste (:func:`paste_window_bound`).
    A pure tensor function with Python constants as options, so ``torch.compile`` can fuse it
    (``make_proxy_batch(..., compiled=True)``).
    """
    x = images
    if params.whole is not None:
        x = apply_whole_image(x, params.whole, implementation=implementation, hue=whole_hue)
    if params.crop is not None:
        assert patch_size is not None, "crop corners need patch_size"
        x = crop(x, params.crop, patch_size, implementation=implementation)
    B = x.shape[0]
    k = num_classes(variant)
    x = x.contiguous()
    images_out = x.repeat(k, 1, 1, 1)  # every view starts as its original
    masks_out = torch.zeros(k * B, 1, *x.shape[-2:], dtype=torch.bool, device=x.device)
    if implementation == "batched":
        # all augmented views in one call
        paste_into(images_out[B:], masks_out[B:], x, params.paste, max_pixels=max_pixels)
    else:
        aug = paste(
            images_out[B:], params.paste, kind=params.is_cutpaste, implementation="per_image"
        )
        images_out[B:], masks_out[B:] = aug.images, aug.masks
    return ProxyBatch(images_out, _labels(k, B, x.device), masks_out)


def _labels(k: int, batch: int, device: torch.device) -> Tensor:
    return torch.arange(k, device=device).repeat_interleave(batch)


_COMPILED: dict[str, Callable[..., ProxyBatch]] = {}


def _compiled_apply(mode: str = "default") -> Callable[..., ProxyBatch]:
    """``apply_proxy_params`` under ``torch.compile(mode=mode)`` (built on first use, reused).

    ``mode="reduce-overhead"`` also records the fused kernels as a CUDA graph; its outputs
    are then overwritten by the next call, which training allows (each batch is used once).
    """
    if mode not in _COMPILED:
        _COMPILED[mode] = torch.compile(apply_proxy_params, dynamic=False, mode=mode)
    return _COMPILED[mode]


def move_params(params: Any, device: torch.device) -> Any:
    """Every tensor or NumPy array of a (nested) NamedTuple of parameters, as tensors on
    ``device``, sent in one copy per dtype.

    The leaves are packed into one flat buffer per dtype, pinned and sent with
    ``non_blocking=True``: the CPU goes on without waiting for the GPU (a copy from ordinary
    pageable memory would wait for every kernel queued before it). NumPy leaves (the CPU
    samplers' own arrays) are packed straight into the pinned buffer. The results are views
    of those buffers, so unpacking launches nothing.
    """
    device = torch.device(device)
    leaves: list[Tensor | np.ndarray] = []

    def collect(node: Any) -> None:
        if isinstance(node, (Tensor, np.ndarray)):
            leaves.append(node)
        elif isinstance(node, tuple):
            for child in node:
                collect(child)

    collect(params)
    pin = device.type == "cuda"
    moved: dict[int, Tensor] = {}
    dtypes = [_torch_dtype(t) for t in leaves]
    for dtype in dict.fromkeys(dtypes):
        group = [t for t, d in zip(leaves, dtypes) if d == dtype]
        sizes = [t.size if isinstance(t, np.ndarray) else t.numel() for t in group]
        if all(isinstance(t, np.ndarray) for t in group):
            flat = torch.empty(sum(sizes), dtype=dtype, pin_memory=pin)
            np.concatenate([t.ravel() for t in group], out=flat.numpy())
        else:
            flat = torch.cat([torch.as_tensor(t).reshape(-1) for t in group])
            flat = flat.pin_memory() if pin else flat
        flat = flat.to(device, non_blocking=True)
        for t, view in zip(group, flat.split(sizes)):
            moved[id(t)] = view if t.ndim == 1 else view.view(t.shape)
    return _map_arrays(params, lambda t: moved[id(t)])


def _torch_dtype(t: Tensor | np.ndarray) -> torch.dtype:
    return t.dtype if isinstance(t, Tensor) else _NUMPY_TO_TORCH[t.dtype]


_NUMPY_TO_TORCH = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
}


def make_proxy_batch(
    images: Tensor,
    variant: Variant,
    *,
    generator: torch.Generator,
    patch_size: int | None = None,
    whole_image_aug: WholeImageAug | None = WholeImageAug(),  # noqa: B008 (frozen, immutable)
    aspect_sampling: AspectSampling = "log_uniform",
    implementation: Implementation = "batched",
    compiled: bool | str = False,
) -> ProxyBatch:
    """The classifier inputs of one training step (see :class:`ProxyBatch` for the layout).

    Two stages: :func:`sample_proxy_params` draws every random choice, then
    :func:`apply_proxy_params` builds the pixels. Order: whole-image augmentation (once per
    original, shared by its views), then the patch crop (patch mode, shared by the views too),
    then CutPaste and/or Scar on copies. Variants: "cutpaste" / "scar" (binary), "union" (each
    augmented view is CutPaste or Scar with probability 1/2, label 1), "3way" (labels 0 normal,
    1 CutPaste, 2 Scar).

    Args:
        images: float (B, 3, H, W) in [0, 1] on any device.
        variant: one of :data:`VARIANTS`.
        generator: ``torch.Generator`` on the images' device, or on the CPU for images on a
            GPU: the parameters (a few hundred numbers) are then drawn on the CPU and sent in
            one pinned copy (:func:`move_params`), which spares the GPU about 150 tiny kernel
            launches per batch; training does this. Same seed and device, same batch.
        patch_size: crop side for the patch (localization) model, e.g. 64; None = whole image.
        whole_image_aug: the whole-image transform, or None to switch it off.
        aspect_sampling: CutPaste aspect sampling, "log_uniform" or "two_interval".
        implementation: "batched" (training) or "per_image" (readable reference, same output).
        compiled: run the pixel stage through ``torch.compile`` (batched only; meant for CUDA,
            where it fuses hundreds of small kernels; same pixels up to float rounding). True
            means mode "reduce-overhead" on CUDA (the fused kernels replayed as one CUDA graph;
            the returned tensors are overwritten by the next call, so use each batch before
            asking for the next, as training does) and "default" on the CPU; a string is taken
            as the mode itself.
    """
    _check_variant(variant)
    _check_images(images, generator)
    _check_implementation(implementation)
    B, _, H, W = images.shape
    params = sample_proxy_params(
        B, (H, W), variant, generator=generator, patch_size=patch_size,
        whole_image_aug=whole_image_aug, aspect_sampling=aspect_sampling, device=images.device,
    )  # fmt: skip
    size = (H, W) if patch_size is None else (patch_size, patch_size)
    # a bound on the pixels of any paste, from the sampling ranges alone: fixed shapes, so
    # building the batch never waits for the device
    bound = paste_window_bound(
        size,
        area_ratio=None if variant == "scar" else CUTPASTE_AREA,
        aspect_ratio=CUTPASTE_ASPECT,
        scar_width=None if variant == "cutpaste" else SCAR_WIDTH,
        scar_length=None if variant == "cutpaste" else SCAR_LENGTH,
        scale=scar_scale((H, W)),
    )
    apply = apply_proxy_params
    if compiled and implementation == "batched":
        # True: on a GPU the fused kernels are also replayed as a CUDA graph
        apply = _compiled_apply(compile_mode(images.device) if compiled is True else compiled)
    out = apply(
        images, params, variant, patch_size=patch_size,
        whole_hue=whole_image_aug is not None and whole_image_aug.hue > 0,
        max_pixels=bound, implementation=implementation,
    )  # fmt: skip
    if apply is apply_proxy_params:
        return out
    # labels made outside the compiled graph: they must outlive the model's own CUDA graphs
    # within a training step (a graph's outputs are overwritten by its next replay)
    return out._replace(labels=_labels(num_classes(variant), B, images.device))


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
    if generator.device.type not in (images.device.type, "cpu"):
        raise ValueError(
            f"generator is on {generator.device} but images are on {images.device}: "
            f"create it with torch.Generator(device={str(images.device)!r}) or on the CPU"
        )
