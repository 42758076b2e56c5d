"""Dense patch features: the encoder applied to every patch of the grid, many patches per pass."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypedDict, Unpack

import torch
from torch import Tensor, nn

from cutpaste_lib.config import resolve_device
from cutpaste_lib.data import normalize
from cutpaste_lib.localize.patches import PatchGrid, extract_patches
from cutpaste_lib.model import eval_mode
from cutpaste_lib.precision import feature_precision


def encoder_of(model: nn.Module) -> nn.Module:
    """A CutPasteModel's ``.encoder`` (pooled features), or the module itself (any encoder)."""
    return model.encoder if hasattr(model, "encoder") else model


def encode(encoder: nn.Module, patches: Tensor, max_patches: int) -> Tensor:
    """Pooled features (B, D) float32 of normalised patches (B, C, p, p), ``max_patches`` per pass.

    The network runs in fp32 (:func:`cutpaste_lib.precision.feature_precision`): these features
    feed a Gaussian.
    """
    precision = feature_precision(patches.device)
    out = []
    for k in range(0, patches.shape[0], max_patches):
        x = precision.prepare(patches[k : k + max_patches])
        with precision.autocast():
            feats = encoder(x)
        if feats.ndim != 2:
            raise ValueError(
                f"the encoder must return pooled features (B, D), got shape {tuple(feats.shape)}"
            )
        out.append(feats.float())
    return torch.cat(out)


def as_images(images) -> Tensor:
    """The (N, 3, H, W) image tensor of an ImageCache or of a tensor; a clear error otherwise."""
    images = getattr(images, "images", images)  # an ImageCache or a tensor
    if not torch.is_tensor(images) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if torch.is_tensor(images) else type(images).__name__
        raise ValueError(f"images must be an ImageCache or a (N, 3, H, W) tensor, got {shape}")
    return images


def iter_dense_features(
    model: nn.Module,
    images,
    *,
    patch_size: int = 32,
    stride: int = 4,
    max_patches: int = 1024,
    device: str | torch.device | None = None,
) -> Iterator[tuple[int, Tensor]]:
    """Yield ``(first_index, features (n, gh, gw, D) float32 on device)`` for chunks of images.

    Each forward pass takes up to ``max_patches`` patches (from one image or several); memory is
    bounded by ``max(max_patches, gh * gw)`` patches. Images are uint8 or float in [0, 1] (an
    ImageCache works); they are ImageNet-normalised here.
    """
    images = as_images(images)
    device = resolve_device(device) if device is not None else images.device
    grid = PatchGrid(tuple(images.shape[-2:]), patch_size, stride)
    gh, gw = grid.shape
    per_chunk = max(1, max_patches // grid.num_locations)
    encoder = encoder_of(model)
    with eval_mode(encoder), torch.inference_mode():
        for start in range(0, images.shape[0], per_chunk):
            x = normalize(images[start : start + per_chunk].to(device))
            patches = extract_patches(x, patch_size, stride).reshape(-1, 3, patch_size, patch_size)
            feats = encode(encoder, patches, max_patches)
            yield start, feats.reshape(x.shape[0], gh, gw, -1)


class DenseOptions(TypedDict, total=False):
    """The keyword arguments of :func:`iter_dense_features`, for functions that pass them on."""

    patch_size: int
    stride: int
    max_patches: int
    device: str | torch.device | None


def dense_features(model: nn.Module, images, **options: Unpack[DenseOptions]) -> Tensor:
    """Pooled features of every patch: (N, gh, gw, D) float32 on CPU (feature (i, j) = patch at (stride*i, stride*j)).

    Takes the keyword arguments of :func:`iter_dense_features` (``patch_size``, ``stride``,
    ``max_patches``, ``device``). Holds all features in memory; :func:`score_images` streams instead.
    """
    return torch.cat([f.cpu() for _, f in iter_dense_features(model, images, **options)])
