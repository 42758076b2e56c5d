"""Fetch MVTec AD from its official location, resumably, and extract it atomically.

MVTec AD (Bergmann et al., CVPR 2019) is distributed by MVTec Software GmbH under
CC BY-NC-SA 4.0 (non-commercial use): https://www.mvtec.com/company/research/datasets/mvtec-ad .
Where the files come from (recorded here because the share links are not on a stable API):

* the whole dataset: the archive and SHA-256 used by anomalib's ``MVTecAD`` datamodule
  (``DOWNLOAD_INFO``), size 5,264,982,680 bytes;
* one category: the per-category archives MVTec's download page linked in 2021 (``mydrive.ch``
  share 38536, also listed in several public MVTec AD READMEs). MVTec publishes no checksum for
  them, so they are checked by size (the server's ``Content-Length``) and, after extraction, by the
  image counts of the MVTec AD paper (Table 1), which must match exactly.

Downloads go to ``<root>/.downloads/<name>.part`` and resume with an HTTP ``Range`` request;
extraction happens in a temporary folder inside ``root`` and each category folder is renamed into
place only after its contents were checked, so an interrupted run never leaves a partial category.
Without network the error names the URL and explains how to place the archive by hand.

Example:
    >>> from cutpaste_lib.data.download import download_mvtec
    >>> download_mvtec("data/mvtec", category="bottle")  # doctest: +SKIP
    PosixPath('data/mvtec')
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from cutpaste_lib.data.mvtec import IMAGE_EXTENSIONS, MVTEC_CATEGORIES
from cutpaste_lib.errors import DataNotFoundError, DatasetError

MVTEC_PAGE = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
LICENSE = "CC BY-NC-SA 4.0 (non-commercial use only)"


@dataclass(frozen=True)
class Archive:
    """A downloadable file: where, and what to check (``None`` = not published)."""

    name: str
    url: str
    size: int | None = None
    sha256: str | None = None


_SHARE = "https://www.mydrive.ch/shares/38536/3830184030e49fe74747669442f0f282/download"
MVTEC_FULL = Archive(
    "mvtec_anomaly_detection.tar.xz",
    f"{_SHARE}/420938113-1629952094/mvtec_anomaly_detection.tar.xz",
    size=5_264_982_680,
    sha256="cf4313b13603bec67abb49ca959488f7eedce2a9f7795ec54446c649ac98cd3d",
)
_CATEGORY_IDS = {
    "bottle": "420937370-1629951468",
    "cable": "420937413-1629951498",
    "capsule": "420937454-1629951595",
    "carpet": "420937484-1629951672",
    "grid": "420937487-1629951814",
    "hazelnut": "420937545-1629951845",
    "leather": "420937607-1629951964",
    "metal_nut": "420937637-1629952063",
    "screw": "420938130-1629953152",
    "tile": "420938133-1629953189",
    "toothbrush": "420938134-1629953256",
    "transistor": "420938166-1629953277",
    "wood": "420938383-1629953354",
    "zipper": "420938385-1629953449",
}
MVTEC_CATEGORY_ARCHIVES: dict[str, Archive] = {
    name: Archive(f"{name}.tar.xz", f"{_SHARE}/{ident}/{name}.tar.xz")
    for name, ident in _CATEGORY_IDS.items()
}
# pill sits in a different share of the same page
MVTEC_CATEGORY_ARCHIVES["pill"] = Archive(
    "pill.tar.xz",
    "https://www.mydrive.ch/shares/43421/11a215a5749fcfb75e331ddd5f8e43ee/download/420938129-1629953099/pill.tar.xz",
)

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


def _manual_help(archive: Archive, root: Path) -> str:
    return (
        f"download that file with a browser (or the whole dataset from {MVTEC_PAGE}; licence {LICENSE}) "
        f"and extract it into {root} so that {root}/<category>/train/good exists; "
        f"then set CUTPASTE_DATA={root}"
    )


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    archive: Archive,
    dest: str | Path,
    *,
    progress: bool = False,
    timeout: float = 60.0,
    help_root: Path | None = None,
) -> Path:
    """Download ``archive.url`` to ``dest``, resuming a previous ``dest.part``; verify, then rename.

    Raises:
        DataNotFoundError: the server cannot be reached (offline); the message names the URL.
        DatasetError: size or checksum mismatch (the partial file is deleted so a retry starts clean).
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "cutpaste-course"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    help_text = _manual_help(archive, help_root or dest.parent)
    try:
        response = urlopen(Request(archive.url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and archive.size is not None and offset == archive.size:
            response = None  # the .part is already complete
        else:
            raise DataNotFoundError(
                f"cannot download {archive.url}: HTTP {exc.code}; {help_text}"
            ) from None
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataNotFoundError(f"cannot reach {archive.url} ({reason}); {help_text}") from None

    if response is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)  # only once the server answered
        with response:
            status = getattr(response, "status", 200)
            if offset and status != 206:  # the server ignored Range: start over
                offset = 0
            length = response.headers.get("Content-Length")
            expected = (
                archive.size
                if archive.size is not None
                else (int(length) + offset if length else None)
            )
            bar = None
            if progress:
                from tqdm.auto import tqdm

                bar = tqdm(
                    total=expected, initial=offset, unit="B", unit_scale=True, desc=archive.name
                )
            try:
                with open(part, "ab" if offset else "wb") as f:
                    while block := response.read(1 << 20):
                        f.write(block)
                        if bar is not None:
                            bar.update(len(block))
            except OSError as exc:  # connection dropped: keep the .part for the next attempt
                raise DataNotFoundError(
                    f"download of {archive.url} interrupted ({exc}); run the command again to resume"
                ) from None
            finally:
                if bar is not None:
                    bar.close()
    else:
        expected = archive.size

    size = part.stat().st_size
    if expected is not None and size != expected:
        part.unlink()
        raise DatasetError(
            f"{archive.name}: got {size} bytes, expected {expected}; the partial file was deleted, retry"
        )
    if archive.sha256 is not None:
        got = sha256_file(part)
        if got != archive.sha256:
            part.unlink()
            raise DatasetError(
                f"{archive.name}: SHA-256 {got} does not match {archive.sha256}; deleted, retry"
            )
    os.replace(part, dest)
    return dest


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


def download_mvtec(
    root: str | Path,
    category: str | None = None,
    *,
    progress: bool = True,
    keep_archive: bool = False,
    overwrite: bool = False,
) -> Path:
    """Download MVTec AD (one category, or all 15 in one 5.3 GB archive) into ``root``.

    Returns:
        ``root``, ready for ``CUTPASTE_DATA``.

    Raises:
        ValueError: unknown category.
        DataNotFoundError: offline (the message says where to get the archive and where to put it).
        DatasetError: size/checksum/count mismatch or a corrupt archive.
    """
    root = Path(root).expanduser()
    if category is not None and category not in MVTEC_CATEGORY_ARCHIVES:
        raise ValueError(
            f"unknown MVTec AD category {category!r}; choose from {', '.join(MVTEC_CATEGORIES)}"
        )
    archive = MVTEC_FULL if category is None else MVTEC_CATEGORY_ARCHIVES[category]
    wanted = list(MVTEC_CATEGORIES) if category is None else [category]
    if not overwrite and all((root / name).is_dir() for name in wanted):
        for name in wanted:  # already there: check it instead of downloading again
            check_category(root / name)
        return root
    local = download_file(
        archive, root / ".downloads" / archive.name, progress=progress, help_root=root
    )
    extract_archive(local, root, overwrite=overwrite)
    if not keep_archive:
        local.unlink()
    return root
