"""Atomic writes: a crash never leaves a half-written file that a resume would trust."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp_path)`` then rename ``tmp_path`` onto ``path`` (same folder, same filesystem)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        # mkstemp makes the file private (0600); give it the mode open() would have (0666 - umask)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save_torch(path: str | Path, obj: Any) -> Path:
    import torch

    return atomic_write(path, lambda p: torch.save(obj, p))


def remove_empty_folders(folders: Sequence[Path]) -> None:
    """Undo the folders a failed command created: remove ``folders`` (deepest first) while they
    are empty, stopping at the first that is not (neither it nor those above it are ours)."""
    for folder in folders:
        try:
            folder.rmdir()
        except FileNotFoundError:  # never created (the failure came first)
            continue
        except OSError:  # not empty
            return
