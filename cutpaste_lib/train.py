"""Self-supervised training on the CutPaste proxy task: a step-based loop that keeps the GPU busy.

One update step (paper, A.1): draw ``batch_size`` original images (32) from the uint8 cache,
build their augmented views with :func:`cutpaste_lib.augment.make_proxy_batch` (3-way: 96
classifier inputs), and take one SGD step on the cross-entropy of the proxy labels

.. math:: \\mathcal{L} = \\mathbb{E}_{x}\\big[\\mathrm{CE}(g(x), 0) + \\mathrm{CE}(g(\\mathrm{CP}(x)), 1)
          + \\mathrm{CE}(g(\\mathrm{Scar}(x)), 2)\\big].

Defaults are the paper's: 65,536 steps, SGD lr 0.03, momentum 0.9, weight decay 3e-5, one cosine
cycle stepped per update (:func:`lr_schedule` returns it as an array you can plot).

Speed. The hot path never touches PIL, disk or a DataLoader: the uint8 cache lives on the training
device; every random choice of a step (which originals, every paste and jitter) is drawn on the
CPU with one ``torch.Generator`` and sent to the device in one pinned, non-blocking copy; the
pixels are built as one batched tensor program with fixed shapes (nothing in it waits for the
GPU, so the CPU queues step t+1 while the GPU runs step t); the model runs in bf16 autocast with
channels_last on CUDA (fp32 on CPU, same code).
The loss and accuracy are accumulated on the device; the host reads them (one sync) only every
``log_every`` steps and at checkpoints, which is also when a non-finite loss is detected.

Choices where the paper is silent (the notebook repeats them):

* Originals are drawn uniformly *with replacement* at every step (``torch.randint`` on the
  augmentation generator). Over the paper's 65,536 x 32 draws each of ~250 images is used ~8,400
  times either way, and the sampler then has no state besides the generator, so a resume is exact.
* The model is trained on the classifier inputs of all views at once (one batch of K x B).
* Transfer protocol (``protocol="transfer"``, Table 3): ``warmup_steps`` head-only steps at ``lr``
  with the encoder frozen (eval-mode BN), then full fine-tuning at ``finetune_lr`` with the encoder's
  batch-norm layers frozen; each phase has its own cosine cycle (the paper does not say). Paper:
  batch 24, 10 + 64 epochs of 256 steps. We read "batch 24" the way we read Table 1's 64/96: as
  classifier inputs, i.e. 8 originals with their views in 3-way; pass
  ``batch_size=8, steps=18944, warmup_steps=2560`` for that (``batch_size`` counts originals).
* ``deterministic=True`` sets ``torch.use_deterministic_algorithms(True, warn_only=True)`` and turns
  cuDNN benchmarking off; ops without a deterministic kernel warn instead of failing.

Checkpoints are plain data (tensors, numbers, strings) loaded with ``weights_only=True``: model and
optimizer state, the step, the config, the data identity, the history and every RNG state
(torch CPU, CUDA, and the augmentation generator). ``resume=True`` continues bit for bit on CPU.

Interruption. With an ``out_dir``, in the main thread, a first SIGINT (Ctrl-C) or SIGTERM during
the loop only sets a flag: the step under way finishes, a checkpoint of it is written exactly like
a periodic one, and :class:`TrainingInterrupted` is raised (``resume=True`` then continues bit for
bit). The first signal puts the previous handlers back, so a second one interrupts at once; they
are also put back when training ends. Without an ``out_dir`` (nowhere to save) the signals keep
their usual effect.

Example:
    >>> from cutpaste_lib.data import ensure_synthetic, load_cache
    >>> from cutpaste_lib.train import TrainConfig, train
    >>> cache = load_cache(ensure_synthetic(), "synth_grid", "train", 64)  # doctest: +SKIP
    >>> cfg = TrainConfig(steps=30, batch_size=8, image_size=64, device="cpu")
    >>> result = train(cfg, cache, out_dir="runs/synth_grid")  # doctest: +SKIP
    >>> result.history["accuracy"][-1]  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from cutpaste_lib import io
from cutpaste_lib.augment import VARIANTS, make_proxy_batch, num_classes, views_per_image
from cutpaste_lib.config import compile_mode, resolve_device
from cutpaste_lib.data import ImageCache, normalize
from cutpaste_lib.errors import CheckpointError, TrainingDivergedError
from cutpaste_lib.model import (
    CutPasteModel,
    build_model,
    check_encoder_name,
    eval_mode,
    load_error_message,
)

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.json"
TENSORBOARD_DIR = "tb"
CHECKPOINT_FORMAT = "cutpaste-checkpoint"
CHECKPOINT_VERSION = 1
PROTOCOLS = ("scratch", "transfer")
HISTORY_KEYS = ("step", "loss", "accuracy", "lr", "images_per_s")
# What train(), load_checkpoint() and the resume check read from a checkpoint.
CHECKPOINT_KEYS = ("config", "model_config", "data", "step", "model", "optimizer", "rng", "history")
STOP_SIGNALS = ("SIGINT", "SIGTERM")

# Settings that change what is trained: a resume must use the same values.
RESUME_KEYS = (
    "variant", "encoder", "steps", "batch_size", "lr", "momentum", "weight_decay", "image_size",
    "patch_size", "seed", "pretrained", "head_depth", "head_width", "embedding_dim", "protocol",
    "warmup_steps", "finetune_lr",
)  # fmt: skip


@dataclass
class TrainConfig:
    """Everything that defines a training run; defaults follow the paper (A.1).

    Attributes:
        variant: "3way" (normal / CutPaste / Scar), "cutpaste", "scar" or "union".
        encoder: torchvision model name (resnet18 as in Table 1).
        steps: total SGD updates (65,536 = 256 "epochs" of 256 steps).
        batch_size: original images per step (each brings K views: 3 for 3-way, 2 otherwise).
        lr, momentum, weight_decay: SGD settings (0.03, 0.9, 3e-5); lr follows one cosine cycle.
        image_size: side of the square training images (the cache must have this size).
        patch_size: crop side for the patch (localization) model, e.g. 64; None = whole image.
        seed: seeds torch (CPU and CUDA), Python, NumPy and the augmentation generator.
        device: "auto", "cpu", "cuda" or "cuda:N".
        log_every: steps between host reads of loss/accuracy (progress bar, TensorBoard, NaN check).
        checkpoint_every: steps between checkpoints (one is always written at the end).
        deterministic: deterministic algorithms (slower on GPU).
        compile: ``torch.compile`` the model and the augmentation's pixel stage; on CUDA both
            are also replayed as CUDA graphs (mode "reduce-overhead"), so the CPU no longer
            has to launch every kernel of every step. Costs a minute of compilation at start.
        pretrained, weights: ImageNet weights from the torch hub cache, or a state-dict file.
        head_depth, head_width, embedding_dim: projection head (8 x 512, 128-d).
        protocol: "scratch" (Table 1) or "transfer" (Table 3: head warm-up, then BN-frozen fine-tune).
        warmup_steps: head-only steps of the transfer protocol.
        finetune_lr: learning rate of the transfer protocol's fine-tuning phase (1e-4).
    """

    variant: str = "3way"
    encoder: str = "resnet18"
    steps: int = 65_536
    batch_size: int = 32
    lr: float = 0.03
    momentum: float = 0.9
    weight_decay: float = 3e-5
    image_size: int = 256
    patch_size: int | None = None
    seed: int = 0
    device: str = "auto"
    log_every: int = 100
    checkpoint_every: int = 4096
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

    def __post_init__(self) -> None:
        if self.weights is not None:
            self.weights = str(self.weights)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {self.variant!r}")
        check_encoder_name(self.encoder)
        for name in ("steps", "batch_size", "image_size", "log_every", "checkpoint_every", "head_width",
                     "embedding_dim"):  # fmt: skip
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
        for name in ("momentum", "weight_decay"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.patch_size is not None and not 1 <= self.patch_size <= self.image_size:
            raise ValueError(
                f"patch_size must be in [1, image_size={self.image_size}], got {self.patch_size!r}"
            )
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
            "encoder": self.encoder, "num_classes": self.num_classes, "head_depth": self.head_depth,
            "head_width": self.head_width, "embedding_dim": self.embedding_dim,
            "pretrained": self.pretrained or self.weights is not None, "weights": self.weights,
        }  # fmt: skip

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


# ====== schedules ======
def cosine_schedule(base_lr: float, steps: int) -> np.ndarray:
    """One cosine cycle from ``base_lr`` to 0, one value per update: lr_t = lr (1 + cos(pi t / T)) / 2."""
    t = np.arange(steps, dtype=np.float64)
    return base_lr * 0.5 * (1.0 + np.cos(np.pi * t / steps))


def lr_schedule(config: TrainConfig) -> np.ndarray:
    """The learning rate of every update step (length ``config.steps``)."""
    if config.protocol == "transfer":
        return np.concatenate([
            cosine_schedule(config.lr, config.warmup_steps),
            cosine_schedule(config.finetune_lr, config.steps - config.warmup_steps),
        ])  # fmt: skip
    return cosine_schedule(config.lr, config.steps)


# ====== one step ======
def sample_originals(
    images: torch.Tensor, batch_size: int, *, generator: torch.Generator
) -> torch.Tensor:
    """``batch_size`` images drawn uniformly with replacement from a uint8 cache, as float [0, 1].

    The generator may live on the CPU while the cache is on a GPU: the indices then travel in
    one pinned, non-blocking copy (no wait for the device).
    """
    idx = torch.randint(len(images), (batch_size,), generator=generator, device=generator.device)
    if idx.device.type != images.device.type:
        idx = (idx.pin_memory() if images.is_cuda else idx).to(images.device, non_blocking=True)
    return images[idx].float().div_(255.0)


def optimization_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    labels: torch.Tensor,
    *,
    amp: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (bf16 autocast when ``amp``), cross-entropy, backward, SGD step.

    Returns the detached loss and the number of correct predictions, both still on the device
    (reading them is a host sync; the loop does it only at log points).
    """
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        logits = model(x).logits
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == labels).sum()


