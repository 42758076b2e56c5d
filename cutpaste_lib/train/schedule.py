"""The learning rate of every update and the transfer protocol's two phases.

Scratch protocol: one cosine cycle from ``lr`` to 0, stepped per update. Transfer protocol
(Table 3): ``warmup_steps`` head-only steps with the encoder frozen, then fine-tuning at
``finetune_lr`` with the encoder's batch norm frozen; each phase has its own cosine cycle.
"""

from __future__ import annotations

import numpy as np

from cutpaste_lib.model import CutPasteModel
from cutpaste_lib.train.config import TrainConfig


def cosine_schedule(base_lr: float, steps: int) -> np.ndarray:
    """One cosine cycle from ``base_lr`` to 0, one value per update: lr_t = lr (1 + cos(pi t / T)) / 2."""
    t = np.arange(steps, dtype=np.float64)
    return base_lr * 0.5 * (1.0 + np.cos(np.pi * t / steps))


def lr_schedule(config: TrainConfig) -> np.ndarray:
    """The learning rate of every update step (length ``config.steps``)."""
    if config.protocol == "transfer":
        return np.concatenate(
            [
                cosine_schedule(config.lr, config.warmup_steps),
                cosine_schedule(config.finetune_lr, config.steps - config.warmup_steps),
            ]
        )
    return cosine_schedule(config.lr, config.steps)


def apply_phase(model: CutPasteModel, config: TrainConfig, step: int) -> None:
    """Freeze what the transfer protocol freezes at ``step`` (nothing for the scratch protocol)."""
    if config.protocol != "transfer":
        return
    if step < config.warmup_steps:
        model.freeze_encoder(True)
    else:
        model.freeze_encoder_batchnorm(True)
        model.freeze_encoder(False)
