"""Writing a whole dataset atomically: :func:`generate_synthetic`.

The images are drawn into a temporary sibling folder that is renamed onto the output only when
complete, so an interrupted run leaves no partial dataset; an old dataset is moved aside first and
deleted only after the swap, and put back if the swap fails.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from cutpaste_lib.data.synthetic.manifest import _check_replaceable, _new_manifest, _write_manifest
from cutpaste_lib.data.synthetic.plan import _check_categories, _Job, _plan_dataset, _resolve_counts
from cutpaste_lib.data.synthetic.sample import render_sample
from cutpaste_lib.errors import DatasetError
from cutpaste_lib.io import remove_empty_folders


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG", compress_level=1)


def _run_job(job: _Job, size: int) -> None:
    """Draw one image (and its mask, for a defect) and write the PNG files."""
    category, defect, entropy, image_path, mask_path = job
    image, mask = render_sample(category, defect, size=size, seed=entropy)
    _save_png(image_path, image)
    if mask_path is not None:
        _save_png(mask_path, mask.astype(np.uint8) * 255)


def _make_temporary(out: Path) -> tuple[Path, list[Path]]:
    """Create ``out``'s parent folders and a temporary sibling of ``out``.

    Returns the temporary folder and the parent folders that did not exist before (to remove them
    again on failure). An ``OSError`` names ``out``, not the random temporary name.
    """
    created = [p for p in (out.parent, *out.parent.parents) if not p.exists()]
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    except OSError as exc:
        remove_empty_folders(created)
        raise OSError(exc.errno, exc.strerror, str(out)) from exc
    return tmp, created


def _draw_images(jobs: list[_Job], *, size: int, progress: bool) -> None:
    """Run the jobs on a few threads; on any error, stop the queued ones and re-raise.

    numpy's FFTs and zlib release the GIL, so threads overlap; each image has its own random
    stream, so the files do not depend on the order in which threads finish.
    """
    pool = ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1))
    try:
        done = pool.map(lambda job: _run_job(job, size), jobs)
        if progress:
            done = tqdm(done, total=len(jobs), desc="synthetic images", unit="img")
        for _ in done:
            pass
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)  # stop queued images before cleaning up
        raise
    pool.shutdown(wait=True)


def _swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished ``tmp`` onto ``out``; an old ``out`` is deleted only after the swap."""
    if not out.exists():
        os.replace(tmp, out)
        return
    trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    try:
        os.replace(out, trash / "old")
    except BaseException:
        trash.rmdir()
        raise
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(trash / "old", out)  # put the old dataset back
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


def generate_synthetic(
    out: str | Path,
    *,
    categories: Sequence[str] | None = None,
    size: int = 256,
    n_train: int = 120,
    n_test_good: int | None = None,
    n_test_defect: int | None = None,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write the synthetic dataset in MVTec layout under ``out`` and return ``out``.

    Everything is written into a temporary sibling folder that is renamed to ``out`` only when
    complete, so an interrupted run leaves no partial dataset. Each image's random stream depends
    only on (seed, category, split, defect, index): adding a category does not change the others.

    Args:
        out: dataset root to create.
        categories: subset of :data:`SYNTHETIC_CATEGORIES` (default: all).
        size: image side in pixels (MVTec images are 700-1024 px; the paper resizes to 256).
        n_train: defect-free training images per category.
        n_test_good: defect-free test images (default: ``default_test_counts(n_train)[0]``).
        n_test_defect: test images per defect type (default: ``default_test_counts(n_train)[1]``).
        seed: base seed; the same seed gives byte-identical files.
        overwrite: replace an existing ``out`` (otherwise an existing folder is an error). Only
            a synthetic dataset written here (it has a ``synthetic.json`` manifest) or an empty
            folder is replaced, never any other folder, the working directory or a parent of it.
        progress: show a tqdm bar.

    Raises:
        DatasetError: ``out`` exists and ``overwrite`` is False, ``out`` may not be replaced
            (see ``overwrite``), or an argument is invalid.
        OSError: ``out`` cannot be created (no permission, read-only or missing file system);
            nothing is left behind, not even the parent folders created for it.
    """
    # 1. check the arguments and that ``out`` may be written, before touching the disk
    out = Path(out).expanduser()
    names = _check_categories(categories)
    counts = _resolve_counts(n_train=n_train, n_test_good=n_test_good, n_test_defect=n_test_defect)
    if size < 16:
        raise DatasetError(f"size must be at least 16 pixels, got {size}")
    if out.exists() and not overwrite:
        raise DatasetError(
            f"{out} already exists: choose another folder or pass overwrite=True (--overwrite)"
        )
    _check_replaceable(out)
    # 2. draw everything into a temporary folder, 3. swap it in; on failure leave nothing behind
    tmp, created = _make_temporary(out)
    ok = False
    try:
        jobs = _plan_dataset(tmp, names, counts, int(seed))
        _draw_images(jobs, size=int(size), progress=progress)
        manifest = _new_manifest(seed=seed, size=size, counts=counts, categories=names)
        _write_manifest(tmp, manifest)
        _check_replaceable(out)  # again: the folder may have changed while the images were drawn
        _swap_in(tmp, out)
        ok = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        if not ok:
            remove_empty_folders(created)
    return out
