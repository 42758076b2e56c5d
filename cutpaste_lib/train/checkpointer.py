"""When a run writes its checkpoints (by steps, by wall time, at the end, on a stop request), and
the ``config.json`` beside them."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from cutpaste_lib import io
from cutpaste_lib.data import ImageCache
from cutpaste_lib.model import CutPasteModel
from cutpaste_lib.train.checkpoint import CONFIG_NAME, data_identity, save_checkpoint
from cutpaste_lib.train.config import TrainConfig


class Checkpointer:
    """When and where the loop writes checkpoints, and the run's ``config.json`` beside them.

    ``path`` None (no out dir): nothing is ever due and nothing is written.
    """

    def __init__(
        self,
        path: Path | None,
        config: TrainConfig,
        cache: ImageCache,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path, self.config, self.cache, self.clock = path, config, cache, clock
        self.last_saved = clock()

    def due(self, done: int, *, end: int, stopping: bool) -> bool:
        """A checkpoint after update ``done``: every ``checkpoint_every`` steps, the last step, a
        stop request, or the first log point ``checkpoint_minutes`` after the last checkpoint."""
        if self.path is None:
            return False
        config = self.config
        if done % config.checkpoint_every == 0 or done == end or stopping:
            return True
        minutes = config.checkpoint_minutes
        at_log_point = done % config.log_every == 0
        return at_log_point and minutes > 0 and self.clock() - self.last_saved >= 60 * minutes

    def write_config(self, step: int) -> None:
        """``config.json``: the settings, the architecture, the data identity and ``step``."""
        if self.path is None:
            return
        config = self.config
        io.write_json(
            self.path.parent / CONFIG_NAME,
            {
                **config.to_dict(),
                "model": config.model_config(),
                **data_identity(self.cache),
                "step": step,
            },
        )

    def save(
        self,
        step: int,
        *,
        model: CutPasteModel,
        optimizer: torch.optim.Optimizer,
        generator: torch.Generator,
        history: dict[str, list],
        lr: float,
    ) -> None:
        """The checkpoint of ``step``, then ``config.json`` with that step."""
        save_checkpoint(
            self.path,
            model=model,
            optimizer=optimizer,
            config=self.config,
            cache=self.cache,
            step=step,
            generator=generator,
            history=history,
            lr=lr,
        )
        self.write_config(step)
        self.last_saved = self.clock()
