"""Checkpoints: plain data (tensors, numbers, strings) loaded with ``weights_only=True``.

A checkpoint holds the model and optimizer state, the step, the config, the data identity, the
history and every RNG state (torch CPU, CUDA, and the augmentation generator), so ``resume=True``
continues bit for bit on CPU. :class:`~cutpaste_lib.train.checkpointer.Checkpointer` decides when the loop writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cutpaste_lib import io
from cutpaste_lib.config import resolve_device
from cutpaste_lib.data import ImageCache
from cutpaste_lib.errors import CheckpointError
from cutpaste_lib.model import CutPasteModel, build_model, load_error_message
from cutpaste_lib.train.config import HISTORY_KEYS, RESUME_KEYS, TrainConfig

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
CHECKPOINT_FORMAT = "cutpaste-checkpoint"
CHECKPOINT_VERSION = 1
# What train(), load_checkpoint() and the resume check read from a checkpoint.
CHECKPOINT_KEYS = ("config", "model_config", "data", "step", "model", "optimizer", "rng", "history")


def data_identity(cache: ImageCache) -> dict[str, Any]:
    """What a checkpoint records of its training images (a resume must use the same)."""
    return {
        "category": cache.category,
        "num_images": len(cache),
        "image_size": list(cache.image_size),
    }


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint dict (CPU tensors, ``weights_only=True``) and check it is ours.

    Raises:
        CheckpointError: missing, unreadable, pickled objects, or not a CutPaste checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(load_error_message(path, exc, "checkpoint")) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path} is not a CutPaste training checkpoint (no '{CHECKPOINT_FORMAT}' marker); "
            "torchvision weights go to CutPasteModel(weights=...) / --weights instead"
        )
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint version {state.get('version')}, this library reads {CHECKPOINT_VERSION}"
        )
    missing = [key for key in CHECKPOINT_KEYS if key not in state]
    if missing:
        raise CheckpointError(
            f"{path} is an incomplete CutPaste checkpoint: no {', '.join(map(repr, missing))} "
            "(damaged or edited); train again into another out dir (or --overwrite)"
        )
    return state


def load_checkpoint(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[CutPasteModel, dict[str, Any]]:
    """The trained model (eval mode, on ``device``) and its config dict.

    The dict holds the :class:`TrainConfig` fields plus ``model`` (architecture), ``category``,
    ``num_images`` and ``step`` (updates done; equal to ``steps`` for a finished run).
    """
    state = read_checkpoint(path)
    model = build_model(state["model_config"], load_weights=False)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit {state['model_config']}: {exc}") from exc
    model.to(resolve_device(device)).eval()
    config = dict(state["config"])
    config.update(
        model=state["model_config"],
        step=state["step"],
        category=state["data"]["category"],
        num_images=state["data"]["num_images"],
    )
    return model, config


def check_resume(
    state: dict[str, Any],
    *,
    path: Path,
    config: TrainConfig,
    cache: ImageCache,
    device: torch.device,
) -> None:
    """Raise :class:`CheckpointError` unless ``state`` can continue with these settings and data."""
    saved = state["config"]
    for key in RESUME_KEYS:
        # checkpoints from before the optimizer choice were all trained with SGD
        value = saved.get(key, "sgd" if key == "optimizer" else None)
        if value != getattr(config, key):
            raise CheckpointError(
                f"{path} was trained with {key}={value!r} but {key}={getattr(config, key)!r} "
                "was asked for: resume with the same settings, or train into another out dir"
            )
    data = data_identity(cache)
    if state["data"] != data:
        raise CheckpointError(f"{path} was trained on {state['data']}, not on this cache {data}")
    if state["rng"]["augment_device"] != device.type:
        raise CheckpointError(
            f"{path} was trained on {state['rng']['augment_device']}; resume it on the same device type "
            f"(asked for {device.type}) so the random streams continue exactly"
        )


def restore_training_state(
    state: dict[str, Any],
    *,
    model: CutPasteModel,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    cuda: bool,
) -> tuple[dict[str, list], int]:
    """Load weights, momentum and every RNG state of ``state``; return its history and step."""
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng"]["augment"])
    torch.set_rng_state(state["rng"]["torch"])
    if cuda and state["rng"]["cuda"]:
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return {k: list(state["history"][k]) for k in HISTORY_KEYS}, int(state["step"])


def save_checkpoint(
    path: Path,
    *,
    model: CutPasteModel,
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    cache: ImageCache,
    step: int,
    generator: torch.Generator,
    history: dict[str, list],
    lr: float,
) -> None:
    """Write the checkpoint of ``step`` to ``path`` (atomically: a reader never sees half of it)."""
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "model_config": model.config(),
        "data": data_identity(cache),
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": {"kind": "cosine", "protocol": config.protocol, "step": step, "lr": lr},
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": cuda_states,
            "augment": generator.get_state(),
            # the training device: resuming on another device type would change the streams
            "augment_device": next(model.parameters()).device.type,
        },
        "history": history,
    }
    io.save_torch(path, state)


def check_out_dir(out_dir: str | Path | None, *, resume: bool, overwrite: bool) -> Path | None:
    """The checkpoint path of ``out_dir`` after checking ``resume``/``overwrite`` make sense.

    Raises:
        ValueError: both ``resume`` and ``overwrite`` (continue the checkpoint, or replace it?).
        CheckpointError: resume without a checkpoint, or a fresh run over one without overwrite.
    """
    if resume and overwrite:
        raise ValueError(
            "resume=True continues the checkpoint and overwrite=True replaces it: pass only one"
        )
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir is not None else None
    if resume and (ckpt_path is None or not ckpt_path.is_file()):
        raise CheckpointError(
            f"resume asked for, but there is no checkpoint at {ckpt_path or '(no out_dir given)'}"
        )
    if not resume and not overwrite and ckpt_path is not None and ckpt_path.exists():
        raise CheckpointError(
            f"{ckpt_path} already exists: resume it (--resume), replace it (--overwrite) "
            "or choose another out dir"
        )
    return ckpt_path
