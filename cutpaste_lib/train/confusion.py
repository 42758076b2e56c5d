"""The proxy task's confusion matrix on freshly augmented batches (how well the classifier
tells normal, CutPaste and Scar views apart), and the proxy accuracy every table of the project
reports."""

from __future__ import annotations

import numpy as np
import torch

from cutpaste_lib.augment import REFERENCE_SIZE, make_proxy_batch, num_classes
from cutpaste_lib.config import resolve_device
from cutpaste_lib.data import ImageCache, normalize
from cutpaste_lib.model import CutPasteModel, eval_mode
from cutpaste_lib.precision import compute_precision
from cutpaste_lib.train.config import TrainConfig
from cutpaste_lib.train.step import sample_originals

# The measurement behind every "proxy accuracy" column (README, RESULTS.md, ``cutpaste demo``,
# benchmarks/laptop_protocol.py): 8 fresh batches of 16 originals, drawn from a stream seeded 1.
REPORT_BATCHES, REPORT_BATCH_SIZE, REPORT_SEED = 8, 16, 1


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
    scar_reference: int = REFERENCE_SIZE,
) -> np.ndarray:
    """Confusion matrix of the proxy task on freshly augmented batches (rows: true, columns: predicted).

    ``patch_size`` and ``scar_reference`` should be those the model was trained with
    (``TrainConfig``): the task is then the one it learned. Uses a generator seeded with ``seed`` (not the training stream) and the model in eval mode,
    in :func:`~cutpaste_lib.precision.compute_precision`'s autocast (bf16 on CUDA).
    Returns an int64 (C, C) array, C = ``num_classes(variant)``.
    """
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    precision = compute_precision(dev)
    generator = torch.Generator(device=dev)
    generator.manual_seed(seed)
    images = cache.images.to(dev)
    c = num_classes(variant)
    matrix = torch.zeros(c * c, dtype=torch.long, device=dev)
    with eval_mode(model), torch.inference_mode():
        for _ in range(batches):
            originals = sample_originals(images, batch_size, generator=generator)
            batch = make_proxy_batch(
                originals,
                variant,
                generator=generator,
                patch_size=patch_size,
                scar_reference=scar_reference,
            )
            with precision.autocast():
                predicted = model(normalize(batch.images)).logits.argmax(dim=1)
            matrix += torch.bincount(batch.labels * c + predicted, minlength=c * c)
    return matrix.view(c, c).cpu().numpy()


def proxy_accuracy(
    model: CutPasteModel,
    cache: ImageCache,
    train_config: TrainConfig,
    *,
    device: str | torch.device | None = None,
) -> float:
    """The proxy task's accuracy as the project reports it: :func:`proxy_confusion` over
    ``REPORT_BATCHES`` x ``REPORT_BATCH_SIZE`` originals (seed ``REPORT_SEED``), on the task the
    model was trained on: variant, patch size and scar sizes are read from its ``train_config``,
    so no caller can measure a task the model did not learn."""
    matrix = proxy_confusion(
        model,
        cache,
        train_config.variant,
        batches=REPORT_BATCHES,
        batch_size=REPORT_BATCH_SIZE,
        patch_size=train_config.patch_size,
        seed=REPORT_SEED,
        device=device,
        scar_reference=train_config.scar_reference,
    )
    return float(np.trace(matrix) / matrix.sum())
