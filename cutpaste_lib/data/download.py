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
extraction (:mod:`.extract`) happens in a temporary folder inside ``root`` and each category folder
is renamed into place only after its contents were checked, so an interrupted run never leaves a
partial category.
Without network the error names the URL and explains how to place the archive by hand.

Example:
    >>> from cutpaste_lib.data.download import download_mvtec
    >>> download_mvtec("data/mvtec", category="bottle")  # doctest: +SKIP
    PosixPath('data/mvtec')
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from cutpaste_lib.data.extract import MVTEC_COUNTS, check_category, extract_archive
from cutpaste_lib.data.mvtec import MVTEC_CATEGORIES
from cutpaste_lib.errors import DataNotFoundError, DatasetError

__all__ = [
    "LICENSE",
    "MVTEC_CATEGORY_ARCHIVES",
    "MVTEC_COUNTS",
    "MVTEC_FULL",
    "MVTEC_PAGE",
    "Archive",
    "check_category",
    "download_file",
    "download_mvtec",
    "extract_archive",
    "sha256_file",
]

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
