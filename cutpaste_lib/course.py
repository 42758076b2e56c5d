"""Course models: one 3-way model per category and kind, trained once and shared.

Notebooks 02-05 and ``cutpaste demo`` ask :func:`course_model` for the model of a category
("image": whole images; "patch": crops, for localization) under the current protocol
(``config.settings()``). The first call trains it with a progress bar and stores it; later calls,
from any notebook, load it. The folder name carries a digest of everything the model depends on
(:func:`model_key`): the training settings, the device type, the exact training images and the
library version, so a stale model is never reused. An entry that cannot be read (a crash while
writing it, a damaged file) is reported and trained again. Entries are written to a temporary
folder and renamed into place, so a half-written model is never found.

Where: ``CUTPASTE_MODELS`` if set, else ``runs/course/`` in the checkout (git-ignored).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch

import cutpaste_lib
from cutpaste_lib import config, io
from cutpaste_lib.data import ImageCache
from cutpaste_lib.errors import CheckpointError, CutPasteError
from cutpaste_lib.model import CutPasteModel
from cutpaste_lib.train import RESUME_KEYS, TrainConfig, load_checkpoint, train

KINDS = ("image", "patch")
COURSE_FORMAT = "cutpaste-course-model"
CONFIRM_ENV = "CUTPASTE_CONFIRM_LONG"
LONG_CPU_SECONDS = 3 * 3600.0
"""Training estimated above this on a CPU needs ``confirm=True`` (or ``CUTPASTE_CONFIRM_LONG=1``):
the laptop protocol's models take minutes, the paper's weeks, so the line falls far from both."""


class LongTrainingError(CutPasteError, RuntimeError):
    """Training would take hours on this device and nobody confirmed it."""


class CourseModel(NamedTuple):
    """A trained course model and where it came from."""

    model: CutPasteModel
    config: TrainConfig
    folder: Path
    trained_now: bool
    train_seconds: float
    history: dict[str, list]


def models_root() -> Path:
    """``CUTPASTE_MODELS``, else ``runs/course`` in the checkout."""
    env = os.environ.get("CUTPASTE_MODELS")
    return Path(env).expanduser() if env else config.REPO_ROOT / "runs" / "course"


def course_config(
    settings: config.Settings, kind: str = "image", *, device: str = "auto", seed: int = 0
) -> TrainConfig:
    """The :class:`TrainConfig` of the 3-way course model of ``kind`` under ``settings``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    patch = kind == "patch"
    steps = settings.patch_steps if patch else settings.steps
    return TrainConfig(
        variant="3way",
        encoder=settings.encoder,
        steps=steps,
        batch_size=settings.patch_batch_size if patch else settings.batch_size,
        image_size=settings.image_size,
        patch_size=settings.patch_size if patch else None,
        lr=settings.lr,
        optimizer=settings.optimizer,
        head_depth=settings.head_depth,
        scar_reference=settings.scar_reference,
        seed=seed,
        device=device,
        log_every=max(1, min(50, steps // 10)),
        checkpoint_every=steps,
    )


def data_fingerprint(cache: ImageCache) -> str:
    """SHA-256 of the category, the image size and every byte of the training images."""
    h = hashlib.sha256(f"{cache.category}|{tuple(cache.image_size)}|{len(cache)}".encode())
    h.update(cache.images.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def model_key(train_config: TrainConfig, cache: ImageCache) -> dict[str, Any]:
    """Everything a course model depends on; any change gives another digest."""
    fields = dataclasses.asdict(train_config)
    return {
        "settings": {k: fields[k] for k in sorted({*RESUME_KEYS, "deterministic"})},
        "device_type": config.resolve_device(train_config.device).type,
        "data": data_fingerprint(cache),
        "library": cutpaste_lib.__version__,
    }


def key_digest(key: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def estimate_seconds(
    train_config: TrainConfig, cache: ImageCache, *, probe_steps: int = 2
) -> float:
    """Training time on this machine, measured: runs of 1 and of ``1 + probe_steps`` steps of up to
    4 originals at the run's resolution are timed (after a warm-up run) and their difference,
    which cancels the fixed cost of building the model, is scaled to the batch and step count. An
    order of magnitude, not a promise: other jobs on the machine and batch size move it."""
    probe_batch = min(train_config.batch_size, 4)
    probe = dataclasses.replace(
        train_config,
        steps=probe_steps + 1,
        batch_size=probe_batch,
        log_every=probe_steps + 1,
        checkpoint_every=probe_steps + 1,
    )
    images = cache.subset(range(min(len(cache), 8)))

    def run(steps: int) -> float:
        start = time.perf_counter()
        train(probe, images, progress=False, stop_at_step=steps)
        return time.perf_counter() - start

    run(1)  # warm-up: first allocations, lazy initialisation
    per_step = max(run(1 + probe_steps) - run(1), 1e-6) / probe_steps
    return per_step * train_config.batch_size / probe_batch * train_config.steps


def format_duration(seconds: float) -> str:
    """``"3 min"``, ``"5.2 h"`` or ``"21.4 days"``."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{max(seconds / 60, 1):.0f} min"


def _confirmed(confirm: bool | None) -> bool:
    if confirm is not None:
        return confirm
    return os.environ.get(CONFIRM_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _load(folder: Path, key: dict[str, Any], device: torch.device) -> CourseModel:
    """The stored entry; ``CheckpointError`` when it is damaged or is not the one asked for."""
    try:
        meta = json.loads((folder / "course.json").read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / 'course.json'} is unreadable ({exc})") from exc
    if meta.get("format") != COURSE_FORMAT or meta.get("key") != key:
        raise CheckpointError(f"{folder / 'course.json'} does not describe this model")
    model, _ = load_checkpoint(folder / "checkpoint.pt", device=device)
    cfg = TrainConfig(**meta["config"])
    return CourseModel(model, cfg, folder, False, float(meta["train_seconds"]), meta["history"])


def course_model(
    cache: ImageCache,
    kind: str = "image",
    *,
    settings: config.Settings | None = None,
    device: str | torch.device | None = None,
    root: str | Path | None = None,
    progress: bool = True,
    confirm: bool | None = None,
    echo: Callable[[str], Any] = print,
) -> CourseModel:
    """The course model of ``cache``'s category: loaded when stored, else trained and stored.

    Args:
        cache: the category's training images at ``settings.image_size``.
        kind: "image" (whole-image model) or "patch" (trained on ``settings.patch_size`` crops).
        settings: the protocol (default ``config.settings()``: laptop unless asked otherwise).
        device: where to train and put the model (default: CUDA when available).
        root: where models are stored (default :func:`models_root`).
        progress: tqdm bar while training.
        confirm: start a training estimated above 3 hours on a CPU (default: ``CUTPASTE_CONFIRM_LONG``).
        echo: where the one-line messages go (``print``).

    Raises:
        LongTrainingError: the run would take more than 3 hours on a CPU and is not confirmed; the
            message gives the estimate measured on this machine.
    """
    settings = settings or config.settings()
    dev = config.resolve_device(device)
    train_config = course_config(settings, kind, device=str(dev))
    key = model_key(train_config, cache)
    root = Path(root) if root is not None else models_root()
    folder = root / f"{cache.category}-{kind}-{settings.name}-{key_digest(key)}"
    if folder.exists():
        try:
            return _load(folder, key, dev)
        except CheckpointError as exc:
            echo(f"course model {folder} is damaged ({exc}); training it again")
            shutil.rmtree(folder)
    if dev.type == "cpu":
        seconds = estimate_seconds(train_config, cache)
        if seconds > LONG_CPU_SECONDS and not _confirmed(confirm):
            raise LongTrainingError(
                f"the {settings.name} protocol's {kind} model ({train_config.steps:,} steps at "
                f"{train_config.image_size} px) would take about {format_duration(seconds)} "
                f"on this CPU, measured just now. Use the laptop "
                f"protocol (CUTPASTE_PROTOCOL=laptop), a GPU, or confirm=True / "
                f"{CONFIRM_ENV}=1 to start anyway."
            )
        echo(
            f"training the {settings.name} {kind} model of {cache.category} "
            f"(about {format_duration(seconds)} here); stored in {folder} for the next notebook"
        )
    else:
        echo(f"training the {settings.name} {kind} model of {cache.category} on {dev}")
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    start = time.perf_counter()
    result = train(train_config, cache, out_dir=partial, progress=progress)
    seconds = time.perf_counter() - start
    meta = {
        "format": COURSE_FORMAT,
        "key": key,
        "config": dataclasses.asdict(train_config),
        "train_seconds": seconds,
        "history": result.history,
    }
    io.write_json(partial / "course.json", meta)
    try:
        os.replace(partial, folder)
    except OSError:  # another process stored the same model meanwhile: keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    echo(f"trained in {seconds:.0f} s")
    return CourseModel(result.model, train_config, folder, True, seconds, result.history)


def untrained_model(settings: config.Settings | None = None, *, seed: int = 0) -> CutPasteModel:
    """The baseline every notebook compares with: the same architecture, randomly initialised."""
    settings = settings or config.settings()
    torch.manual_seed(seed)
    return CutPasteModel(
        encoder=settings.encoder, num_classes=3, head_depth=settings.head_depth
    ).eval()
