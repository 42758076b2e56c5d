"""One update step: draw originals, build their augmented views, take one SGD step.

Nothing here waits for the device: the originals' indices and every augmentation parameter are
drawn on the CPU and sent in one pinned, non-blocking copy, and the loss and the number of
correct predictions stay on the device, so the CPU queues step t+1 while the GPU runs step t.
The network runs as :func:`cutpaste_lib.precision.compute_precision` says (bf16 autocast and
channels_last on CUDA, fp32 elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cutpaste_lib.augment import ProxyCompiler, make_proxy_batch
from cutpaste_lib.config import compile_mode
from cutpaste_lib.data import normalize
from cutpaste_lib.precision import Precision, compute_precision
from cutpaste_lib.train.config import TrainConfig


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

    ``amp`` is a :class:`~cutpaste_lib.precision.Precision`'s ``bf16``; the caller also puts
    ``x`` in its memory format (``Precision.prepare``), as :func:`proxy_step` does.
    Returns the detached loss and the number of correct predictions, both still on the device
    (reading them is a host sync; the loop does it only at log points).
    """
    with Precision(x.device.type, bf16=amp).autocast():
        logits = model(x).logits
    loss = F.cross_entropy(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach(), (logits.detach().argmax(dim=1) == labels).sum()


def compile_model(model: torch.nn.Module, device: torch.device) -> Callable[..., Any]:
    """``torch.compile`` for training; on CUDA also replayed as CUDA graphs ("reduce-overhead").

    Why the graphs: an eager step launches every kernel of the network from Python, and queuing
    them keeps a CPU core busy for most of the step on a fast GPU, so any extra Python work (the
    augmentation) makes the GPU wait. Replaying graphs takes the CPU out of the loop. The
    measurements are in benchmarks/RESULTS.md (``benchmarks/profile_step.py`` reproduces them).
    """
    return torch.compile(model, mode=compile_mode(device))


def proxy_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    config: TrainConfig,
    *,
    generator: torch.Generator,
    compiler: ProxyCompiler | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One full training step: sample originals, augment, normalise, :func:`optimization_step`.

    ``compiler``: the run's compiled augmentation (``ProxyCompiler.for_device(device)``, made once
    per run), required when ``config.compile`` is set.
    """
    if config.compile and compiler is None:
        raise ValueError(
            "config.compile is set: pass the run's ProxyCompiler (ProxyCompiler.for_device(device))"
        )
    originals = sample_originals(images, config.batch_size, generator=generator)
    batch = make_proxy_batch(
        originals,
        config.variant,
        generator=generator,
        patch_size=config.patch_size,
        compiled=compiler if config.compile else None,
        scar_reference=config.scar_reference,
    )
    precision = compute_precision(images.device)
    x = precision.prepare(normalize(batch.images))
    return optimization_step(model, optimizer, x, batch.labels, amp=precision.bf16)
