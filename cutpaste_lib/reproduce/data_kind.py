"""Facts about the dataset a grid runs on: its categories, their test splits, what kind of data it is."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from cutpaste_lib import paper
from cutpaste_lib.data import SYNTHETIC_CATEGORIES, category_info, list_categories, load_split
from cutpaste_lib.data.synthetic import MANIFEST
from cutpaste_lib.errors import CutPasteError, DataNotFoundError, DatasetError

DataKind = Literal["mvtec", "synthetic", "other"]
DATA_KIND_TEXT = {
    "mvtec": "MVTec AD",
    "synthetic": "synthetic (generated, MVTec layout)",
    "other": "other dataset in MVTec layout",
}
"""How the tables describe each kind of data."""


def available_categories(root: str | Path) -> list[str]:
    """Categories under ``root`` (:func:`cutpaste_lib.data.list_categories`), MVTec ones in paper order."""
    root = Path(root)
    found = set(list_categories(root))
    if not found:
        raise DataNotFoundError(
            f"no categories in {root}: expected MVTec layout <root>/<category>/train/good/*.png"
        )
    return [c for c in paper.CATEGORIES if c in found] + sorted(found - set(paper.CATEGORIES))


def check_test_splits(root: str | Path, categories: Iterable[str]) -> None:
    """Check, before any training, that every category's test split can give an image AUROC.

    The AUROC needs good and defective test images; without this check a category that lacks
    either shows up only after each of its models has been trained. The test splits are read with
    :func:`cutpaste_lib.data.load_split`, so a missing folder or mask is reported here too.

    Raises:
        DatasetError: one or more categories cannot be scored; the message lists all of them,
            each with its test folder.
    """
    root = Path(root).expanduser()
    problems = []
    for category in categories:
        folder = root / category / "test"
        try:
            labels = {s.label for s in load_split(root, category, "test")}
        except CutPasteError as exc:
            problems.append(f"{category}: {exc}")
            continue
        if 0 not in labels:
            problems.append(f"{category}: no good images in {folder / 'good'}")
        elif 1 not in labels:
            problems.append(f"{category}: no defective images in {folder} (only good/)")
    if problems:
        raise DatasetError(
            f"the image AUROC needs good and defective test images: {'; '.join(problems)}"
        )


def category_kind(category: str) -> str:
    """``texture`` or ``object`` (:func:`cutpaste_lib.data.category_info`; unknown names: object)."""
    return category_info(category).kind


def data_kind(root: str | Path, categories: Iterable[str]) -> DataKind:
    """``synthetic`` for a generated set, ``mvtec`` when every category is an MVTec AD one, else other.

    Paper numbers are shown only for ``mvtec``: a synthetic set is recognised by the generator's
    manifest or by its category names, so it is never compared with the paper by accident.
    """
    cats = set(categories)
    if (Path(root) / MANIFEST).is_file() or (cats and cats <= set(SYNTHETIC_CATEGORIES)):
        return "synthetic"
    if cats and cats <= set(paper.CATEGORIES):
        return "mvtec"
    return "other"
