"""Training throughput: our full CutPaste step against the model-only ceiling, in one run.

(a) full step = what :func:`cutpaste_lib.train.train` runs per update: draw originals from the
uint8 cache on the device, build the 3-way proxy batch with the batched augmentation, normalise,
forward/backward/SGD step; (b) model-only step = the same model, optimizer, batch size and
precision on a resident random tensor (the ceiling: no data work at all). Both loops sync the
device only at the end, like training between log points. Blocks of (a) and (b) alternate and
the median block is kept, so load on a shared machine hits both alike.

Prints images/s (classifier inputs per second), the ratio (a)/(b) and the projected wall time of
the paper's 65,536 steps at this batch. Targets on an H100/H200: ratio >= 0.9 at the paper's batch
(32 originals, 3-way, 256 px) and <= 15 minutes per category.

Usage:
    python benchmarks/train_throughput.py                 # CPU: 64 px, 8 originals
    python benchmarks/train_throughput.py --device cuda   # paper batch: 256 px, 32 originals
    python benchmarks/train_throughput.py --device cuda --compile
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutpaste_lib.augment import VARIANTS, ProxyCompiler  # noqa: E402
from cutpaste_lib.config import compile_mode, resolve_device  # noqa: E402
from cutpaste_lib.model import CutPasteModel  # noqa: E402
from cutpaste_lib.precision import compute_precision  # noqa: E402
from cutpaste_lib.train import (  # noqa: E402
    TrainConfig,
    compile_model,
    optimization_step,
    proxy_step,
)

PAPER_STEPS = 65_536


def block_time(fn, steps: int, device: torch.device) -> float:
    """Seconds for ``steps`` calls of ``fn`` with one device sync at the end."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="fewer blocks (a smoke run)")
    parser.add_argument("--variant", default="3way", choices=VARIANTS)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=None, help="originals per step")
    parser.add_argument("--image-size", type=int, default=None)
    parser.add_argument("--cache-images", type=int, default=256, help="images in the uint8 cache")
    parser.add_argument(
        "--compile", action="store_true", help="torch.compile the model and the augmentation"
    )
    parser.add_argument(
        "--compile-mode",
        default=None,
        help="torch.compile mode of the model (default: as training, i.e. reduce-overhead on CUDA)",
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = device.type == "cuda"
    size = args.image_size or (256 if cuda else 64)
    originals = args.batch_size or (32 if cuda else 8)
    steps_per_block = (5 if args.quick else 25) if cuda else (2 if args.quick else 4)
    blocks = 3 if args.quick else 5

    config = TrainConfig(
        variant=args.variant,
        encoder=args.encoder,
        batch_size=originals,
        image_size=size,
        device=str(device),
        compile=args.compile,
    )
    torch.manual_seed(0)
    model = CutPasteModel(encoder=args.encoder, num_classes=config.num_classes)
    precision = compute_precision(device)  # as train(): bf16 + channels_last on CUDA
    model.to(device, memory_format=precision.module_format()).train()
    model_fn = model
    if args.compile:
        model_fn = (
            compile_model(model, device)
            if args.compile_mode is None
            else torch.compile(model, mode=args.compile_mode)
        )
    mode = args.compile_mode or compile_mode(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=3e-5)
    generator = torch.Generator(device=device).manual_seed(0)
    cache = torch.randint(
        0,
        256,
        (args.cache_images, 3, size, size),
        dtype=torch.uint8,
        device=device,
        generator=generator,
    )

    n = config.inputs_per_step
    x = precision.prepare(torch.randn(n, 3, size, size, device=device, generator=generator))
    labels = torch.randint(0, config.num_classes, (n,), device=device, generator=generator)

    sampler = torch.Generator().manual_seed(0)  # parameters drawn on the CPU, as train() does

    compiler = ProxyCompiler.for_device(device) if config.compile else None

    def full():
        proxy_step(model_fn, optimizer, cache, config, generator=sampler, compiler=compiler)

    def model_only():
        optimization_step(model_fn, optimizer, x, labels, amp=precision.bf16)

    for fn in (full, model_only):  # warm-up: cuDNN autotuning, compilation, allocator
        block_time(fn, 3 if cuda else 1, device)
    torch.backends.cudnn.benchmark = cuda
    full_t, model_t = [], []
    for _ in range(blocks):
        full_t.append(block_time(full, steps_per_block, device))
        model_t.append(block_time(model_only, steps_per_block, device))
    full_ms = statistics.median(full_t) / steps_per_block * 1e3
    model_ms = statistics.median(model_t) / steps_per_block * 1e3

    name = torch.cuda.get_device_name(device) if cuda else (platform.processor() or "cpu")
    arithmetic = "bf16 autocast + channels_last" if precision.bf16 else "fp32"
    print(
        f"# training throughput: {config.variant}, {args.encoder}, {originals} originals -> {n} "
        f"classifier inputs per step, {size} px, {arithmetic}{f', compiled ({mode})' if args.compile else ''}"
    )
    print(
        f"device: {device} ({name}), threads: {torch.get_num_threads()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; median of {blocks} blocks of "
        f"{steps_per_block} steps"
    )
    print()
    print("| step | ms / step | images / s | vs ceiling | 65,536 steps |")
    print("|---|---:|---:|---:|---:|")
    for label, ms in (
        ("(a) full: cache -> augment -> fwd/bwd/SGD", full_ms),
        ("(b) model only, resident tensors (ceiling)", model_ms),
    ):
        hours = PAPER_STEPS * ms / 1e3 / 3600
        wall = f"{hours * 60:.1f} min" if hours < 1 else f"{hours:.2f} h"
        print(f"| {label} | {ms:.1f} | {n / ms * 1e3:.0f} | {model_ms / ms:.2f} | {wall} |")
    ratio = model_ms / full_ms
    print(f"\nratio (a)/(b) throughput: {ratio:.2f}")
    if cuda and originals == 32 and size == 256:
        minutes = PAPER_STEPS * full_ms / 1e3 / 60
        ok = ratio >= 0.9 and minutes <= 15
        print(
            f"targets (ratio >= 0.9, <= 15 min per category): {'met' if ok else 'NOT met'} "
            f"({ratio:.2f}, {minutes:.1f} min)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
