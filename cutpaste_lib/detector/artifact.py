"""The detector file: plain data only (tensors, numbers, strings), a format version and a checksum.

A detector file is one ``torch.save`` of a dict. It is read with ``torch.load(weights_only=True)``,
which never runs code from the file: a pickle holding Python objects is refused before anything
is unpickled. On top of that the file carries a SHA-256 of its own content (every tensor's dtype,
shape and bytes, and every other value), checked on load, so a file edited or damaged after it was
written is refused too, and a file of another kind (a training checkpoint, a state dict) or of
another format version gets an error that says what it is.

The format version is the compatibility contract: a file of another format version is refused.
The library version that wrote the file is recorded; a different one only warns (the format, not
the release number, decides what can be read).
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cutpaste_lib import __version__, io
from cutpaste_lib.errors import CheckpointError
from cutpaste_lib.model import load_error_message

DETECTOR_FORMAT = "cutpaste-detector"
DETECTOR_VERSION = 1
REQUIRED_KEYS = (
    "kind",
    "model_config",
    "model",
    "density",
    "image_size",
    "train_scores",
    "threshold",
)


class DetectorFileError(CheckpointError):
    """A detector file is missing, corrupt, modified, of another kind or of another format version."""


def _update(h: Any, obj: Any) -> None:
    """Feed ``obj`` to the hash in a canonical order (dict keys sorted, tensors by dtype/shape/bytes)."""
    if isinstance(obj, Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for key in sorted(obj, key=str):
            h.update(json.dumps(str(key)).encode())
            _update(h, obj[key])
        h.update(b"}")
    elif isinstance(obj, list | tuple):
        h.update(b"[")
        for item in obj:
            _update(h, item)
        h.update(b"]")
    else:
        h.update(json.dumps(obj, sort_keys=True).encode())


def content_digest(payload: dict[str, Any]) -> str:
    """SHA-256 (hex) of everything in ``payload`` except its ``digest`` entry."""
    h = hashlib.sha256()
    _update(h, {k: v for k, v in payload.items() if k != "digest"})
    return h.hexdigest()


def write_detector(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (plain data) with the format marker, versions and checksum, atomically."""
    missing = [k for k in REQUIRED_KEYS if k not in payload]
    if missing:
        raise ValueError(f"detector payload is missing {missing}")
    data = {
        **payload,
        "format": DETECTOR_FORMAT,
        "version": DETECTOR_VERSION,
        "library_version": __version__,
    }
    data["digest"] = content_digest(data)
    return io.save_torch(path, data)


def read_detector(path: str | Path) -> dict[str, Any]:
    """Load and check a detector file (CPU tensors). Nothing from the file is executed.

    Raises:
        DetectorFileError: missing, unreadable, pickled objects, another kind of file, another
            format version, incomplete, or modified since it was written (checksum).
    """
    path = Path(path)
    if not path.is_file():
        raise DetectorFileError(f"no detector at {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickled code, truncated, text ...
        raise DetectorFileError(load_error_message(path, exc, "detector")) from exc
    if not isinstance(data, dict) or data.get("format") != DETECTOR_FORMAT:
        kind = data.get("format") if isinstance(data, dict) else None
        what = f"a {kind!r} file" if kind else "not a CutPaste detector"
        raise DetectorFileError(
            f"{path} is {what}, not a detector; make one with `cutpaste evaluate --save-detector "
            "FILE` (image model) or `cutpaste localize --save-detector FILE` (patch model)"
        )
    if data.get("version") != DETECTOR_VERSION:
        raise DetectorFileError(
            f"{path} is a detector of format version {data.get('version')}; this library "
            f"({__version__}) reads version {DETECTOR_VERSION}: save it again with this version"
        )
    missing = [k for k in (*REQUIRED_KEYS, "digest") if k not in data]
    if missing:
        raise DetectorFileError(f"{path} is an incomplete detector: no {', '.join(missing)}")
    if content_digest(data) != data["digest"]:
        raise DetectorFileError(
            f"{path} was modified or damaged after it was written (its checksum does not match); "
            "refusing to use it: save the detector again"
        )
    if data.get("library_version") != __version__:
        warnings.warn(
            f"{path} was written by cutpaste-course {data.get('library_version')}, this is "
            f"{__version__} (same detector format {DETECTOR_VERSION}: reading it)",
            stacklevel=2,
        )
    return data
