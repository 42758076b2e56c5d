"""Whole-image augmentation: the paper's "random translation and color jitters", drawn once
per original and shared by all its views (magnitudes are our choice)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cutpaste_lib.augment.colour import JITTER_DRAWS, jitter_batched, jitter_one, jitter_params
from cutpaste_lib.augment.draws import Drawn, Draws, sample
from cutpaste_lib.augment.params import (
    Implementation,
    WholeImageParams,
    check_images,
    check_implementation,
    check_jitter,
)

WHOLE_IMAGE_DRAWS = Draws(shift=(2,), jitter=JITTER_DRAWS)  # per image: shift y, x; jitter


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
        self,
        batch: int,
        size: tuple[int, int],
        *,
        generator: torch.Generator,
        host_arithmetic: bool = True,
    ) -> WholeImageParams:
        """Integer shifts uniform in [-T, T] per axis (T = round(translate * side)) and jitter."""
        self._check()
        body = functools.partial(self._params, size=size)
        return sample(generator, WHOLE_IMAGE_DRAWS, (batch,), body, host_arithmetic=host_arithmetic)

    def _check(self) -> None:
        """The jitter magnitudes are valid (run before anything is drawn)."""
        check_jitter(self.brightness, self.contrast, self.saturation, self.hue)

    def _params(self, u: Drawn, size: tuple[int, int]) -> WholeImageParams:
        """The parameters from the uniforms of :data:`WHOLE_IMAGE_DRAWS`."""
        xp = u.xp
        ty, tx = (min(round(self.translate * s), s - 1) for s in size)
        shift_y = xp.clip(xp.to_long(xp.floor(u.shift[:, 0] * (2 * ty + 1))), None, 2 * ty) - ty
        shift_x = xp.clip(xp.to_long(xp.floor(u.shift[:, 1] * (2 * tx + 1))), None, 2 * tx) - tx
        magnitudes = (self.brightness, self.contrast, self.saturation, self.hue)
        factors, order = jitter_params(u.jitter, magnitudes)
        return WholeImageParams(shift_y, shift_x, factors, order)

    def __call__(
        self,
        images: Tensor,
        *,
        generator: torch.Generator,
        implementation: Implementation = "batched",
        host_arithmetic: bool = True,
    ) -> Tensor:
        check_images(images, generator)
        params = self.sample(
            images.shape[0],
            tuple(images.shape[-2:]),
            generator=generator,
            host_arithmetic=host_arithmetic,
        )
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
    :func:`~cutpaste_lib.augment.colour.jitter_batched`).
    """
    check_implementation(implementation)
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
