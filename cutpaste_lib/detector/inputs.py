"""New images to score: files and folders (recursive) -> one uint8 batch, and the files that failed.

Every readable image is decoded exactly as the training caches decode theirs
(:func:`cutpaste_lib.data.decode_image`: any mode to RGB, grayscale replicated, alpha dropped,
16-bit scaled, bilinear antialiased resize), so a detector scores a file as ``evaluate`` scored it.
A file that cannot be read is listed with its reason instead of stopping the others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cutpaste_lib.data import IMAGE_EXTENSIONS, decode_image
from cutpaste_lib.errors import CutPasteError


@dataclass
class ImageBatch:
    """Decoded images and what happened to each requested file.

    Attributes:
        images: uint8 (N, 3, H, W) of the readable files, in ``paths`` order.
        paths: the readable files.
        original_sizes: (H, W) of each readable file before resizing.
        failed: ``(path, reason)`` of every file that could not be read.
    """

    images: torch.Tensor
    paths: list[Path]
    original_sizes: list[tuple[int, int]]
    failed: list[tuple[Path, str]] = field(default_factory=list)


def expand_paths(paths: Iterable[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Files as given, and every image file under each folder (recursive, sorted, any case).

    A given file is kept whatever its extension (it is decoded or reported); inside folders only
    files with one of :data:`~cutpaste_lib.data.IMAGE_EXTENSIONS` count, hidden ones skipped.
    Returns ``(files, problems)``; a path that does not exist, or a folder without images, is a
    problem, not an exception.
    """
    files: list[Path] = []
    problems: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file()
                and p.suffix.lower() in IMAGE_EXTENSIONS
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                problems.append((path, f"no images in this folder ({', '.join(IMAGE_EXTENSIONS)})"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            problems.append((path, "not found"))
    return files, problems


def load_images(
    files: Sequence[str | Path], image_size: tuple[int, int], *, progress: bool = False
) -> ImageBatch:
    """Decode ``files`` at ``image_size``; unreadable ones go to ``failed`` with the reason."""
    h, w = image_size
    arrays, ok, sizes, failed = [], [], [], []
    iterator: Iterable = files
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(files, desc="read images", unit="img")
    for raw in iterator:
        path = Path(raw)
        try:
            array, original = decode_image(path, (h, w))
        except (CutPasteError, OSError) as exc:
            failed.append((path, str(exc)))
            continue
        arrays.append(array)
        ok.append(path)
        sizes.append(original)
    images = (
        torch.from_numpy(np.ascontiguousarray(np.stack(arrays)))  # NCHW, as the caches
        if arrays
        else torch.empty((0, 3, h, w), dtype=torch.uint8)
    )
    return ImageBatch(images, ok, sizes, failed)
