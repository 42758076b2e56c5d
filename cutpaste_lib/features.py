"""Pooled encoder features of images, through the image cache: the input of every density.

* :func:`extract_features`: float32 ``(N, D)`` features of an ImageCache or an image tensor
  (eval mode, ``inference_mode``, fp32 arithmetic: these features feed a Gaussian);
* :func:`embed`: the same for an ImageCache, as :class:`~cutpaste_lib.density.Embeddings` carrying
  the cache's split, labels and defect types (what a density is fitted on and scores);
* :func:`embed_augmented`: CutPaste / Scar embeddings for the t-SNE figure only (paper Figure 3);
  they carry their augmentation name, so a density refuses to be fitted on them.

Example:
    >>> import torch
    >>> from cutpaste_lib.features import extract_features
    >>> encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> extract_features(encoder, torch.zeros(5, 3, 16, 16, dtype=torch.uint8), batch_size=2).shape
    torch.Size([5, 4])
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cutpaste_lib import augment
from cutpaste_lib.data import normalize
from cutpaste_lib.density import Embeddings
from cutpaste_lib.model import eval_mode
from cutpaste_lib.precision import feature_precision

__all__ = ["embed", "embed_augmented", "extract_features"]


def _images_of(images) -> Tensor:
    data = getattr(images, "images", images)  # an ImageCache or a tensor
    if not torch.is_tensor(data) or data.ndim != 4 or data.shape[1] != 3:
        raise ValueError(
            "images must be an ImageCache or a (N, 3, H, W) uint8 / float [0, 1] tensor"
        )
    return data


def _feature_fn(model: nn.Module):
    """Pooled encoder features: ``model.encoder`` for a CutPasteModel, else the module's output."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        return encoder

    def run(x: Tensor) -> Tensor:
        out = model(x)
        return out.features if hasattr(out, "features") else out

    return run


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def extract_features(
    model: nn.Module, images, *, batch_size: int = 64, device: str | torch.device | None = None
) -> Tensor:
    """Average-pooled encoder features of every image, float32 (N, D) on the CPU.

    Args:
        model: a :class:`~cutpaste_lib.model.CutPasteModel` (its ``.encoder`` is used) or any module
            mapping normalised images to (B, D) features (or to an output with ``.features``).
        images: an :class:`~cutpaste_lib.data.ImageCache` or a uint8 / float-in-[0, 1] (N, 3, H, W) tensor.
            They are ImageNet-normalised here (:func:`cutpaste_lib.data.normalize`).
        batch_size: images per forward pass.
        device: where to run; default the model's device. fp32 everywhere (channels_last on
            CUDA): :func:`cutpaste_lib.precision.feature_precision`.

    The model runs in eval mode under ``torch.inference_mode`` and is returned to its previous mode.
    If ``device`` differs from the model's device the model is moved there (in place, like ``.to``).
    """

    data = _images_of(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    if _model_device(model) != device:
        model = model.to(device)
    fn = _feature_fn(model)
    policy = feature_precision(device)
    out = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, data.shape[0], batch_size):
            x = normalize(data[start : start + batch_size].to(device, non_blocking=True))
            with policy.autocast():
                feats = fn(policy.prepare(x))
            out.append(feats.float().reshape(feats.shape[0], -1).cpu())
    if not out:
        raise ValueError("no images to extract features from")
    return torch.cat(out)


def embed(
    model: nn.Module, cache, *, batch_size: int = 64, device: str | torch.device | None = None
) -> Embeddings:
    """:func:`extract_features` of an ImageCache, with the cache's split, labels and defects attached."""
    return Embeddings.from_cache(
        cache, extract_features(model, cache, batch_size=batch_size, device=device)
    )


def embed_augmented(
    model: nn.Module,
    cache,
    augmentation: str,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> Embeddings:
    """Embeddings of CutPaste- or Scar-augmented copies of ``cache``'s images (for figures only).

    The result is marked with ``augmentation``, so :meth:`GaussianDensity.fit` refuses it.
    """
    if augmentation not in ("cutpaste", "scar"):
        raise ValueError(f"augmentation must be 'cutpaste' or 'scar', got {augmentation!r}")
    images = _images_of(cache)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    augmented = getattr(augment, augmentation)(
        images.float() / 255.0 if images.dtype == torch.uint8 else images, generator=generator
    ).images
    feats = extract_features(model, augmented, batch_size=batch_size, device=device)
    n = feats.shape[0]
    return Embeddings(
        feats,
        torch.ones(n, dtype=torch.int64),
        (augmentation,) * n,
        str(cache.split),
        str(getattr(cache, "category", "")),
        augmentation,
    )
