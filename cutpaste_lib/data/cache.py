"""Decode and resize a split once into a uint8 tensor, so training never touches PIL or disk.

A 256x256 RGB image is 192 KiB as uint8; the 200-odd training images of an MVTec category fit
in ~50 MiB, on the GPU when there is one. The model always receives :func:`normalize` output;
augmentations work on float images in [0, 1] (``cache.images.float() / 255``).

Example:
    >>> from cutpaste_lib.data import load_cache, normalize
    >>> cache = load_cache(root, "synth_grid", "train", 64)  # doctest: +SKIP
    >>> cache.images.shape, cache.images.dtype  # doctest: +SKIP
    (torch.Size([12, 3, 64, 64]), torch.uint8)
    >>> x = normalize(cache.images[:4])  # float32, ImageNet mean/std  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cutpaste_lib.data.mvtec import Sample, load_split, read_image, read_mask
from cutpaste_lib.errors import DatasetError


@dataclass
class ImageCache:
    """Decoded images of one split, with labels and (optionally) masks.

    Attributes:
        images: uint8 (N, 3, H, W) on the cache's device.
        masks: bool (N, 1, H, W), all False for good images; ``None`` when not loaded.
        labels: int64 (N,), 0 good / 1 defective.
        defects: defect type per image (``"good"`` for good ones).
        paths: source file per image.
        category: category name.
        split: ``"train"`` or ``"test"``.
    """

    images: torch.Tensor
    masks: torch.Tensor | None
    labels: torch.Tensor
    defects: list[str]
    paths: list[Path]
    category: str = ""
    split: str = ""

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the cached images."""
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def to(self, device: str | torch.device) -> ImageCache:
        """A copy on ``device`` (images, masks and labels move together)."""
        return replace(
            self,
            images=self.images.to(device),
            masks=None if self.masks is None else self.masks.to(device),
            labels=self.labels.to(device),
        )

    def subset(self, index: Sequence[int] | torch.Tensor | slice) -> ImageCache:
        """The images at ``index`` (a slice, a list of ints, an int tensor or a bool tensor)."""
        if isinstance(index, slice):
            idx = list(range(len(self)))[index]
        elif isinstance(index, torch.Tensor):
            idx = (index.nonzero().flatten() if index.dtype == torch.bool else index).tolist()
        else:
            idx = [int(i) for i in index]
        t = torch.as_tensor(idx, dtype=torch.long, device=self.images.device)
        return replace(
            self,
            images=self.images[t],
            masks=None if self.masks is None else self.masks[t],
            labels=self.labels[t],
            defects=[self.defects[i] for i in idx],
            paths=[self.paths[i] for i in idx],
        )


def _size_hw(image_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    h, w = (int(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}")
    return h, w


def resize_rgb(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """An RGB PIL image resized to ``size`` = (H, W) -> uint8 (3, H, W), as every cache does it."""
    h, w = _size_hw(size)
    if (image.height, image.width) != (h, w):
        # PIL's bilinear resize widens its kernel when shrinking, i.e. it is antialiased
        # (the same as torchvision's resize(antialias=True)), so small defects are not aliased away.
        image = image.resize((w, h), Image.BILINEAR)
    return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)


def decode_image(
    path: str | Path, size: int | tuple[int, int]
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image file as a cache does: uint8 (3, H, W) at ``size``, and its original (H, W).

    Raises the errors of :func:`~cutpaste_lib.data.mvtec.read_image` (naming the file).
    """
    image = read_image(path)
    return resize_rgb(image, size), (image.height, image.width)


def _decode(
    sample: Sample, size: tuple[int, int], with_mask: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    array, original = decode_image(sample.path, size)
    mask = None
    if with_mask:
        if sample.mask_path is None:
            mask = np.zeros(size, dtype=bool)
        else:
            mask = read_mask(sample.mask_path, size, image_size=original)
    return array, mask


def build_cache(
    samples: Sequence[Sample],
    image_size: int | tuple[int, int],
    *,
    device: str | torch.device = "cpu",
    with_masks: bool = False,
    category: str = "",
    split: str = "",
    progress: bool = False,
    num_workers: int | None = None,
) -> ImageCache:
    """Decode, convert to RGB and resize every sample once.

    Args:
        samples: from :func:`load_split`.
        image_size: output size; an int means square (the paper resizes the whole image to 256).
        device: where the tensors live (``"cuda"`` keeps the training set on the GPU).
        with_masks: also read masks (nearest-neighbour resize; all False for good images).
        category, split: recorded on the cache.
        progress: show a tqdm bar.
        num_workers: decoding threads (PIL releases the GIL while decoding); default: CPU count, at most 8.

    Raises:
        DatasetError: no samples, or an unreadable image or mask (the message names the file).
    """
    if len(samples) == 0:
        raise DatasetError(f"no images to cache for {category or 'this category'} {split}".rstrip())
    size = _size_hw(image_size)
    workers = num_workers or min(8, os.cpu_count() or 1)
    images = np.empty((len(samples), 3, *size), dtype=np.uint8)
    masks = np.zeros((len(samples), 1, *size), dtype=bool) if with_masks else None

    def work(i: int) -> int:
        array, mask = _decode(samples[i], size, with_masks)
        images[i] = array
        if masks is not None:
            masks[i, 0] = mask
        return i

    indices = range(len(samples))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        done = pool.map(work, indices)
        if progress:
            from tqdm.auto import tqdm

            done = tqdm(
                done, total=len(samples), desc=f"decode {category} {split}".strip(), unit="img"
            )
        for _ in done:
            pass

    device = torch.device(device)
    return ImageCache(
        images=torch.from_numpy(images).to(device),
        masks=None if masks is None else torch.from_numpy(masks).to(device),
        labels=torch.tensor([s.label for s in samples], dtype=torch.int64, device=device),
        defects=[s.defect for s in samples],
        paths=[Path(s.path) for s in samples],
        category=category,
        split=split,
    )


def load_cache(
    root: str | Path,
    category: str,
    split: str,
    image_size: int | tuple[int, int],
    *,
    device: str | torch.device = "cpu",
    progress: bool = False,
    masks: bool | None = None,
) -> ImageCache:
    """:func:`load_split` then :func:`build_cache`.

    ``masks``: read the ground-truth masks (default: for the test split). ``masks=False`` on the
    test split is image-level evaluation: defective images need no mask and ``cache.masks`` is
    None.
    """
    masks = split == "test" if masks is None else bool(masks)
    samples = load_split(root, category, split, require_masks=masks)  # type: ignore[arg-type]
    return build_cache(
        samples,
        image_size,
        device=device,
        with_masks=masks,
        category=category,
        split=split,
        progress=progress,
    )
