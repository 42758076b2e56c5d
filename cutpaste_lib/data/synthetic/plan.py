"""Which images a dataset holds, where each is written and from which random stream.

Each image's stream depends only on (seed, category, split, defect, index), through stable CRC-32
ids of the names, so adding a category or changing the thread count does not change any file.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from cutpaste_lib.data.mvtec import SYNTHETIC_CATEGORIES
from cutpaste_lib.data.synthetic.defects import DEFECT_TYPES
from cutpaste_lib.errors import DatasetError


class _Job(NamedTuple):
    """One image to draw: what, from which entropy, and where its image and mask go."""

    category: str
    defect: str
    entropy: tuple[int, ...]
    image_path: Path
    mask_path: Path | None


def _stable_id(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def default_test_counts(n_train: int) -> tuple[int, int]:
    """(good test images, images per defect type) used with ``n_train`` training images."""
    return max(10, n_train // 3), max(4, n_train // 8)


def _check_categories(categories: Sequence[str] | None) -> list[str]:
    """The categories asked for (default: all); ``DatasetError`` for an unknown or empty list."""
    names = list(SYNTHETIC_CATEGORIES if categories is None else categories)
    unknown = [c for c in names if c not in SYNTHETIC_CATEGORIES]
    if unknown or not names:
        raise DatasetError(
            f"unknown synthetic categories {unknown or names}: choose from {', '.join(SYNTHETIC_CATEGORIES)}"
        )
    return names


def _resolve_counts(
    *, n_train: int, n_test_good: int | None, n_test_defect: int | None
) -> dict[str, int]:
    """The image counts per category, defaults filled in; ``DatasetError`` if one is below 1."""
    good, per_defect = default_test_counts(n_train)
    counts = {
        "n_train": int(n_train),
        "n_test_good": good if n_test_good is None else int(n_test_good),
        "n_test_defect": per_defect if n_test_defect is None else int(n_test_defect),
    }
    if counts["n_train"] < 1 or counts["n_test_good"] < 1 or counts["n_test_defect"] < 1:
        raise DatasetError(f"every count must be at least 1, got {counts}")
    return counts


def _plan_category(folder: Path, category: str, counts: dict, seed: int) -> list[_Job]:
    """Create the category's folders and list one job per image."""
    cat_id = _stable_id(category)
    plan = [("train", "good", counts["n_train"]), ("test", "good", counts["n_test_good"])]
    plan += [("test", d, counts["n_test_defect"]) for d in DEFECT_TYPES[category]]
    jobs = []
    for split, defect, n in plan:
        (folder / split / defect).mkdir(parents=True)
        if defect != "good":
            (folder / "ground_truth" / defect).mkdir(parents=True)
        for i in range(n):
            entropy = (seed, cat_id, _stable_id(split), _stable_id(defect), i)
            mask_path = (
                folder / "ground_truth" / defect / f"{i:03d}_mask.png" if defect != "good" else None
            )
            jobs.append(
                _Job(category, defect, entropy, folder / split / defect / f"{i:03d}.png", mask_path)
            )
    return jobs


def _plan_dataset(root: Path, categories: Sequence[str], counts: dict, seed: int) -> list[_Job]:
    """Create every category's folders under ``root`` and list all jobs, category by category."""
    jobs: list[_Job] = []
    for category in sorted(categories):
        jobs += _plan_category(root / category, category, counts, seed)
    return jobs
