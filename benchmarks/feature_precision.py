"""Density features in bf16 autocast vs fp32 on fixed trained models (issue 14 fidelity check).

For each category's 3-way image model, from the course-model folder (``runs/course``, written by
``cutpaste demo`` and the notebooks) or from a ``cutpaste reproduce`` output's ``jobs/`` folder:
extract train and test features once in fp32 and once under bf16 autocast + channels_last, fit a
Ledoit-Wolf Gaussian on each train set, score the test images, and print both image AUROCs and
the Spearman correlation of the two score vectors. Runs on the CPU (bf16 autocast forced), so it
measures the rounding, not the speed.

    cutpaste demo --out outputs/demo
    python benchmarks/feature_precision.py --data data/synthetic_128px_120 --runs runs/course

(The 2026-12-06 table in RESULTS.md was measured on the models of the earlier demo, which trained
through the reproduce grid: ``--runs outputs/demo/reproduce/jobs``.)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from scipy.stats import spearmanr

from cutpaste_lib import features
from cutpaste_lib.data import load_cache
from cutpaste_lib.density import GaussianDensity
from cutpaste_lib.metrics import auroc
from cutpaste_lib.precision import Precision
from cutpaste_lib.train import load_checkpoint

POLICIES = {"fp32": Precision("cpu"), "bf16": Precision("cpu", bf16=True, channels_last=True)}


def scores(model, train, test, policy: Precision) -> torch.Tensor:
    original = features.feature_precision
    features.feature_precision = lambda device: policy  # the policy under test
    try:
        ftr = features.extract_features(model, train.images, device="cpu")
        fte = features.extract_features(model, test.images, device="cpu")
    finally:
        features.feature_precision = original
    return GaussianDensity().fit_clean_features(ftr).score(fte)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset root the models saw")
    parser.add_argument(
        "--runs", type=Path, required=True, help="runs/course, or a reproduce output's jobs/ folder"
    )
    args = parser.parse_args()
    torch.set_num_threads(2)
    print("| category | image AUROC fp32 | image AUROC bf16 | Δ | Spearman of test scores |")
    print("|---|---:|---:|---:|---:|")
    grid = [
        (c, c.relative_to(args.runs).parts[0])
        for c in args.runs.glob("*/3way-image/**/checkpoint.pt")
    ]
    course = [
        (c, c.parent.name.split("-image-")[0]) for c in args.runs.glob("*-image-*/checkpoint.pt")
    ]
    for checkpoint, category in sorted(grid + course):
        model, config = load_checkpoint(checkpoint)
        size = config["image_size"]
        train = load_cache(args.data, category, "train", size)
        test = load_cache(args.data, category, "test", size)
        s = {name: scores(model, train, test, p) for name, p in POLICIES.items()}
        a = {name: auroc(v, test.labels) for name, v in s.items()}
        rho = spearmanr(s["fp32"], s["bf16"]).statistic
        print(
            f"| {category} | {a['fp32']:.4f} | {a['bf16']:.4f} | {a['bf16'] - a['fp32']:+.4f} "
            f"| {rho:.4f} |"
        )


if __name__ == "__main__":
    main()