def compile_model(model: torch.nn.Module, device: torch.device) -> Callable[..., Any]:
    """``torch.compile`` for training; on CUDA also replayed as CUDA graphs ("reduce-overhead").

    Why the graphs: measured on an H200 (benchmarks/RESULTS.md), queuing the kernels of one
    eager ResNet-18 step keeps a CPU core busy for 10 of the step's 11 ms, so any extra Python
    work (the augmentation) makes the GPU wait. Replaying graphs takes the CPU out of the loop.
    """
    return torch.compile(model, mode=compile_mode(device))


def proxy_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    config: TrainConfig,
    *,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One full training step: sample originals, augment, normalise, :func:`optimization_step`."""
    originals = sample_originals(images, config.batch_size, generator=generator)
    batch = make_proxy_batch(
        originals, config.variant, generator=generator, patch_size=config.patch_size,
        compiled=config.compile,
    )  # fmt: skip
    cuda = images.device.type == "cuda"
    x = normalize(batch.images)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    return optimization_step(model, optimizer, x, batch.labels, amp=cuda)


# ====== setup helpers ======
def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms inside the block (restores the previous global settings after)."""
    previous = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reproducibility
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = device.type == "cuda"  # fixed shapes: let cuDNN pick
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous[0], warn_only=previous[1])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = previous[2:]


