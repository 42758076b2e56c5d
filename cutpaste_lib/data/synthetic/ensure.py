""":func:`ensure_synthetic`: a dataset root for the notebooks, generated on first use."""

from __future__ import annotations

import os
from pathlib import Path

from cutpaste_lib import config
from cutpaste_lib.data.mvtec import SYNTHETIC_CATEGORIES, list_categories
from cutpaste_lib.data.synthetic.manifest import GENERATOR_VERSION, read_manifest
from cutpaste_lib.data.synthetic.plan import default_test_counts
from cutpaste_lib.data.synthetic.writer import generate_synthetic
from cutpaste_lib.errors import DataNotFoundError, DatasetError


def _user_data_root() -> Path:
    """The folder ``CUTPASTE_DATA`` names; ``DataNotFoundError`` if it is missing or empty."""
    user_root = config.data_root()
    if not list_categories(user_root):  # raises DataNotFoundError when the folder is missing
        raise DataNotFoundError(
            f"CUTPASTE_DATA={user_root} contains no category folder (<category>/train/good)"
        )
    return user_root


def _usable_as_is(root: Path, wanted: dict) -> bool:
    """Whether ``root`` may be used without generating: its manifest has exactly the ``wanted``
    settings and all categories, or it has no manifest but holds categories (someone's own data).

    Raises ``DatasetError`` for a non-empty folder with neither: it is never overwritten."""
    manifest = read_manifest(root)
    if manifest is not None:
        current = {k: manifest.get(k) for k in wanted}
        categories = sorted(manifest.get("categories", {}))
        return current == wanted and categories == sorted(SYNTHETIC_CATEGORIES)
    if root.exists() and any(root.iterdir()):
        if list_categories(root):
            return True
        raise DatasetError(
            f"{root} exists, is not empty and holds no dataset: remove it or pick another root"
        )
    return False


def ensure_synthetic(root: str | Path | None = None, *, protocol_name: str | None = None) -> Path:
    """Return a dataset root, generating the synthetic set first when it is missing or stale.

    * ``CUTPASTE_DATA`` set (and ``root`` not given): that folder is used as is (real MVTec or your
      own data); it must exist and contain at least one category.
    * Otherwise ``root`` (default: the protocol's folder, ``config.synthetic_folder``, e.g.
      ``data/synthetic_128px_120``) is generated with the sizes of
      ``config.settings(protocol_name)`` unless a manifest with exactly those settings is
      already there. A folder without a manifest is never
      overwritten: if it holds categories it is used as is.

    Raises:
        DataNotFoundError: ``CUTPASTE_DATA`` points to a missing or empty folder.
    """
    if root is None and os.environ.get("CUTPASTE_DATA"):
        return _user_data_root()
    s = config.settings(protocol_name)
    root = Path(root if root is not None else config.synthetic_folder(s)).expanduser()
    n_test_good, n_test_defect = default_test_counts(s.synth_train)
    wanted = {
        "version": GENERATOR_VERSION,
        "seed": 0,
        "size": s.synth_size,
        "n_train": s.synth_train,
        "n_test_good": n_test_good,
        "n_test_defect": n_test_defect,
    }
    if _usable_as_is(root, wanted):
        return root
    return generate_synthetic(
        root,
        size=s.synth_size,
        n_train=s.synth_train,
        n_test_good=n_test_good,
        n_test_defect=n_test_defect,
        seed=0,
        overwrite=True,
    )
