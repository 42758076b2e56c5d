"""One finished job's results row: its metrics (checked), the grid's settings and where it ran.

The same columns, read back from a table's rows, say how its numbers were obtained
(:func:`provenance`).
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from cutpaste_lib import config
from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.reproduce.data_kind import DATA_KIND_TEXT, category_kind
from cutpaste_lib.reproduce.grid import GridSettings, JobSpec
from cutpaste_lib.reproduce.results import SETTING_COLUMNS


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout (``+dirty`` if tracked files changed), else ``unknown``."""
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + "+dirty" if dirty else head) or "unknown"


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=config.REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout.strip()


def device_name(device: str) -> str:
    """A human name for the hardware behind ``device`` (GPU model, or the CPU architecture)."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev.index if dev.index is not None else 0)
    return f"cpu ({platform.machine() or 'unknown'})"


def fixed_columns(settings: GridSettings, kind_of_data: str) -> dict:
    """The setting columns shared by every row of a grid run (:data:`SETTING_COLUMNS`)."""
    columns = {c: getattr(settings, c) for c in SETTING_COLUMNS if c != "data_kind"}
    return {**columns, "data_kind": kind_of_data}


def make_row(
    spec: JobSpec,
    result: dict,
    *,
    fixed: dict,
    seconds: float,
    device: str,
    commit: str,
    csv_dir: Path,
) -> dict:
    """The CSV row of a finished job; its score-file path becomes relative to ``csv_dir``.

    Raises:
        CutPasteError: the job returned no image AUROC, or a metric outside [0, 1].
    """
    job = spec.job
    if "image_auroc" not in result:
        raise CutPasteError(f"job {job.key} returned no 'image_auroc'")

    def fraction(name: str) -> float | None:
        value = result.get(name)
        if value is None:
            return None
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise CutPasteError(
                f"job {job.key} returned {name}={value}: expected a fraction in [0, 1]"
            )
        return value

    scores = result.get("scores")
    if scores is not None:
        scores = os.path.relpath(Path(scores).resolve(), csv_dir.resolve())
    return {
        "category": job.category,
        "variant": job.variant,
        "mode": job.mode,
        "seed": job.seed,
        "image_auroc": fraction("image_auroc"),
        "pixel_auroc": fraction("pixel_auroc"),
        "aupro": fraction("aupro"),
        **fixed,
        "kind": category_kind(job.category),
        "scores": scores,
        "seconds": round(float(seconds), 3),
        "device": device_name(device),
        "commit": commit,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def provenance(rows: Sequence[dict]) -> dict[str, str]:
    """How the numbers were obtained, from the rows themselves (one protocol per table)."""
    if not rows:
        return {}
    r = rows[0]
    seeds = sorted({x["seed"] for x in rows})
    dates = sorted(x["finished_at"] for x in rows if x["finished_at"])
    return {
        "model": f"{r['encoder']}, {'ImageNet-pretrained' if r['pretrained'] else 'from scratch'}",
        "steps": str(r["steps"]),
        "batch": f"{r['batch_size']} original images per step",
        "image size": f"{r['image_size']} px (patch models: {r['patch_size']} px crops, dense "
        f"{r['dense_patch']} px patches, stride {r['dense_stride']})",
        "data": DATA_KIND_TEXT.get(r["data_kind"], r["data_kind"]),
        "seeds": ", ".join(map(str, seeds)),
        "commit": ", ".join(sorted({x["commit"] or "unknown" for x in rows})),
        "date": f"{dates[0][:10]} to {dates[-1][:10]}"
        if dates and dates[0][:10] != dates[-1][:10]
        else (dates[0][:10] if dates else "unknown"),
        "device": ", ".join(sorted({x["device"] or "unknown" for x in rows})),
    }
