"""The ``synthetic.json`` manifest, and which folders a new dataset may replace.

The manifest says who wrote a dataset and with which settings: :func:`ensure_synthetic` compares
it with the settings it wants, and overwriting is allowed only for a folder whose manifest names
this generator (or an empty folder).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from cutpaste_lib.data.mvtec import category_info
from cutpaste_lib.data.synthetic.defects import DEFECT_TYPES
from cutpaste_lib.errors import DatasetError

GENERATOR_VERSION = 2
"""Bumped whenever the drawings change, so :func:`ensure_synthetic` regenerates stale data."""

MANIFEST = "synthetic.json"
# The manifest's "generator": a dataset written here. Kept as the old module's name, so datasets
# written before this package was split keep their identity (and may still be overwritten).
_GENERATOR = "cutpaste_lib.data.synthetic"


def read_manifest(root: str | Path) -> dict | None:
    """The ``synthetic.json`` of a generated dataset, or ``None`` (not generated here, or unreadable)."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _new_manifest(*, seed: int, size: int, counts: dict, categories: Sequence[str]) -> dict:
    """The manifest of a dataset about to be written with these settings."""
    return {
        "generator": _GENERATOR,
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        "size": int(size),
        **counts,
        "categories": {
            category: {
                "kind": category_info(category).kind,
                "aligned": category_info(category).aligned,
                "defects": list(DEFECT_TYPES[category]),
            }
            for category in sorted(categories)
        },
    }


def _write_manifest(root: Path, manifest: dict) -> None:
    (root / MANIFEST).write_text(
        json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8"
    )


def _check_replaceable(out: Path) -> None:
    """Refuse to overwrite anything but a dataset written by :func:`generate_synthetic` or an empty
    folder, and never the working directory or a folder above it (``out`` may not exist yet)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise DatasetError(f"{out} is a file, not a dataset folder: refusing to replace it")
    try:
        cwd = Path.cwd().resolve()
    except OSError:  # the working directory was deleted: it cannot be ``out``
        cwd = None
    if cwd is not None and cwd.is_relative_to(out.resolve()):
        raise DatasetError(
            f"{out} is the working directory or a folder above it: refusing to delete it"
        )
    manifest = read_manifest(out)
    made_here = isinstance(manifest, dict) and manifest.get("generator") == _GENERATOR
    if not made_here and any(out.iterdir()):
        raise DatasetError(
            f"{out} is not a synthetic dataset made by cutpaste synth (no {MANIFEST} written by "
            "it): refusing to delete it; choose another folder or remove it yourself"
        )
