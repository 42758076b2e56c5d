"""What defines a training run (:class:`TrainConfig`), what it returns, and the names it writes.

:class:`TrainConfig` holds the paper's defaults (A.1) and checks every field; ``RESUME_KEYS`` are
the fields a resume must repeat. :class:`TrainResult` is what :func:`~cutpaste_lib.train.train`
returns and :class:`TrainingInterrupted` what it raises after a signal's checkpoint;
``HISTORY_KEYS`` are the keys of its history.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

from cutpaste_lib.augment import REFERENCE_SIZE, VARIANTS, num_classes, views_per_image
from cutpaste_lib.config import resolve_device
from cutpaste_lib.model import CutPasteModel, check_encoder_name

PROTOCOLS = ("scratch", "transfer")
OPTIMIZERS = ("sgd", "adamw")
HISTORY_KEYS = ("step", "loss", "accuracy", "lr", "images_per_s")

# Settings that change what is trained: a resume must use the same values.
RESUME_KEYS = (
    "variant",
    "encoder",
    "steps",
    "batch_size",
    "lr",
    "optimizer",
    "momentum",
    "weight_decay",
    "image_size",
    "patch_size",
    "seed",
    "pretrained",
    "head_depth",
    "head_width",
    "embedding_dim",
    "protocol",
    "warmup_steps",
    "finetune_lr",
    "scar_reference",
)
_POSITIVE_INTS = (
    "steps",
    "batch_size",
    "image_size",
    "log_every",
    "checkpoint_every",
    "head_width",
    "embedding_dim",
    "scar_reference",
)


@dataclass
class TrainConfig:
    """Everything that defines a training run; defaults follow the paper (A.1).

    Attributes:
        variant: "3way" (normal / CutPaste / Scar), "cutpaste", "scar" or "union".
        encoder: torchvision model name (resnet18 as in Table 1).
        steps: total SGD updates (65,536 = 256 "epochs" of 256 steps).
        batch_size: original images per step (each brings K views: 3 for 3-way, 2 otherwise).
        lr, momentum, weight_decay: SGD settings (0.03, 0.9, 3e-5); lr follows one cosine cycle.
        optimizer: "sgd" (the paper's) or "adamw" (``torch.optim.AdamW`` with ``weight_decay``,
            ``momentum`` unused): the laptop protocol's choice, because from scratch it reaches a
            given proxy accuracy in fewer steps (benchmarks/RESULTS.md).
        image_size: side of the square training images (the cache must have this size).
        patch_size: crop side for the patch (localization) model, e.g. 64; None = whole image.
        seed: seeds torch (CPU and CUDA), Python, NumPy and the augmentation generator.
        device: "auto", "cpu", "cuda" or "cuda:N".
        log_every: steps between host reads of loss/accuracy (progress bar, TensorBoard, NaN check).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        checkpoint_minutes: also checkpoint at the first log point after this many minutes of
            wall time since the last checkpoint (0: by steps only). On a CPU, 4,096 steps can take
            half an hour; this bounds what a crash loses. It only adds checkpoints at log points
            the run passes anyway, so what the run computes (weights, history) does not change,
            and it is not part of what a resume must repeat.
        deterministic: deterministic algorithms (slower on GPU).
        compile: ``torch.compile`` the model and the augmentation's pixel stage; on CUDA both
            are also replayed as CUDA graphs (mode "reduce-overhead"), so the CPU no longer
            has to launch every kernel of every step. Costs a minute of compilation at start.
        pretrained, weights: ImageNet weights from the torch hub cache, or a state-dict file.
        head_depth, head_width, embedding_dim: projection head (8 x 512, 128-d).
        protocol: "scratch" (Table 1) or "transfer" (Table 3: head warm-up, then BN-frozen fine-tune).
        warmup_steps: head-only steps of the transfer protocol.
        finetune_lr: learning rate of the transfer protocol's fine-tuning phase (1e-4).
        scar_reference: the image side the paper's scar sizes refer to (256); scars are scaled
            by ``sqrt(H * W) / scar_reference``. The laptop protocol uses 128 at 64 px (scars
            1-8 px wide instead of 0.5-4): a deviation, measured in benchmarks/RESULTS.md.
    """

    variant: str = "3way"
    encoder: str = "resnet18"
    steps: int = 65_536
    batch_size: int = 32
    lr: float = 0.03
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 3e-5
    image_size: int = 256
    patch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    log_every: int = 100
    checkpoint_every: int = 4096
    checkpoint_minutes: float = 5.0
    deterministic: bool = False
    compile: bool = False
    pretrained: bool = False
    weights: str | None = None
    head_depth: int = 8
    head_width: int = 512
    embedding_dim: int = 128
    protocol: str = "scratch"
    warmup_steps: int = 2560
    finetune_lr: float = 1e-4
    scar_reference: int = REFERENCE_SIZE

    def __post_init__(self) -> None:
        if self.weights is not None:
            self.weights = str(self.weights)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        check_encoder_name(self.encoder)
        for name in _POSITIVE_INTS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.head_depth, int) or self.head_depth < 0:
            raise ValueError(f"head_depth must be an integer >= 0, got {self.head_depth!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for name in ("lr", "finetune_lr"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        for name in ("momentum", "weight_decay", "checkpoint_minutes"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.patch_size is not None and not 1 <= self.patch_size <= self.image_size:
            raise ValueError(
                f"patch_size must be in [1, image_size={self.image_size}], got {self.patch_size!r}"
            )
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.protocol == "transfer":
            if not (self.pretrained or self.weights):
                raise ValueError(
                    "protocol='transfer' fine-tunes ImageNet weights: set pretrained=True or weights=FILE"
                )
            if not 0 < self.warmup_steps < self.steps:
                raise ValueError(
                    f"warmup_steps must be in (0, steps={self.steps}) for protocol='transfer', "
                    f"got {self.warmup_steps}"
                )
        resolve_device(self.device)

    @property
    def num_classes(self) -> int:
        return num_classes(self.variant)

    @property
    def inputs_per_step(self) -> int:
        """Classifier inputs per step: ``batch_size`` times the views per original (3-way: 3)."""
        return self.batch_size * views_per_image(self.variant)

    def model_config(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "num_classes": self.num_classes,
            "head_depth": self.head_depth,
            "head_width": self.head_width,
            "embedding_dim": self.embedding_dim,
            "pretrained": self.pretrained or self.weights is not None,
            "weights": self.weights,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (they would be silently ignored)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; known: {sorted(known)}")
        return cls(**data)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped :func:`train` at a step boundary, after a checkpoint of that step.

    A ``KeyboardInterrupt``, not a :class:`~cutpaste_lib.errors.CutPasteError`, on purpose: code
    that stops on Ctrl-C (a loop over runs that reports ``Exception`` per run and goes on, a
    notebook) still stops. ``cutpaste train`` prints it as one line (exit status 2).

    Attributes:
        step: updates done (the checkpoint's step).
        steps: the run's total (``config.steps``).
        checkpoint: the checkpoint written at ``step``.
        signal_name: "SIGINT" or "SIGTERM".
    """

    def __init__(self, step: int, steps: int, checkpoint: Path, signal_name: str) -> None:
        self.step, self.steps, self.checkpoint, self.signal_name = (
            step,
            steps,
            checkpoint,
            signal_name,
        )
        super().__init__(
            f"training interrupted by {signal_name} after step {step} of {steps}; its checkpoint is "
            f"{checkpoint}: continue it with resume=True and the same settings (CLI: --resume)"
        )

    def __reduce__(self):  # picklable (process pools send exceptions back to the parent)
        return type(self), (self.step, self.steps, self.checkpoint, self.signal_name)


class TrainResult(NamedTuple):
    model: CutPasteModel
    """The trained model (in eval mode, on the training device)."""
    history: dict[str, list]
    """One entry per log point: step, loss, accuracy, lr, images_per_s (classifier inputs per second)."""
    checkpoint: Path | None
    """``out_dir/checkpoint.pt`` or None when no out_dir was given."""