def _apply_phase(model: CutPasteModel, config: TrainConfig, step: int) -> None:
    if config.protocol != "transfer":
        return
    if step < config.warmup_steps:
        model.freeze_encoder(True)
    else:
        model.freeze_encoder_batchnorm(True)
        model.freeze_encoder(False)


def _data_identity(cache: ImageCache) -> dict[str, Any]:
    return {
        "category": cache.category,
        "num_images": len(cache),
        "image_size": list(cache.image_size),
    }


def _check_cache(cache: ImageCache, config: TrainConfig) -> None:
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


# ====== checkpoints ======
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
    config.update(model=state["model_config"], step=state["step"], category=state["data"]["category"],
                  num_images=state["data"]["num_images"])  # fmt: skip
    return model, config


def _check_resume(state: dict[str, Any], path: Path, config: TrainConfig, cache: ImageCache,
                  device: torch.device) -> None:  # fmt: skip
    saved = state["config"]
    for key in RESUME_KEYS:
        if saved.get(key) != getattr(config, key):
            raise CheckpointError(
                f"{path} was trained with {key}={saved.get(key)!r} but {key}={getattr(config, key)!r} "
                "was asked for: resume with the same settings, or train into another out dir"
            )
    data = _data_identity(cache)
    if state["data"] != data:
        raise CheckpointError(f"{path} was trained on {state['data']}, not on this cache {data}")
    if state["rng"]["augment_device"] != device.type:
        raise CheckpointError(
            f"{path} was trained on {state['rng']['augment_device']}; resume it on the same device type "
            f"(asked for {device.type}) so the random streams continue exactly"
        )


