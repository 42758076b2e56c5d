"""Where does a training step's time go on a GPU? CPU enqueue time vs device time, per stage.

For each stage (augmentation alone, the model step alone, the full training step, the full step
without augmentation) it runs N calls back to back and reports two times per call: how long
the CPU took to *queue* them (no sync inside the loop) and the wall time once the device has
finished. A stage whose enqueue time is close to its wall time is CPU-bound (launch overhead):
the GPU waits for Python. It also profiles three full steps and counts the runtime calls that
block the CPU (stream/device synchronisation, blocking copies), which should be zero.

Usage:
    python benchmarks/profile_step.py --device cuda [--compile]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cutpaste_lib.augment import ProxyCompiler, make_proxy_batch  # noqa: E402
from cutpaste_lib.config import resolve_device  # noqa: E402
from cutpaste_lib.data import normalize  # noqa: E402
from cutpaste_lib.model import CutPasteModel  # noqa: E402
from cutpaste_lib.precision import compute_precision  # noqa: E402
from cutpaste_lib.train import TrainConfig, optimization_step, sample_originals  # noqa: E402

BLOCKING = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def enqueue_and_wall(fn, n: int, device: torch.device) -> tuple[float, float]:
    """(CPU enqueue ms per call, wall ms per call) for n back-to-back calls."""
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    t1 = time.perf_counter()
    sync(device)
    t2 = time.perf_counter()
    return (t1 - t0) / n * 1e3, (t2 - t0) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--compile", action="store_true", help="compiled augmentation and model")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    size, b = args.image_size, args.batch_size
    config = TrainConfig(batch_size=b, image_size=size, device=str(device), compile=args.compile)
    torch.manual_seed(0)
    precision = compute_precision(device)  # as train(): bf16 + channels_last on CUDA
    model = CutPasteModel(**config.model_config()).to(
        device, memory_format=precision.module_format()
    )
    model_fn = torch.compile(model) if args.compile else model
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9, weight_decay=3e-5)
    g = torch.Generator(device=device).manual_seed(0)
    cache = torch.randint(
        0, 256, (256, 3, size, size), dtype=torch.uint8, device=device, generator=g
    )
    labels = torch.arange(3, device=device).repeat_interleave(b)
    x_fixed = precision.prepare(torch.randn(3 * b, 3, size, size, device=device))
    torch.backends.cudnn.benchmark = cuda

    def make_aug(sampler: torch.Generator, compiled: bool | str):
        if isinstance(compiled, str):
            compiled = ProxyCompiler(compiled)
        else:
            compiled = ProxyCompiler.for_device(device) if compiled else None

        def aug():
            originals = sample_originals(cache, b, generator=sampler)
            return make_proxy_batch(originals, "3way", generator=sampler, compiled=compiled)

        return aug

    def make_full(aug):
        def full():
            batch = aug()
            x = precision.prepare(normalize(batch.images))
            optimization_step(model_fn, opt, x, batch.labels, amp=precision.bf16)

        return full

    def model_only():
        optimization_step(model_fn, opt, x_fixed, labels, amp=precision.bf16)

    def full_no_aug():
        originals = sample_originals(cache, b, generator=g)
        x = precision.prepare(normalize(originals.repeat(3, 1, 1, 1)))
        optimization_step(model_fn, opt, x, labels, amp=precision.bf16)

    cpu_gen = torch.Generator().manual_seed(0)
    variants = {
        "params drawn on the device, eager": (g, False),
        "params drawn on the CPU, eager (default)": (cpu_gen, False),
    }
    if cuda or args.compile:
        variants["params drawn on the CPU, compiled, no CUDA graph"] = (cpu_gen, "default")
    if cuda:
        variants["params drawn on the CPU, compiled + CUDA graph (--compile)"] = (cpu_gen, True)
    stages = {
        "model step only (ceiling)": model_only,
        "full step without augmentation": full_no_aug,
    }
    for name, (sampler, compiled) in variants.items():
        aug = make_aug(sampler, compiled)
        stages[f"augment: {name}"] = aug
        stages[f"full step: {name}"] = make_full(aug)
    print(
        f"# step profile: 3-way, {b} originals, {size} px, model "
        f"{'compiled' if args.compile else 'eager'}, {torch.cuda.get_device_name(device) if cuda else 'cpu'}, "
        f"torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC"
    )
    print("| stage | CPU enqueue ms / call | wall ms / call |")
    print("|---|---:|---:|")
    for name, fn in stages.items():
        enqueue_and_wall(fn, 3, device)  # warm-up: compilation, cuDNN autotuning, allocator
        rows = [enqueue_and_wall(fn, args.steps, device) for _ in range(3)]
        enq, wall = sorted(rows, key=lambda r: r[1])[1]
        print(f"| {name} | {enq:.2f} | {wall:.2f} |", flush=True)
    full = stages["full step: params drawn on the CPU, eager (default)"]

    if cuda:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(3):
                full()
            sync(device)
        events = prof.events()
        blocking = {}
        for e in events:
            if e.name in BLOCKING:  # cudaMemcpy (not ...Async) blocks the CPU too
                blocking[e.name] = blocking.get(e.name, 0) + 1
        kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
        gpu_ms = sum(e.device_time for e in kernels) / 1e3 / 3  # device_time is in microseconds
        launches = (
            sum(
                1
                for e in events
                if e.name
                in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernelEx")
            )
            / 3
        )
        print(
            f"\nprofiled full steps: kernels {len(kernels) / 3:.0f} per step, launches {launches:.0f}, "
            f"GPU busy {gpu_ms:.2f} ms per step; blocking runtime calls: {blocking or 'none'}"
        )
        table = prof.key_averages().table(
            sort_by="self_cuda_time_total", row_limit=18, max_name_column_width=60
        )
        print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
