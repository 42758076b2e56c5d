"""``cutpaste demo``: the whole pipeline on the embedded synthetic data, small CPU settings.

What it runs, per synthetic category (texture, regular texture, aligned object):

1. ``cutpaste synth`` data (skipped when already there), a summary of its counts;
2. a 3-way image model and a 3-way patch model, trained from scratch through the resumable
   ``reproduce`` grid (its CSV and Markdown tables are the demo's numbers);
3. ``cutpaste evaluate`` on the image model: Gaussian density on clean train embeddings, image AUROC,
   ROC / score histograms / t-SNE figures; the proxy-task accuracy on fresh augmented batches;
4. ``cutpaste localize`` on the patch model: heatmap gallery, pixel AUROC, AUPRO.

The settings are far below the paper's (65,536 steps at 256 px): the demo shows that every stage
works and where its outputs go, in a few minutes on two CPU cores. Its numbers are for the
synthetic data only and are not comparable with the paper's MVTec AD tables.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cutpaste_lib.commands import _args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out",
        type=_args.out_dir,
        default=Path("outputs/demo"),
        help="output folder (default outputs/demo)",
    )
    parser.add_argument(
        "--data",
        type=_args.existing_dir,
        default=None,
        help="dataset root in MVTec layout (default: the fast synthetic set, generated "
        "under data/ on first use)",
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        default=None,
        metavar="NAME",
        help="categories to run (default: all synthetic categories)",
    )
    parser.add_argument(
        "--steps",
        type=_args.positive_int,
        default=80,
        help="training steps per model (paper: 65,536; the default keeps the demo to "
        "about five minutes on 2 CPU cores)",
    )
    parser.add_argument(
        "--batch-size",
        type=_args.positive_int,
        default=8,
        help="original images per step (3-way: 3x as many classifier inputs)",
    )
    parser.add_argument(
        "--image-size", type=_args.positive_int, default=64, help="working resolution (paper: 256)"
    )
    parser.add_argument("--seeds", type=_args.positive_int, default=1, help="seeds per model")
    _args.add_device(parser)


def _dataset_summary(root: Path, categories: list[str]) -> str:
    from cutpaste_lib.data import load_split

    lines = [f"{'category':<16} {'train':>5} {'test good':>9} {'defective':>9}  defect types"]
    for cat in categories:
        train, test = load_split(root, cat, "train"), load_split(root, cat, "test")
        bad = [s for s in test if s.label == 1]
        types = sorted({s.defect for s in bad})
        lines.append(
            f"{cat:<16} {len(train):>5} {len(test) - len(bad):>9} {len(bad):>9}  {', '.join(types)}"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib import cli, io
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.data import (
        SYNTHETIC_CATEGORIES,
        ensure_synthetic,
        list_categories,
        load_cache,
    )
    from cutpaste_lib.reproduce import GridSettings, run_grid, write_tables
    from cutpaste_lib.train import load_checkpoint, proxy_confusion

    start = time.perf_counter()
    device = str(resolve_device(args.device))
    root = Path(args.data) if args.data else ensure_synthetic(fast=True)
    available = list_categories(root)
    categories = args.categories or [c for c in SYNTHETIC_CATEGORIES if c in available] or available
    unknown = sorted(set(categories) - set(available))
    if unknown:
        raise cli.UserError(
            f"--categories {' '.join(unknown)} not found under {root}; found: {', '.join(available)}"
        )
    print(f"== data: {root}\n{_dataset_summary(root, categories)}\n")

    out = Path(args.out)
    # Paper: 64 px training crops of the 256 px image, dense 32 px patches at stride 4. At the demo's
    # small resolution the crop keeps half the image side (as in fast mode) and the stride stays 4.
    crop = max(8, args.image_size // 2)
    settings = GridSettings(
        steps=args.steps,
        batch_size=args.batch_size,
        image_size=args.image_size,
        patch_size=crop,
        dense_patch=crop // 2,
        dense_stride=4,
    )
    print(
        f"== training 3-way image and patch models ({args.steps} steps, batch {args.batch_size}, "
        f"{args.image_size} px, from scratch, device {device})"
    )
    grid = run_grid(
        root,
        out / "reproduce",
        categories=categories,
        variants=("3way",),
        seeds=range(args.seeds),
        settings=settings,
        patch=("3way",),
        device=device,
        progress=True,
    )
    tables = write_tables(grid.csv, out / "reproduce")

    summary = []
    for cat in categories:
        job = out / "reproduce" / "jobs" / cat
        image_ckpt = job / "3way-image" / "seed0" / "checkpoint.pt"
        patch_ckpt = job / "3way-patch" / "seed0" / "checkpoint.pt"
        print(f"\n== {cat}: evaluate (image model)")
        code = cli.main(
            [
                "evaluate",
                "--checkpoint",
                str(image_ckpt),
                "--data",
                str(root),
                "--category",
                cat,
                "--out",
                str(out / cat / "evaluate"),
                "--device",
                device,
            ]
        )
        if code:
            return code
        print(f"== {cat}: localize (patch model)")
        code = cli.main(
            [
                "localize",
                "--checkpoint",
                str(patch_ckpt),
                "--data",
                str(root),
                "--category",
                cat,
                "--out",
                str(out / cat / "localize"),
                "--device",
                device,
                "--patch-size",
                str(settings.dense_patch),
                "--stride",
                str(settings.dense_stride),
            ]
        )
        if code:
            return code
        model, _ = load_checkpoint(image_ckpt, device=device)
        confusion = proxy_confusion(
            model,
            load_cache(root, cat, "train", args.image_size),
            "3way",
            batch_size=args.batch_size,
            device=device,
        )
        image_metrics = json.loads((out / cat / "evaluate" / "metrics.json").read_text())
        pixel_metrics = json.loads((out / cat / "localize" / "metrics.json").read_text())
        summary.append(
            {
                "category": cat,
                "proxy_accuracy": float(confusion.trace() / confusion.sum()),
                "image_auroc": image_metrics["image_auroc"],
                "pixel_auroc": pixel_metrics["pixel_auroc"],
                "aupro": pixel_metrics["aupro"],
                "patch_image_auroc": pixel_metrics.get("image_auroc"),
            }
        )

    header = "| category | 3-way proxy accuracy | image AUROC | pixel AUROC | AUPRO |\n|---|---:|---:|---:|---:|"
    rows = [
        f"| {r['category']} | {r['proxy_accuracy']:.3f} | {r['image_auroc']:.3f} | {r['pixel_auroc']:.3f} | "
        f"{r['aupro']:.3f} |"
        for r in summary
    ]
    note = (
        f"Synthetic data ({root}), {args.steps} steps, batch {args.batch_size}, {args.image_size} px, "
        f"ResNet-18 from scratch, seed 0, device {device}. Not comparable with the paper's MVTec AD numbers."
    )
    text = "\n".join([header, *rows, "", note])
    io.write_text(out / "summary.md", text + "\n")
    io.write_json(out / "summary.json", {"rows": summary, "note": note})
    print(f"\n== summary (also in {out / 'summary.md'})\n{text}")
    print(
        f"\nTables next to the paper: {tables}\nFigures: {out}/<category>/evaluate/*.png, "
        f"{out}/<category>/localize/heatmaps.png\nDone in {time.perf_counter() - start:.0f} s."
    )
    return 0
