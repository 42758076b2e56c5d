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
channels_last on CUDA (fp32 on CPU, same code: :mod:`cutpaste_lib.precision`).
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

Checkpoints (:mod:`.checkpoint`) are plain data loaded with ``weights_only=True``; ``resume=True``
continues bit for bit on CPU. A first SIGINT/SIGTERM checkpoints the step under way and raises
:class:`TrainingInterrupted` (:mod:`.signals`).

The package, in the order data flows through it: :mod:`.config` (settings, results, names),
:mod:`.schedule`, :mod:`.step` (one update), :mod:`.determinism`, :mod:`.checkpoint`,
:mod:`.signals`, :mod:`.logger`, :mod:`.loop` (:func:`train`), :mod:`.confusion`.

Example:
    >>> from cutpaste_lib.data import ensure_synthetic, load_cache
    >>> from cutpaste_lib.train import TrainConfig, train
    >>> cache = load_cache(ensure_synthetic(), "synth_grid", "train", 64)  # doctest: +SKIP
    >>> cfg = TrainConfig(steps=30, batch_size=8, image_size=64, device="cpu")
    >>> result = train(cfg, cache, out_dir="runs/synth_grid")  # doctest: +SKIP
    >>> result.history["accuracy"][-1]  # doctest: +SKIP
"""

from cutpaste_lib.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_KEYS,
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    CONFIG_NAME,
    check_out_dir,
    load_checkpoint,
    read_checkpoint,
)
from cutpaste_lib.train.config import (
    HISTORY_KEYS,
    PROTOCOLS,
    RESUME_KEYS,
    TrainConfig,
    TrainingInterrupted,
    TrainResult,
)
from cutpaste_lib.train.confusion import proxy_accuracy, proxy_confusion
from cutpaste_lib.train.determinism import deterministic_mode, seed_everything
from cutpaste_lib.train.logger import TENSORBOARD_DIR
from cutpaste_lib.train.loop import make_optimizer, train
from cutpaste_lib.train.schedule import cosine_schedule, lr_schedule
from cutpaste_lib.train.signals import STOP_SIGNALS
from cutpaste_lib.train.step import compile_model, optimization_step, proxy_step, sample_originals

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_KEYS",
    "CHECKPOINT_NAME",
    "CHECKPOINT_VERSION",
    "CONFIG_NAME",
    "HISTORY_KEYS",
    "PROTOCOLS",
    "RESUME_KEYS",
    "STOP_SIGNALS",
    "TENSORBOARD_DIR",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "check_out_dir",
    "compile_model",
    "cosine_schedule",
    "deterministic_mode",
    "load_checkpoint",
    "lr_schedule",
    "optimization_step",
    "proxy_accuracy",
    "proxy_confusion",
    "proxy_step",
    "read_checkpoint",
    "sample_originals",
    "seed_everything",
    "train",
    "make_optimizer",
]
