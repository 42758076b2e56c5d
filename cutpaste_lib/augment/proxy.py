"""The classifier inputs of one training step: draw every parameter, then build the pixels
(whole-image augmentation, patch crop, pastes on copies), optionally under ``torch.compile``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from cutpaste_lib.augment.batched_paste import paste_into
from cutpaste_lib.augment.cutpaste_scar import paste
from cutpaste_lib.augment.geometry import paste_window_bound, scar_scale
from cutpaste_lib.augment.params import (
    CUTPASTE_AREA,
    CUTPASTE_ASPECT,
    REFERENCE_SIZE,
    SCAR_LENGTH,
    SCAR_WIDTH,
    AspectSampling,
    Implementation,
    ProxyBatch,
    ProxyParams,
    Variant,
    check_images,
    check_implementation,
    check_variant,
    num_classes,
)
from cutpaste_lib.augment.patch_crop import crop
from cutpaste_lib.augment.proxy_params import sample_proxy_params
from cutpaste_lib.augment.whole_image import WholeImageAug, apply_whole_image
from cutpaste_lib.config import compile_mode


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
    (:class:`ProxyCompiler`).
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


class ProxyCompiler:
    """:func:`apply_proxy_params` under ``torch.compile(mode=mode)``, compiled on first use.

    The caller owns it and passes it to every step (``make_proxy_batch(..., compiled=c)``),
    so the compiled function lives as long as the training run that made it.
    ``mode="reduce-overhead"`` also records the fused kernels as a CUDA graph; its outputs
    are then overwritten by the next call, which training allows (each batch is used once).
    """

    def __init__(self, mode: str = "default") -> None:
        self.mode = mode
        self._compiled: Callable[..., ProxyBatch] | None = None

    @classmethod
    def for_device(cls, device: torch.device | str) -> ProxyCompiler:
        """The mode this library trains with on ``device`` (CUDA graphs on CUDA)."""
        return cls(compile_mode(torch.device(device)))

    def __call__(
        self, images: Tensor, params: ProxyParams, variant: Variant, **options
    ) -> ProxyBatch:
        if self._compiled is None:
            self._compiled = torch.compile(apply_proxy_params, dynamic=False, mode=self.mode)
        return self._compiled(images, params, variant, **options)


def make_proxy_batch(
    images: Tensor,
    variant: Variant,
    *,
    generator: torch.Generator,
    patch_size: int | None = None,
    whole_image_aug: WholeImageAug | None = WholeImageAug(),  # noqa: B008 (frozen, immutable)
    aspect_sampling: AspectSampling = "log_uniform",
    implementation: Implementation = "batched",
    compiled: ProxyCompiler | None = None,
    host_arithmetic: bool = True,
    scar_reference: int = REFERENCE_SIZE,
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
            one pinned copy (:func:`move_params`), which spares the GPU many tiny kernel
            launches per batch; training does this. Same seed and device, same batch.
        patch_size: crop side for the patch (localization) model, e.g. 64; None = whole image.
        whole_image_aug: the whole-image transform, or None to switch it off.
        aspect_sampling: CutPaste aspect sampling, "log_uniform" or "two_interval".
        implementation: "batched" (training) or "per_image" (readable reference, same output).
        compiled: a :class:`ProxyCompiler` the caller creates once and passes at every step:
            the pixel stage then runs through ``torch.compile`` (batched only; meant for CUDA,
            where it fuses hundreds of small kernels; same pixels up to float rounding).
            :meth:`ProxyCompiler.for_device` picks the mode this library trains with
            ("reduce-overhead" on CUDA: the fused kernels are replayed as one CUDA graph whose
            outputs are overwritten by the next call, so use each batch before asking for the
            next, as training does; "default" on the CPU). None: eager.
        host_arithmetic: with a CPU generator, compute the parameters in NumPy on one draw
            (default) or in torch (see :func:`~cutpaste_lib.augment.draws.draw`); the same
            numbers either way.
        scar_reference: the image side the scar sizes (2-16 x 10-25 px, paper A.2) refer to;
            they are scaled by ``sqrt(H * W) / scar_reference``. The paper's 256 by default; the
            laptop protocol trains at 64 px with 128 (scars twice as large as plain scaling
            makes them, which at 64 px would be 0.5-4 px wide: see ``config.LAPTOP``).
    """
    check_variant(variant)
    if (
        isinstance(scar_reference, bool)
        or not isinstance(scar_reference, int)
        or scar_reference < 1
    ):
        raise ValueError(f"scar_reference must be a positive integer, got {scar_reference!r}")
    check_images(images, generator)
    check_implementation(implementation)
    if compiled is not None and not isinstance(compiled, ProxyCompiler):
        raise TypeError(
            f"compiled must be a ProxyCompiler or None, got {type(compiled).__name__}: create "
            "one per run, e.g. ProxyCompiler.for_device(device), and pass it at every step"
        )
    B, _, H, W = images.shape
    params = sample_proxy_params(
        B,
        (H, W),
        variant,
        generator=generator,
        patch_size=patch_size,
        whole_image_aug=whole_image_aug,
        aspect_sampling=aspect_sampling,
        device=images.device,
        host_arithmetic=host_arithmetic,
        scar_reference=scar_reference,
    )
    size = (H, W) if patch_size is None else (patch_size, patch_size)
    # a bound on the pixels of any paste, from the sampling ranges alone: fixed shapes, so
    # building the batch never waits for the device
    bound = paste_window_bound(
        size,
        area_ratio=None if variant == "scar" else CUTPASTE_AREA,
        aspect_ratio=CUTPASTE_ASPECT,
        scar_width=None if variant == "cutpaste" else SCAR_WIDTH,
        scar_length=None if variant == "cutpaste" else SCAR_LENGTH,
        scale=scar_scale((H, W), scar_reference),
    )
    apply = apply_proxy_params
    if compiled is not None and implementation == "batched":
        apply = compiled
    out = apply(
        images,
        params,
        variant,
        patch_size=patch_size,
        whole_hue=whole_image_aug is not None and whole_image_aug.hue > 0,
        max_pixels=bound,
        implementation=implementation,
    )
    if apply is apply_proxy_params:
        return out
    # labels made outside the compiled graph: they must outlive the model's own CUDA graphs
    # within a training step (a graph's outputs are overwritten by its next replay)
    return out._replace(labels=_labels(num_classes(variant), B, images.device))
