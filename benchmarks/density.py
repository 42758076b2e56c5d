"""Fit + score a Gaussian density: cutpaste_lib (torch, Cholesky) vs sklearn LedoitWolf + mahalanobis.

Same data, same run: 20,000 x 512 L2-normalised training embeddings, 5,000 test embeddings
(``--quick``: 4,000 x 256 and 1,000). Times include moving the float32 CPU arrays to the device
and the scores back. Prints a Markdown table with the speed-up and the Spearman rank correlation
of the score vectors (must be 1.0) and their largest relative difference. sklearn runs twice:
on float32 input (what a model's features are; sklearn then computes in float32) and on float64
input (the precision this library always accumulates in).

Usage:
    python benchmarks/density.py [--device cpu|cuda] [--quick] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from sklearn.covariance import LedoitWolf

from cutpaste_lib.density import GaussianDensity, l2_normalize


def make_embeddings(n: int, d: int, seed: int = 0) -> torch.Tensor:
    """Embedding-like data: a decaying spectrum (a few strong directions), an offset, L2-normalised."""
    g = torch.Generator().manual_seed(seed)
    scales = torch.logspace(0, -2, d)
    basis = torch.linalg.qr(torch.randn(d, d, generator=g))[0]
    x = (torch.randn(n, d, generator=g) * scales) @ basis.T + 0.5 / d**0.5
    return l2_normalize(x).float()


def ours(train: torch.Tensor, test: torch.Tensor, device: torch.device) -> np.ndarray:
    gde = GaussianDensity(normalize=False).fit_clean_features(train.to(device))
    scores = gde.score(test.to(device)).cpu()
    return scores.numpy()


def sklearn_reference(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    return LedoitWolf().fit(train).mahalanobis(test)


CPU = torch.device("cpu")


def timed(fn, device: torch.device, repeat: int):
    best, out = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="best of N timings (default 3)")
    args = parser.parse_args()
    device = torch.device(args.device)
    n_train, n_test, d = (4_000, 1_000, 256) if args.quick else (20_000, 5_000, 512)

    train, test = make_embeddings(n_train, d, 0), make_embeddings(n_test, d, 1)
    train_np, test_np = train.numpy(), test.numpy()
    if device.type == "cuda":  # initialise the CUDA context and kernels outside the timing
        ours(train[:64], test[:8], device)

    train64, test64 = train_np.astype(np.float64), test_np.astype(np.float64)
    t_sk32, s_sk32 = timed(lambda: sklearn_reference(train_np, test_np), CPU, args.repeat)
    t_sk64, s_sk64 = timed(lambda: sklearn_reference(train64, test64), CPU, args.repeat)
    t_ours, s_ours = timed(lambda: ours(train, test, device), device, args.repeat)

    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else (platform.processor() or "cpu")
    )
    print(f"## GaussianDensity fit + score: {n_train} x {d} train, {n_test} test")
    print(
        f"device: {name} ({device}), torch {torch.__version__}, CPU threads {torch.get_num_threads()}, "
        f"{datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC, best of {args.repeat}"
    )
    print()
    print("| method | seconds | speed-up of ours | Spearman vs ours | max rel. diff vs ours |")
    print("|---|---|---|---|---|")
    for label, t, s in (
        ("sklearn LedoitWolf + mahalanobis, float32 input (CPU)", t_sk32, s_sk32),
        ("sklearn LedoitWolf + mahalanobis, float64 input (CPU)", t_sk64, s_sk64),
    ):
        rho = spearmanr(s_ours, s).statistic
        rel = float(np.abs(s_ours - s).max() / np.abs(s).max())
        print(f"| {label} | {t:.3f} | {t / t_ours:.1f}x | {rho:.9f} | {rel:.1e} |")
    print(
        f"| cutpaste_lib GaussianDensity ({device.type}, float64 accumulation, Cholesky) | {t_ours:.3f} | 1.0x | 1 | 0 |"
    )


if __name__ == "__main__":
    main()
