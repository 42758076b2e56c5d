""":func:`train`: prepare the run, restore a checkpoint, then the step loop with its log points.

The phases, in order: check the inputs (:func:`check_cache`, the out dir), enter
:func:`~cutpaste_lib.train.determinism.deterministic_mode` and seed, read the checkpoint to
resume (:func:`_resume_state`), build the model, optimizer and random streams and restore them
(:func:`_prepare`), then :func:`_run_steps` with a :class:`~cutpaste_lib.train.logger.TrainLogger`
and a :class:`~cutpaste_lib.train.checkpointer.Checkpointer`, under
:func:`~cutpaste_lib.train.signals.stop_requests`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from cutpaste_lib.augment import ProxyCompiler
from cutpaste_lib.config import resolve_device
from cutpaste_lib.data import ImageCache
from cutpaste_lib.model import CutPasteModel, build_model
from cutpaste_lib.precision import compute_precision
from cutpaste_lib.train.checkpoint import (
    check_out_dir,
    check_resume,
    read_checkpoint,
    restore_training_state,
)
from cutpaste_lib.train.checkpointer import Checkpointer
from cutpaste_lib.train.config import HISTORY_KEYS, TrainConfig, TrainingInterrupted, TrainResult
from cutpaste_lib.train.determinism import deterministic_mode, seed_everything
from cutpaste_lib.train.logger import TrainLogger
from cutpaste_lib.train.schedule import apply_phase, lr_schedule
from cutpaste_lib.train.signals import stop_requests
from cutpaste_lib.train.step import compile_model, proxy_step


class _Run(NamedTuple):
    """What the step loop works on, built (and restored) by :func:`_prepare`."""

    model: CutPasteModel
    model_fn: Callable[..., Any]  # the model, or its compiled version
    compiler: ProxyCompiler | None  # the compiled augmentation (config.compile), or None
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the augmentation stream (on the CPU)
    images: torch.Tensor  # the uint8 cache on the training device
    history: dict[str, list]
    start: int  # updates already done


def train(
    config: TrainConfig,
    cache: ImageCache,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    stop_at_step: int | None = None,
) -> TrainResult:
    """Train a :class:`CutPasteModel` on the proxy task over the images of ``cache``.

    Args:
        config: the run's settings (:class:`TrainConfig`).
        cache: uint8 training images of one category at ``config.image_size`` (moved to the device).
        out_dir: where ``checkpoint.pt``, ``config.json`` and ``tb/`` (TensorBoard) go; None = nothing
            written.
        resume: continue from ``out_dir/checkpoint.pt`` (same settings required).
        overwrite: allow a fresh run to replace an existing checkpoint in ``out_dir``.
        progress: show a tqdm bar (loss, accuracy, images/s).
        stop_at_step: stop after this many total updates, as if interrupted (a checkpoint is written;
            the learning-rate schedule still spans ``config.steps``).

    Raises:
        TrainingInterrupted: SIGINT/SIGTERM during the loop (with ``out_dir``, main thread only):
            raised at the next step boundary, after a checkpoint of that step.
        ValueError: ``resume`` and ``overwrite`` together.
        CheckpointError: resume without (or with an incompatible) checkpoint; a fresh run over an
            existing checkpoint without ``overwrite``.
        TrainingDivergedError: the loss became NaN or infinite (checked at every log point).
    """
    config.validate()
    device = resolve_device(config.device)
    check_cache(cache, config)
    ckpt_path = check_out_dir(out_dir, resume=resume, overwrite=overwrite)
    end = config.steps if stop_at_step is None else min(int(stop_at_step), config.steps)
    schedule = lr_schedule(config)

    with deterministic_mode(config.deterministic, device):
        seed_everything(config.seed)
        state = _resume_state(ckpt_path, config, cache, device) if resume else None
        run = _prepare(config, cache, device=device, lr=float(schedule[0]), state=state)
        log = TrainLogger(
            config,
            history=run.history,
            start=run.start,
            device=device,
            category=cache.category,
            out=ckpt_path.parent if ckpt_path is not None else None,
            progress=progress,
            checkpoint=ckpt_path,
        )
        checkpoints = Checkpointer(ckpt_path, config, cache)
        try:
            checkpoints.write_config(run.start)
            with stop_requests(ckpt_path is not None) as requests:
                _run_steps(
                    run,
                    config=config,
                    schedule=schedule,
                    end=end,
                    log=log,
                    checkpoints=checkpoints,
                    requests=requests,
                )
        finally:
            log.close()
    run.model.eval()
    return TrainResult(run.model, run.history, ckpt_path)


def check_cache(cache: ImageCache, config: TrainConfig) -> None:
    """Raise ``ValueError`` unless ``cache`` holds uint8 RGB images at ``config.image_size``."""
    if len(cache) == 0:
        raise ValueError("the image cache is empty: nothing to train on")
    if cache.images.dtype != torch.uint8 or cache.images.ndim != 4 or cache.images.shape[1] != 3:
        raise ValueError(
            f"expected a uint8 (N, 3, H, W) image cache, got {cache.images.dtype} {tuple(cache.images.shape)}"
        )
    if tuple(cache.image_size) != (config.image_size, config.image_size):
        raise ValueError(
            f"the cache holds {cache.image_size} images but image_size={config.image_size}: "
            f"build the cache at the training size"
        )


def _resume_state(
    path: Path, config: TrainConfig, cache: ImageCache, device: torch.device
) -> dict[str, Any]:
    """The checkpoint to continue, checked against this run's settings, data and device."""
    state = read_checkpoint(path)
    check_resume(state, path=path, config=config, cache=cache, device=device)
    return state


