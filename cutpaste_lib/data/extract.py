"""Extract MVTec-layout archives atomically, and check a category against the paper's counts.

Extraction happens in a temporary folder inside ``root``; each category folder is renamed into
place only after its contents were checked (:func:`check_category`), so an interrupted run never
leaves a partial category. Members that would land outside ``root`` (absolute paths, ``..``,
links, devices) are refused.
"""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from cutpaste_lib.data.mvtec import IMAGE_EXTENSIONS
from cutpaste_lib.errors import DatasetError

MVTEC_COUNTS: dict[str, tuple[int, int]] = {
    "bottle": (209, 83),
    "cable": (224, 150),
    "capsule": (219, 132),
    "carpet": (280, 117),
    "grid": (264, 78),
    "hazelnut": (391, 110),
    "leather": (245, 124),
    "metal_nut": (220, 115),
    "pill": (267, 167),
    "screw": (320, 160),
    "tile": (230, 117),
    "toothbrush": (60, 42),
    "transistor": (213, 100),
    "wood": (247, 79),
    "zipper": (240, 151),
}
"""(train images, test images) per category, from the MVTec AD paper; 3,629 and 1,725 in total."""


def _safe_members(tar: tarfile.TarFile, into: Path) -> list[tarfile.TarInfo]:
    """Refuse members that would land outside ``into`` (absolute paths, ``..``, links, devices)."""
    base = into.resolve()
    members = []
    for m in tar.getmembers():
        target = (base / m.name).resolve()
        if not (target == base or base in target.parents):
            raise DatasetError(
                f"archive member {m.name!r} would be written outside {into}: refusing to extract"
            )
        if m.issym() or m.islnk() or m.isdev():
            raise DatasetError(
                f"archive member {m.name!r} is a link or device: refusing to extract"
            )
        members.append(m)
    return members


def _count_images(folder: Path) -> int:
    if not folder.is_dir():
        return 0
    return sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def check_category(folder: Path, name: str | None = None) -> None:
    """Check an extracted category: MVTec layout, and the paper's image counts for MVTec names.

    Raises:
        DatasetError: ``train/good`` is missing or empty, or the counts differ from the paper's.
    """
    name = name or folder.name
    n_train = _count_images(folder / "train" / "good")
    n_test = _count_images(folder / "test")
    if n_train == 0:
        raise DatasetError(f"{folder} has no images in train/good: not an MVTec AD category")
    if name in MVTEC_COUNTS and (n_train, n_test) != MVTEC_COUNTS[name]:
        raise DatasetError(
            f"{name}: {n_train} train / {n_test} test images, MVTec AD has {MVTEC_COUNTS[name]}: incomplete archive?"
        )


def extract_archive(archive: str | Path, root: str | Path, *, overwrite: bool = False) -> list[str]:
    """Extract a (tar, tar.gz, tar.xz) archive of MVTec-layout categories into ``root``.

    Every top-level folder with a ``train/`` sub-folder is a category. They are extracted into a
    temporary folder in ``root``, checked (:func:`check_category`), then each renamed into place.

    Returns:
        The category names added.

    Raises:
        DatasetError: corrupt archive, no category inside, unsafe member, failed check, or a
            category already present in ``root`` (unless ``overwrite``).
    """
    archive, root = Path(archive), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=root))
    try:
        try:
            with tarfile.open(archive, "r:*") as tar:
                # the "data" filter (Python >= 3.11.4) is a second guard on top of our own check
                safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(tmp, members=_safe_members(tar, tmp), **safe)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DatasetError(
                f"cannot extract {archive}: {exc} (corrupt or truncated archive?)"
            ) from None
        found = sorted(p for p in tmp.iterdir() if p.is_dir() and (p / "train").is_dir())
        if not found:
            raise DatasetError(
                f"{archive} contains no MVTec-layout category (<category>/train/good)"
            )
        for folder in found:
            check_category(folder)
            if (root / folder.name).exists() and not overwrite:
                raise DatasetError(
                    f"{root / folder.name} already exists: remove it or pass overwrite"
                )
        for folder in found:
            target = root / folder.name
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=".old.", dir=root))
                os.replace(target, old / folder.name)
                os.replace(folder, target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(folder, target)
        for extra in ("license.txt", "readme.txt"):
            if (tmp / extra).is_file() and not (root / extra).exists():
                os.replace(tmp / extra, root / extra)
        return [p.name for p in found]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
