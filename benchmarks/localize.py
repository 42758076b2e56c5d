"""Dense localization throughput at 256 px: batched scoring vs a per-patch loop, measured in one run.

Whole test-time path per image: 57 x 57 = 3,249 patch features (ResNet-18, 32 px patches,
stride 4), their Gaussian scores, and the receptive-field upsampling to a 256 x 256 heatmap.

* ours: :func:`cutpaste_lib.localize.score_images` (many patches per forward pass, one batched
  Mahalanobis per chunk, one transposed convolution per chunk);
* baseline: the straightforward loop of public reimplementations: crop each patch, one forward
  pass and one density evaluation per patch, then the same upsampling. It is slow, so on CPU it
  is timed on the first ``--baseline-rows`` rows of the grid and extrapolated to 57 rows (said
  in the output); on CUDA it runs on whole images.

Model weights and Gaussian parameters are random: speed does not depend on them, and fitting
is not part of the measured path. Both paths' scores are compared on the rows both computed.

Usage:
    python benchmarks/localize.py [--device cpu|cuda] [--quick] [--density shared|per-location]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch

from cutpaste_lib.config import resolve_device
from cutpaste_lib.data import normalize
from cutpaste_lib.density import GaussianDensity, l2_normalize, mahalanobis
from cutpaste_lib.localize import HeatmapScale, PatchDensity, PatchGrid, score_images
from cutpaste_lib.model import CutPasteModel


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _images(n: int, size: int, seed: int) -> torch.Tensor:
    from cutpaste_lib.data import render_sample

    out = [
        torch.from_numpy(render_sample("synth_carpet", size=size, seed=seed + k)[0]).permute(
            2, 0, 1
        )
        for k in range(n)
    ]
    return torch.stack(out)


def random_patch_density(grid, dim: int, mode: str, device) -> PatchDensity:
    """A PatchDensity with random (valid) Gaussian parameters: shared, or per location (float32)."""
    g = torch.Generator().manual_seed(0)
    a = torch.randn(dim, dim, generator=g, dtype=torch.float64) / dim**0.5
    factor = torch.linalg.cholesky(a @ a.T + 0.1 * torch.eye(dim, dtype=torch.float64))
    mean = l2_normalize(torch.randn(dim, generator=g, dtype=torch.float64))
    density = GaussianDensity(per_location=mode == "per-location")
    if mode == "per-location":
        gh, gw = grid.shape
        mean = mean.float().expand(gh, gw, dim).contiguous()
        factor = factor.float().expand(gh, gw, dim, dim).contiguous()  # 3.4 GB at 57x57x512
    state = {
        "mean": mean,
        "cholesky_factor": factor,
        "shrinkage": torch.zeros(()),
        "train_score_mean": torch.zeros(()),
        "train_score_std": torch.ones(()),
    }
    density.load_state_dict({k: v.to(device) for k, v in state.items()})
    return PatchDensity(density, grid, mode, HeatmapScale(0.0, 1.0, 1.0))


def per_patch_loop(model, images, patch_density, device, rows: int | None = None) -> torch.Tensor:
    """Baseline: one forward pass and one Mahalanobis distance per patch (batch of one).

    Returns the score grids (N, rows, gw) and, when all rows are done, also upsamples them.
    """
    grid = patch_density.grid
    gh, gw = grid.shape
    rows = gh if rows is None else min(rows, gh)
    p, s = grid.patch_size, grid.stride
    density = patch_density.density
    encoder = model.encoder.eval()
    out = []
    with torch.inference_mode():
        for img in images:
            x = normalize(img[None].to(device))
            scores = torch.empty(rows, gw, device=device)
            for i in range(rows):
                for j in range(gw):
                    with torch.autocast(
                        "cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"
                    ):
                        f = encoder(x[:, :, s * i : s * i + p, s * j : s * j + p]).float()
                    f = l2_normalize(f.double())
                    if density.mean.ndim == 1:
                        mean, factor = density.mean, density.cholesky_factor
                    else:
                        mean, factor = density.mean[i, j], density.cholesky_factor[i, j]
                    scores[i, j] = mahalanobis(f, mean, factor)[0]
            if rows == gh:
                patch_density.upsample(scores[None])
            out.append(scores.cpu())
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--quick", action="store_true", help="fewer images / rows")
    parser.add_argument(
        "--density",
        choices=("shared", "per-location"),
        default="shared",
        help="per-location holds 3.4 GB of float32 Cholesky factors",
    )
    parser.add_argument("--images", type=int, default=None, help="images for the batched path")
    parser.add_argument("--baseline-images", type=int, default=None, help="images for the loop")
    parser.add_argument(
        "--baseline-rows",
        type=int,
        default=None,
        help="grid rows the loop runs (CPU default 2 quick / 4; extrapolated)",
    )
    parser.add_argument("--max-patches", type=int, default=None, help="patches per forward pass")
    args = parser.parse_args()

    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    n_ours = args.images or (64 if cuda else (1 if args.quick else 2))
    n_base = args.baseline_images or (2 if cuda else 1)
    base_rows = args.baseline_rows or (None if cuda else (2 if args.quick else 4))
    max_patches = args.max_patches or (4096 if cuda else 512)
    torch.manual_seed(0)
    model = CutPasteModel(encoder="resnet18", num_classes=3).to(device).eval()
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    test = _images(max(n_ours, n_base), 256, seed=100).to(device)
    grid = PatchGrid((256, 256), 32, 4)
    pd = random_patch_density(grid, model.feature_dim, args.density, device)

    # warm-up (small on CPU, a whole image on CUDA: kernels, cuDNN autotuning, allocator)
    score_images(
        model,
        test[:1] if cuda else test[:1, :, :64, :64],
        pd
        if cuda
        else random_patch_density(PatchGrid((64, 64), 32, 4), model.feature_dim, "shared", device),
        max_patches=max_patches,
        device=device,
    )
    _sync(device)
    start = time.perf_counter()
    patch_scores, _ = score_images(model, test[:n_ours], pd, max_patches=max_patches, device=device)
    _sync(device)
    ours_s = time.perf_counter() - start

    if cuda:
        per_patch_loop(model, test[:1], pd, device, rows=2)  # warm-up
    _sync(device)
    start = time.perf_counter()
    base_scores = per_patch_loop(model, test[:n_base], pd, device, rows=base_rows)
    _sync(device)
    base_s = time.perf_counter() - start
    rows_done = base_scores.shape[1]
    if rows_done < grid.shape[0]:  # extrapolate the loop to the whole grid (+ one upsampling)
        base_s *= grid.shape[0] / rows_done
    ref = patch_scores[:n_base, :rows_done]
    err = float((base_scores - ref).abs().max() / ref.abs().max())

    ours_ips, base_ips = n_ours / ours_s, n_base / base_s
    name = (
        torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine())
    )
    print(
        f"## Dense localization at 256 px (57x57 patches of 32 px, stride 4, {args.density} Gaussian)\n"
    )
    print(
        f"device: {device} ({name}), torch {torch.__version__}, {torch.get_num_threads()} CPU threads, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC"
    )
    note = (
        f"loop timed on {rows_done} of {grid.shape[0]} grid rows and extrapolated"
        if rows_done < grid.shape[0]
        else "loop timed on whole images"
    )
    print(f"{note}; max relative score difference loop vs batched: {err:.1e}\n")
    print("| path | images | seconds / image | images/s | speed-up |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| per-patch loop (baseline) | {n_base} | {base_s / n_base:.3g} | {base_ips:.3g} | 1.0x |"
    )
    print(
        f"| batched `score_images` (ours) | {n_ours} | {ours_s / n_ours:.3g} | {ours_ips:.3g} | "
        f"{ours_ips / base_ips:.1f}x |"
    )


if __name__ == "__main__":
    main()