def _prepare(
    config: TrainConfig,
    cache: ImageCache,
    *,
    device: torch.device,
    lr: float,
    state: dict[str, Any] | None,
) -> _Run:
    """Model (initialised from the seeded torch stream), optimizer, augmentation stream, images.

    With a checkpoint ``state`` the weights, momentum, step, history and every RNG state are
    then restored from it, so the run continues exactly where it stopped.
    """
    model = build_model(config.model_config(), load_weights=state is None)
    model.to(device, memory_format=compute_precision(device).module_format())
    optimizer = make_optimizer(model, config, lr=lr)
    # augmentation parameters are drawn on the CPU and sent in one pinned copy per step
    # (see augment.make_proxy_batch): on a GPU that saves many tiny kernel launches
    generator = torch.Generator()
    generator.manual_seed(config.seed)
    history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
    start = 0
    if state is not None:
        history, start = restore_training_state(
            state,
            model=model,
            optimizer=optimizer,
            generator=generator,
            cuda=device.type == "cuda",
        )
    images = cache.images.to(device)
    model_fn = compile_model(model, device) if config.compile else model
    compiler = ProxyCompiler.for_device(device) if config.compile else None
    return _Run(model, model_fn, compiler, optimizer, generator, images, history, start)


def make_optimizer(
    model: torch.nn.Module, config: TrainConfig, *, lr: float
) -> torch.optim.Optimizer:
    """SGD with momentum (the paper's), or AdamW (``config.optimizer``), at ``lr``."""
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        model.parameters(), lr=lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _run_steps(
    run: _Run,
    *,
    config: TrainConfig,
    schedule: np.ndarray,
    end: int,
    log: TrainLogger,
    checkpoints: Checkpointer,
    requests: list[str],
) -> None:
    """Updates ``run.start`` .. ``end``: a log point every ``log_every`` steps and at
    checkpoints; a stop request (``requests`` non-empty) checkpoints the step and raises."""
    phase = None
    run.model.train()
    for step in range(run.start, end):
        if config.protocol == "transfer" and phase != (step >= config.warmup_steps):
            phase = step >= config.warmup_steps
            apply_phase(run.model, config, step)
        lr = float(schedule[step])
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        loss, correct = proxy_step(
            run.model_fn,
            run.optimizer,
            run.images,
            config,
            generator=run.generator,
            compiler=run.compiler,
        )
        log.add(loss, correct)
        done = step + 1
        stopping = bool(requests)  # a signal came: checkpoint this step and stop
        is_ckpt = checkpoints.due(done, end=end, stopping=stopping)
        if done % config.log_every == 0 or done == end or is_ckpt:
            log.point(done, lr)
        if is_ckpt:
            checkpoints.save(
                done,
                model=run.model,
                optimizer=run.optimizer,
                generator=run.generator,
                history=run.history,
                lr=lr,
            )
        if stopping and done < end:
            raise TrainingInterrupted(done, config.steps, checkpoints.path, requests[0])
