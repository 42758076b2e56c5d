"""Read a state-dict file safely (``weights_only=True``) and explain in one line why it failed.

Used for encoder weights files (:func:`cutpaste_lib.model.build_encoder`) and, through
:func:`load_error_message`, for training checkpoints.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from cutpaste_lib.errors import CheckpointError


def load_error_message(path: str | Path, exc: BaseException, what: str) -> str:
    """One short line for a failed ``torch.load(path, weights_only=True)``.

    torch's own text suggests ``weights_only=False``, which would run code from the file and does
    not help with a corrupt file anyway: it is not passed on.
    """
    if isinstance(exc, OSError):  # permissions, a folder, ...: the system's reason
        return f"cannot read {what} {path}: {exc.strerror or exc}"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if found:
        return (
            f"cannot read {what} {path}: it holds pickled Python objects ({found.group(1)}), not "
            "a tensor-only file; save plain data, e.g. torch.save(model.state_dict(), FILE)"
        )
    return (
        f"cannot read {what} {path}: not a PyTorch checkpoint/state dict "
        "(file is corrupt or of another kind)"
    )


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (a plain state dict, or one under ``state_dict``/``model``)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code, truncated file, text...
        raise CheckpointError(load_error_message(path, exc, "weights file")) from exc
    if isinstance(obj, dict) and {"model", "optimizer", "config"} <= obj.keys():
        raise CheckpointError(
            f"{path} is a cutpaste training checkpoint (has model/optimizer/config), not encoder "
            "weights: continue it with `cutpaste train --resume` (same --out) or score it with "
            f"`cutpaste evaluate --checkpoint {path}`"
        )
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors")
    return obj
