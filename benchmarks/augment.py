"""Time one 3-way proxy batch (32 originals -> 96 images, 256 px) built from a uint8 image cache.

Compares the readable per-image implementation with the batched one (same pixels, see
tests/test_augment.py) and, unless ``--no-step``, one ResNet-18 training step on the 96
images (bf16 autocast + channels_last on CUDA, fp32 on CPU), all in the same run. Target on
the GPU: the batched augmentation costs at most 10 % of the training step.

Usage:
    python benchmarks/augment.py [--device cpu|cuda] [--quick] [--no-step] [--compile]

On CUDA (or with ``--compile``) it also times the batched version with its pixel stage under
``torch.compile`` (``make_proxy_batch(..., compiled=ProxyCompiler.for_device(device))``), after
a warm-up that compiles.
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

from cutpaste_lib import augment  # noqa: E402
from cutpaste_lib.augment.proxy_params import draw_proxy_params  # noqa: E402
from cutpaste_lib.config import resolve_device  # noqa: E402


def timed(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    """Median wall time of ``fn()`` in milliseconds (CUDA: synchronised before and after)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def training_step(batch_size: int, size: int, device: torch.device):
    """One SGD step of a ResNet-18 classifier (3 classes) on ``batch_size`` images, as training does."""
    try:
        from cutpaste_lib.model import CutPasteModel

        model = CutPasteModel(encoder="resnet18", num_classes=3).to(device)
        logits_of = lambda x: model(x).logits  # noqa: E731
    except ImportError:  # model module not there: the bare torchvision network
        import torchvision

        model = torchvision.models.resnet18(num_classes=3).to(device)
        logits_of = model
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=0.03, momentum=0.9, weight_decay=3e-5)
    x = torch.randn(batch_size, 3, size, size, device=device)
    if cuda:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 3, (batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = torch.nn.functional.cross_entropy(logits_of(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu)")
    parser.add_argument("--quick", action="store_true", help="64 px, 8 originals, fewer repeats")
    parser.add_argument("--no-step", action="store_true", help="skip timing the training step")
    parser.add_argument("--variant", default="3way", choices=augment.VARIANTS)
    parser.add_argument("--compile", action="store_true", help="also time the compiled version")
    args = parser.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except ValueError as exc:
        parser.error(f"--device: {exc}")
    size, originals = (64, 8) if args.quick else (256, 32)
    repeats = 3 if args.quick or device.type == "cpu" else 20

    g = torch.Generator(device=device).manual_seed(0)
    cache = torch.randint(
        0, 256, (4 * originals, 3, size, size), dtype=torch.uint8, device=device, generator=g
    )

    sampler = torch.Generator().manual_seed(0)  # parameters drawn on the CPU, as training does

    def batch(implementation: str, compiled: augment.ProxyCompiler | bool = False):
        def run():
            idx = torch.randint(0, cache.shape[0], (originals,), device=device, generator=g)
            images = cache[idx].float() / 255
            return augment.make_proxy_batch(
                images,
                args.variant,
                generator=sampler,
                implementation=implementation,
                compiled=compiled,
            )

        return run

    k = augment.views_per_image(args.variant)
    rows = [("batched", timed(batch("batched"), device, repeats))]
    if args.compile or device.type == "cuda":
        compiled = batch("batched", augment.ProxyCompiler.for_device(device))
        rows.append(("batched, torch.compile", timed(compiled, device, repeats, warmup=3)))
    rows.append(("per_image", timed(batch("per_image"), device, max(1, repeats // 2))))

    def draw(host_arithmetic: bool = True):
        """The CPU-side part of a batched batch: draw the parameters, pack and send them."""
        if device.type == "cuda":
            return augment.sample_proxy_params(
                originals,
                (size, size),
                args.variant,
                generator=sampler,
                device=device,
                host_arithmetic=host_arithmetic,
            )
        # images on the CPU need no copy, so sample_proxy_params skips the packing; time the
        # CPU work of the GPU path anyway (draw, then pack into one buffer per dtype)
        _, params = draw_proxy_params(
            originals,
            (size, size),
            args.variant,
            generator=sampler,
            patch_size=None,
            whole_image_aug=augment.WholeImageAug(),
            aspect_sampling="log_uniform",
            host_arithmetic=host_arithmetic,
        )
        return augment.move_params(params, device)

    draw_ms = timed(draw, device, max(repeats, 20), warmup=5)
    # baseline for the drawing: the same numbers with torch arithmetic on tiny tensors (what the
    # samplers did before their NumPy path; bit-identical results, tested)
    draw_torch_ms = timed(lambda: draw(host_arithmetic=False), device, max(repeats, 20), warmup=5)
    step_ms = None
    if not args.no_step:
        # CPU steps are slow: one warm-up and one timed step are enough to see the ratio
        cpu = device.type == "cpu"
        step = training_step(k * originals, size, device)
        step_ms = timed(step, device, 1 if cpu else repeats, warmup=1 if cpu else 3)

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu"
    )
    print(
        f"# augment benchmark: {args.variant}, {originals} originals -> {k * originals} images, {size} px"
    )
    print(
        f"device: {device} ({name}), threads: {torch.get_num_threads()}, torch {torch.__version__}, "
        f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    )
    print()
    batched = rows[0][1]
    header = "| implementation | ms / batch | vs batched |"
    sep = "|---|---:|---:|"
    if step_ms is not None:
        header += " / training step |"
        sep += "---:|"
    print(header)
    print(sep)
    for impl, ms in rows:
        line = f"| {impl} | {ms:.1f} | {ms / batched:.2f}x |"
        if step_ms is not None:
            line += f" {ms / step_ms:.1%} |"
        print(line)
    tail = " |" if step_ms is not None else ""
    print(
        f"| (of which: drawing the parameters on the CPU and packing them for the copy) | {draw_ms:.2f} | |{tail}"
    )
    print(
        f"| (the same drawing and packing with torch arithmetic, the baseline) | {draw_torch_ms:.2f} | "
        f"{draw_torch_ms / draw_ms:.1f}x the NumPy path |{tail}"
    )
    if step_ms is not None:
        precision = "bf16 autocast, channels_last" if device.type == "cuda" else "fp32"
        print(f"| ResNet-18 training step ({precision}) | {step_ms:.1f} | | 100% |")
        if device.type == "cuda":
            for impl, ms in rows[:-1]:
                verdict = "met" if ms <= 0.10 * step_ms else "NOT met"
                print(f"target ({impl} <= 10% of a step on the GPU): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
