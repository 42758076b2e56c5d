"""The results CSV: its columns, typed reading, and crash-safe writing under a lock.

Every write replaces the whole file: it goes to a temporary name, is fsync-ed and renamed, so a
crash or a kill at any moment leaves the previous complete file.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cutpaste_lib.errors import CutPasteError, DataNotFoundError
from cutpaste_lib.io import atomic_write
from cutpaste_lib.reproduce.grid import INT_SETTINGS

try:
    import fcntl
except ImportError:  # Windows: one writer per folder is the user's responsibility
    fcntl = None

KEY_COLUMNS = ("category", "variant", "mode", "seed")
RESULT_COLUMNS = ("image_auroc", "pixel_auroc", "aupro")
SETTING_COLUMNS = ("encoder", "pretrained", *INT_SETTINGS, "data_kind")
INFO_COLUMNS = ("kind", "scores", "seconds", "device", "commit", "finished_at")
COLUMNS = KEY_COLUMNS + RESULT_COLUMNS + SETTING_COLUMNS + INFO_COLUMNS
"""The results CSV header, in order."""

_INT_COLUMNS = {"seed", *INT_SETTINGS}
_FLOAT_COLUMNS = {"image_auroc", "pixel_auroc", "aupro", "seconds"}
_OPTIONAL_COLUMNS = {"pixel_auroc", "aupro", "scores", "patch_size", "dense_patch", "dense_stride"}


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact round-trip: duplicates compare equal after a merge
    return str(value)


def _parse(column: str, text: str, where: str) -> Any:
    if text == "":
        if column in _OPTIONAL_COLUMNS or column in INFO_COLUMNS:
            return None
        raise CutPasteError(f"{where}: empty value in required column {column!r}")
    try:
        if column in _INT_COLUMNS:
            return int(text)
        if column in _FLOAT_COLUMNS:
            return float(text)
    except ValueError:
        raise CutPasteError(f"{where}: column {column!r} has a non-number {text!r}") from None
    if column == "pretrained":
        if text not in ("true", "false"):
            raise CutPasteError(f"{where}: column 'pretrained' must be true/false, got {text!r}")
        return text == "true"
    return text


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results CSV as typed dicts (raises a clear error on a foreign or damaged file)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"results CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise CutPasteError(
                    f"{path} is not a reproduce results CSV: missing columns {missing}"
                )
            rows = []
            for line, raw in enumerate(reader, start=2):
                if None in raw or any(v is None for v in raw.values()):
                    raise CutPasteError(f"{path}:{line}: wrong number of fields")
                rows.append({c: _parse(c, raw[c], f"{path}:{line}") for c in COLUMNS})
    except UnicodeDecodeError as exc:  # a binary file, or text in another encoding
        raise CutPasteError(
            f"{path} is not a reproduce results CSV: not UTF-8 text (byte {exc.start})"
        ) from None
    except csv.Error as exc:
        raise CutPasteError(f"{path} is not a reproduce results CSV: {exc}") from None
    return rows


def write_rows(path: Path, rows: Sequence[dict]) -> None:
    """Replace ``path`` with a CSV of ``rows`` (temporary file, fsync, rename, fsync the folder)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow([_format(row.get(c)) for c in COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())  # the rename must never publish data still in the page cache

    atomic_write(path, write)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock next to ``path`` (POSIX), so two writers never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as fh:
        if fcntl is None:
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_result(path: str | Path, row: dict) -> bool:
    """Add one finished job's row: whole new file to a temporary name, fsync, rename, under a lock.

    Returns ``False`` (and writes nothing) when the job's key is already in the file.
    """
    path = Path(path)
    with locked(path):
        rows = read_results(path) if path.exists() else []
        key = row_key(row)
        if any(row_key(r) == key for r in rows):
            return False
        write_rows(path, rows + [row])
    return True


def row_key(row: dict) -> tuple:
    return tuple(row[c] for c in KEY_COLUMNS)


def settings_of(row: dict) -> tuple:
    """The row's protocol: the values of :data:`SETTING_COLUMNS`."""
    return tuple(row[c] for c in SETTING_COLUMNS)


def describe_settings(row: dict) -> str:
    return ", ".join(f"{c}={row[c]}" for c in SETTING_COLUMNS)


def check_consistent(rows: Sequence[dict], where: str) -> None:
    """All rows must come from one set of settings: a table states one protocol."""
    if not rows:
        return
    first = rows[0]
    for r in rows[1:]:
        if settings_of(r) != settings_of(first):
            raise CutPasteError(
                f"{where} mixes runs with different settings: ({describe_settings(first)}) vs "
                f"({describe_settings(r)}); keep each protocol in its own output folder"
            )
