"""Which CPU protocol makes CutPaste learn on a laptop? (issue 15)

For each candidate protocol and category: train a 3-way model from scratch with the library
(``train``), then report the wall time of training, the proxy accuracy on fresh augmented batches
(``train.proxy_accuracy``, the measurement ``cutpaste demo`` reports), the image AUROC of the
Gaussian density and, beside it, the image AUROC of the *untrained* encoder of the same
architecture (the baseline a learned model must beat). With ``--patch`` it also trains the
patch model of each candidate and reports pixel AUROC and AUPRO. Rows are appended to a JSON-lines
file as they finish (a long sweep can be stopped and continued), and the table is printed in the
layout of ``benchmarks/RESULTS.md``.

    python benchmarks/laptop_protocol.py --data data/synthetic_128px_120 --candidates laptop laptop-sgd laptop-head8
    python benchmarks/laptop_protocol.py --data ../shared/datasets/bsdata --candidates laptop

Timings are wall clock of this machine (print its core count with the table); run nothing beside it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch

from cutpaste_lib import config
from cutpaste_lib.course import course_model, models_root, untrained_model
from cutpaste_lib.data import list_categories, load_cache
from cutpaste_lib.evaluate import evaluate
from cutpaste_lib.localize import localize
from cutpaste_lib.train import proxy_accuracy

# Candidates beyond the shipped protocols: what the sweep in RESULTS.md compared.
CANDIDATES = {
    **config.PROTOCOLS,
    "laptop-sgd": dataclasses.replace(config.LAPTOP, name="laptop-sgd", optimizer="sgd", lr=0.03),
    "laptop-500": dataclasses.replace(config.LAPTOP, name="laptop-500", steps=500, patch_steps=500),
    "laptop-head8": dataclasses.replace(config.LAPTOP, name="laptop-head8", head_depth=8),
    # twice the side, everything that is a size doubled with it (scars: the same scar/image ratio)
    "laptop-128px": dataclasses.replace(
        config.LAPTOP,
        name="laptop-128px",
        image_size=128,
        scar_reference=256,
        patch_size=64,
        dense_patch=32,
        dense_stride=8,
    ),
}


def run_one(s: config.Settings, root: Path, category: str, *, patch: bool, models: Path) -> dict:
    """One candidate on one category. Models go through the course cache (``models``), so the
    notebooks and ``cutpaste demo`` reuse what the sweep trained; ``train_s`` is the time measured
    when the model was trained (also for a model loaded from the cache)."""
    tr = load_cache(root, category, "train", s.image_size)
    te = load_cache(root, category, "test", s.image_size)
    row = {"candidate": s.name, "category": category, "settings": s.as_dict()}
    baseline = evaluate(untrained_model(s), tr, te, device="cpu")
    image = course_model(tr, "image", settings=s, device="cpu", root=models, progress=False)
    row.update(
        train_s=image.train_seconds,
        proxy_accuracy=proxy_accuracy(image.model, tr, image.config, device="cpu"),
        image_auroc=evaluate(image.model, tr, te, device="cpu").image_auroc,
        untrained_auroc=baseline.image_auroc,
    )
    if patch and te.masks is not None:
        pm = course_model(tr, "patch", settings=s, device="cpu", root=models, progress=False)
        kw = dict(patch_size=s.dense_patch, stride=s.dense_stride, device="cpu")
        m = localize(pm.model, tr, te, **kw).metrics
        u = localize(untrained_model(s), tr, te, **kw).metrics
        row.update(
            patch_train_s=pm.train_seconds,
            pixel_auroc=m["pixel_auroc"],
            aupro=m["aupro"],
            untrained_pixel=u["pixel_auroc"],
        )
    return row


def table(rows: list[dict]) -> str:
    lines = [
        "| candidate | category | train s | proxy acc | image AUROC | untrained | patch s | pixel AUROC | AUPRO | untrained pixel |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def f(r, k, fmt=".3f"):
        return format(r[k], fmt) if k in r else "–"

    for r in rows:
        lines.append(
            f"| {r['candidate']} | {r['category']} | {f(r, 'train_s', '.0f')} | {f(r, 'proxy_accuracy')} | "
            f"{f(r, 'image_auroc')} | {f(r, 'untrained_auroc')} | {f(r, 'patch_train_s', '.0f')} | "
            f"{f(r, 'pixel_auroc')} | {f(r, 'aupro')} | {f(r, 'untrained_pixel')} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--categories", nargs="+", default=None)
    p.add_argument("--candidates", nargs="+", default=["laptop"], choices=sorted(CANDIDATES))
    p.add_argument("--patch", action="store_true", help="also train and score the patch model")
    p.add_argument("--out", type=Path, default=Path("outputs/laptop_protocol.jsonl"))
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument(
        "--models", type=Path, default=None, help="course-model cache (default: runs/course)"
    )
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    categories = a.categories or list_categories(a.data)
    done = []
    if a.out.is_file():
        done = [json.loads(line) for line in a.out.read_text().splitlines() if line.strip()]
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for name in a.candidates:
        for cat in categories:
            if any(r["candidate"] == name and r["category"] == cat for r in done):
                continue
            row = run_one(
                CANDIDATES[name], a.data, cat, patch=a.patch, models=a.models or models_root()
            )
            done.append(row)
            with a.out.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(table([row]).splitlines()[-1], flush=True)
    print(f"\n{torch.get_num_threads()} threads, {os.cpu_count()} cores, torch {torch.__version__}")
    print(
        table([r for r in done if r["candidate"] in a.candidates and r["category"] in categories])
    )


if __name__ == "__main__":
    main()
