"""The log points of a run: history, progress bar, TensorBoard, and the divergence check.

The loss and the number of correct predictions are summed on the device; :meth:`TrainLogger.point`
reads them (the loop's only host-device sync) every ``log_every`` steps and at checkpoints, which
is also when a non-finite loss is detected.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from cutpaste_lib.errors import TrainingDivergedError
from cutpaste_lib.train.config import HISTORY_KEYS, TrainConfig

TENSORBOARD_DIR = "tb"  # under the run's out dir


class TrainLogger:
    """Accumulates the steps of a log window and writes one log point per window.

    Args:
        config: the run's settings (``steps``, ``variant``, ``inputs_per_step``).
        history: the history to extend (empty, or a checkpoint's on resume).
        start: updates already done (the progress bar's start, TensorBoard's purge step).
        device: where the loss and accuracy sums live.
        category: the data's category, for the progress bar.
        out: the run's folder for ``tb/``; None = no TensorBoard.
        progress: show the tqdm bar.
        checkpoint: the run's checkpoint path, named in the divergence error.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        history: dict[str, list],
        start: int,
        device: torch.device,
        category: str,
        out: Path | None,
        progress: bool,
        checkpoint: Path | None,
    ) -> None:
        self.history, self.checkpoint = history, checkpoint
        self.inputs_per_step = config.inputs_per_step
        self.writer = None
        if out is not None:
            self.writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=start)
        self.bar = tqdm(
            total=config.steps,
            initial=start,
            disable=not progress,
            unit="step",
            desc=f"train {config.variant} {category}".strip(),
        )
        self.loss_sum = torch.zeros((), device=device)
        self.correct_sum = torch.zeros((), device=device, dtype=torch.long)
        self._new_window()

    def _new_window(self) -> None:
        self.window_steps, self.window_start = 0, time.perf_counter()

    def add(self, loss: torch.Tensor, correct: torch.Tensor) -> None:
        """One more step of the window (no sync: the sums stay on the device)."""
        self.loss_sum += loss
        self.correct_sum += correct
        self.window_steps += 1
        self.bar.update(1)

    def point(self, done: int, lr: float) -> None:
        """Read the window's sums, check the loss is finite, append one history entry, reset.

        Raises:
            TrainingDivergedError: the window's mean loss is NaN or infinite.
        """
        mean_loss = self.loss_sum.item() / self.window_steps
        accuracy = self.correct_sum.item() / (self.window_steps * self.inputs_per_step)
        elapsed = time.perf_counter() - self.window_start
        speed = self.window_steps * self.inputs_per_step / max(elapsed, 1e-9)
        if not math.isfinite(mean_loss):
            raise TrainingDivergedError(
                f"the loss became {mean_loss} between steps {done - self.window_steps + 1} and "
                f"{done} (lr {lr:.3g}); lower the learning rate (--lr) or check the "
                f"data; the last good checkpoint (if any) is {self.checkpoint}"
            )
        for key, value in zip(HISTORY_KEYS, (done, mean_loss, accuracy, lr, speed)):
            self.history[key].append(value)
        if self.writer is not None:
            for key in HISTORY_KEYS[1:]:
                self.writer.add_scalar(f"train/{key}", self.history[key][-1], done)
        self.bar.set_postfix(loss=f"{mean_loss:.4f}", acc=f"{accuracy:.3f}", img_s=f"{speed:.0f}")
        self.loss_sum.zero_()
        self.correct_sum.zero_()
        self._new_window()

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()