def _save_checkpoint(path: Path, *, model: CutPasteModel, optimizer: torch.optim.Optimizer,
                     config: TrainConfig, cache: ImageCache, step: int, generator: torch.Generator,
                     history: dict[str, list], lr: float) -> None:  # fmt: skip
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    state = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "model_config": model.config(),
        "data": _data_identity(cache),
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


# ====== the loop ======
@contextlib.contextmanager
def _stop_requests(enabled: bool) -> Iterator[list[str]]:
    """Turn a first SIGINT/SIGTERM into a stop request that the loop reads between steps.

    Yields a list that receives the signal's name. The first signal also puts the previous
    handlers back, so a second one interrupts at once (Ctrl-C twice: ``KeyboardInterrupt``);
    leaving the block puts them back too. Nothing is installed unless ``enabled`` and in the
    main thread (``signal.signal`` raises elsewhere); an ignored signal (``SIG_IGN``, as in a
    script's background job) stays ignored.
    """
    received: list[str] = []
    previous: dict[int, Any] = {}
    if enabled and threading.current_thread() is threading.main_thread():
        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.getsignal(signum)

    def restore() -> None:
        for signum, handler in previous.items():  # None: set outside Python, i.e. the default
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)

    def request_stop(signum: int, frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        restore()

    for signum in previous:
        signal.signal(signum, request_stop)
    try:
        yield received
    finally:
        restore()


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
    _check_cache(cache, config)
    ckpt_path = check_out_dir(out_dir, resume=resume, overwrite=overwrite)
    out = ckpt_path.parent if ckpt_path is not None else None
    end = config.steps if stop_at_step is None else min(int(stop_at_step), config.steps)
    schedule = lr_schedule(config)

    with deterministic_mode(config.deterministic, device):
        seed_everything(config.seed)
        state = read_checkpoint(ckpt_path) if resume else None
        if state is not None:
            _check_resume(state, ckpt_path, config, cache, device)
        # ====== model, optimizer, random streams ======
        model = build_model(config.model_config(), load_weights=state is None)
        cuda = device.type == "cuda"
        model.to(device, memory_format=torch.channels_last if cuda else torch.preserve_format)
        optimizer = torch.optim.SGD(model.parameters(), lr=float(schedule[0]), momentum=config.momentum,
                                    weight_decay=config.weight_decay)  # fmt: skip
        # augmentation parameters are drawn on the CPU and sent in one pinned copy per step
        # (see augment.make_proxy_batch): on a GPU that saves ~150 tiny kernel launches
        generator = torch.Generator()
        generator.manual_seed(config.seed)
        history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
        start = 0
        if state is not None:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            generator.set_state(state["rng"]["augment"])
            torch.set_rng_state(state["rng"]["torch"])
            if cuda and state["rng"]["cuda"]:
                torch.cuda.set_rng_state_all(state["rng"]["cuda"])
            history = {k: list(state["history"][k]) for k in HISTORY_KEYS}
            start = int(state["step"])
        images = cache.images.to(device)
        model_fn = compile_model(model, device) if config.compile else model

        writer = None
        if out is not None:
            from torch.utils.tensorboard import SummaryWriter

            writer = SummaryWriter(str(out / TENSORBOARD_DIR), purge_step=start)
            io.write_json(out / CONFIG_NAME, {**config.to_dict(), "model": config.model_config(),
                                              **_data_identity(cache), "step": start})  # fmt: skip

        # ====== training loop ======
        bar = tqdm(total=config.steps, initial=start, disable=not progress, unit="step",
                   desc=f"train {config.variant} {cache.category}".strip())  # fmt: skip
        loss_sum = torch.zeros((), device=device)
        correct_sum = torch.zeros((), device=device, dtype=torch.long)
        window_steps, window_start = 0, time.perf_counter()
        phase = None
        model.train()
        step = start
        handlers = contextlib.ExitStack()
        try:
            stop_requests = handlers.enter_context(_stop_requests(ckpt_path is not None))
            for step in range(start, end):
                if config.protocol == "transfer" and phase != (step >= config.warmup_steps):
                    phase = step >= config.warmup_steps
                    _apply_phase(model, config, step)
                lr = float(schedule[step])
                for group in optimizer.param_groups:
                    group["lr"] = lr
                loss, correct = proxy_step(model_fn, optimizer, images, config, generator=generator)
                loss_sum += loss
                correct_sum += correct
                window_steps += 1
                done = step + 1
                bar.update(1)
                stopping = bool(stop_requests)  # a signal came: checkpoint this step and stop
                is_ckpt = ckpt_path is not None and (
                    done % config.checkpoint_every == 0 or done == end or stopping
                )
                if done % config.log_every == 0 or done == end or is_ckpt:
                    # The only host-device sync of the loop.
                    mean_loss = loss_sum.item() / window_steps
                    accuracy = correct_sum.item() / (window_steps * config.inputs_per_step)
                    elapsed = time.perf_counter() - window_start
                    speed = window_steps * config.inputs_per_step / max(elapsed, 1e-9)
                    if not math.isfinite(mean_loss):
                        raise TrainingDivergedError(
                            f"the loss became {mean_loss} between steps {done - window_steps + 1} and "
                            f"{done} (lr {lr:.3g}); lower the learning rate (--lr) or check the "
                            f"data; the last good checkpoint (if any) is {ckpt_path}"
                        )
                    for key, value in zip(HISTORY_KEYS, (done, mean_loss, accuracy, lr, speed)):
                        history[key].append(value)
                    if writer is not None:
                        for key in HISTORY_KEYS[1:]:
                            writer.add_scalar(f"train/{key}", history[key][-1], done)
                    bar.set_postfix(
                        loss=f"{mean_loss:.4f}", acc=f"{accuracy:.3f}", img_s=f"{speed:.0f}"
                    )
                    loss_sum.zero_()
                    correct_sum.zero_()
                    window_steps, window_start = 0, time.perf_counter()
                if is_ckpt:
                    _save_checkpoint(ckpt_path, model=model, optimizer=optimizer, config=config,
                                     cache=cache, step=done, generator=generator, history=history,
                                     lr=lr)  # fmt: skip
                    io.write_json(out / CONFIG_NAME, {**config.to_dict(), "model": config.model_config(),
                                                      **_data_identity(cache), "step": done})  # fmt: skip
                if stopping and done < end:
                    raise TrainingInterrupted(done, config.steps, ckpt_path, stop_requests[0])
        finally:
            handlers.close()
            bar.close()
            if writer is not None:
                writer.close()
    model.eval()
    return TrainResult(model, history, ckpt_path)


# ====== proxy-task evaluation ======
@torch.inference_mode()
def proxy_confusion(
    model: CutPasteModel,
    cache: ImageCache,
    variant: str,
    *,
    batches: int = 4,
    batch_size: int = 32,
    patch_size: int | None = None,
    seed: int = 1,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Confusion matrix of the proxy task on freshly augmented batches (rows: true, columns: predicted).

    Uses a generator seeded with ``seed`` (not the training stream) and the model in eval mode.
    Returns an int64 (C, C) array, C = ``num_classes(variant)``.
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    generator = torch.Generator(device=dev)
    generator.manual_seed(seed)
    images = cache.images.to(dev)
    c = num_classes(variant)
    matrix = torch.zeros(c * c, dtype=torch.long, device=dev)
    with eval_mode(model), torch.inference_mode():
        for _ in range(batches):
            originals = sample_originals(images, batch_size, generator=generator)
            batch = make_proxy_batch(originals, variant, generator=generator, patch_size=patch_size)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda"):
                predicted = model(normalize(batch.images)).logits.argmax(dim=1)
            matrix += torch.bincount(batch.labels * c + predicted, minlength=c * c)
    return matrix.view(c, c).cpu().numpy()
