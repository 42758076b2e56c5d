"""``cutpaste demo``: the whole pipeline on the embedded synthetic data, under the laptop protocol.

What it runs, for the course's story category ``synth_carpet`` by default (``--categories all``: the
three synthetic categories, texture, regular texture and aligned object, about three times as long):

1. ``cutpaste synth`` data (skipped when already there), a summary of its counts;
2. the category's two **course models** (:mod:`cutpaste_lib.course`): a 3-way image model and a
   3-way patch model, trained from scratch once and stored, so the notebooks and a second demo
   load them instead of training again;
3. ``cutpaste evaluate`` on the image model: Gaussian density on clean train embeddings, image AUROC,
   ROC / score histograms / t-SNE figures; the same for the untrained encoder (the baseline every
   number is read against); the proxy-task accuracy on fresh augmented batches;
4. ``cutpaste localize`` on the patch model: heatmap gallery, pixel AUROC, AUPRO.

The protocol is ``config.settings()`` (``laptop`` unless ``CUTPASTE_PROTOCOL`` or ``--protocol``
says otherwise); ``--steps``, ``--batch-size`` and ``--image-size`` override it. Its numbers are for
the synthetic data only and are not comparable with the paper's MVTec AD tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import subprocess
import time
from pathlib import Path

from cutpaste_lib.commands import _args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutpaste_lib.config import PROTOCOLS

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
        help="dataset root in MVTec layout (default: the protocol's synthetic set, generated "
        "under data/ on first use)",
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        default=None,
        metavar="NAME",
        help="categories to run, or 'all' (default: synth_carpet, the course's story category; "
        "all three synthetic categories take about 3x as long)",
    )
    parser.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default=None,
        help="settings to train with (default: CUTPASTE_PROTOCOL, else laptop; see README)",
    )
    parser.add_argument(
        "--steps",
        type=_args.positive_int,
        default=None,
        help="training steps of both models (default: the protocol's)",
    )
    parser.add_argument(
        "--batch-size",
        type=_args.positive_int,
        default=None,
        help="original images per step of both models (3-way: 3x as many classifier inputs; "
        "default: the protocol's)",
    )
    parser.add_argument(
        "--image-size",
        type=_args.positive_int,
        default=None,
        help="working resolution (default: the protocol's; paper: 256)",
    )
    parser.add_argument(
        "--models",
        type=Path,
        default=None,
        help="where course models are stored (default: CUTPASTE_MODELS, else runs/course)",
    )
    _args.add_device(parser)


def demo_settings(args: argparse.Namespace):
    """The protocol's settings with the flags' overrides (a patch crop of half the image side)."""
    from cutpaste_lib import cli, config

    try:
        s = config.settings(protocol_name=args.protocol)
    except ValueError as exc:  # CUTPASTE_PROTOCOL names no protocol
        raise cli.UserError(str(exc)) from None
    changes = {}
    if args.steps is not None:
        changes.update(steps=args.steps, patch_steps=args.steps)
    if args.batch_size is not None:
        changes.update(batch_size=args.batch_size, patch_batch_size=args.batch_size)
    if args.image_size is not None:
        crop = max(8, args.image_size // 2)
        changes.update(image_size=args.image_size, patch_size=crop, dense_patch=crop // 2)
    return dataclasses.replace(s, **changes) if changes else s


def _commit() -> str:
    from cutpaste_lib.config import REPO_ROOT

    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib import cli, io
    from cutpaste_lib.commands._demo_data import choose_categories, dataset_summary
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.course import course_model, untrained_model
    from cutpaste_lib.data import (
        ensure_synthetic,
        list_categories,
        load_cache,
    )
    from cutpaste_lib.evaluate import evaluate
    from cutpaste_lib.train import proxy_accuracy

    start = time.perf_counter()
    device = str(resolve_device(args.device))
    s = demo_settings(args)
    root = Path(args.data) if args.data else ensure_synthetic(protocol_name=s.name)
    categories = choose_categories(args.categories, list_categories(root), root)
    print(f"== data: {root}\n{dataset_summary(root, categories)}\n")
    out = Path(args.out)
    summary = []
    for cat in categories:
        train_cache = load_cache(root, cat, "train", s.image_size)
        test_cache = load_cache(root, cat, "test", s.image_size)
        print(f"== {cat}: course models ({s.name} protocol)")
        image = course_model(train_cache, "image", settings=s, device=device, root=args.models)
        patch = course_model(train_cache, "patch", settings=s, device=device, root=args.models)
        print(f"== {cat}: evaluate (image model)")
        shared = ["--data", str(root), "--category", cat, "--device", device]
        code = cli.main(
            ["evaluate", "--checkpoint", str(image.folder / "checkpoint.pt"), *shared]
            + ["--out", str(out / cat / "evaluate")]
        )
        if code:
            return code
        print(f"== {cat}: localize (patch model)")
        code = cli.main(
            ["localize", "--checkpoint", str(patch.folder / "checkpoint.pt"), *shared]
            + ["--out", str(out / cat / "localize"), "--patch-size", str(s.dense_patch)]
            + ["--stride", str(s.dense_stride)]
        )
        if code:
            return code
        baseline = evaluate(untrained_model(s), train_cache, test_cache, device=device)
        image_metrics = json.loads((out / cat / "evaluate" / "metrics.json").read_text())
        pixel_metrics = json.loads((out / cat / "localize" / "metrics.json").read_text())
        summary.append(
            {
                "category": cat,
                "proxy_accuracy": proxy_accuracy(
                    image.model, train_cache, image.config, device=device
                ),
                "image_auroc": image_metrics["image_auroc"],
                "untrained_image_auroc": baseline.image_auroc,
                "pixel_auroc": pixel_metrics["pixel_auroc"],
                "aupro": pixel_metrics["aupro"],
                "patch_image_auroc": pixel_metrics.get("image_auroc"),
                "image_model": str(image.folder),
                "patch_model": str(patch.folder),
                "train_seconds": {"image": image.train_seconds, "patch": patch.train_seconds},
            }
        )

    header = (
        "| category | 3-way proxy accuracy | image AUROC | untrained encoder | pixel AUROC | AUPRO |\n"
        "|---|---:|---:|---:|---:|---:|"
    )
    rows = [
        f"| {r['category']} | {r['proxy_accuracy']:.3f} | {r['image_auroc']:.3f} | "
        f"{r['untrained_image_auroc']:.3f} | {r['pixel_auroc']:.3f} | {r['aupro']:.3f} |"
        for r in summary
    ]
    mean = {
        k: sum(r[k] for r in summary) / len(summary)
        for k in ("proxy_accuracy", "image_auroc", "untrained_image_auroc", "pixel_auroc", "aupro")
    }
    rows.append(
        f"| **mean** | {mean['proxy_accuracy']:.3f} | {mean['image_auroc']:.3f} | "
        f"{mean['untrained_image_auroc']:.3f} | {mean['pixel_auroc']:.3f} | {mean['aupro']:.3f} |"
    )
    note = (
        f"Synthetic data ({root}), {s.name} protocol: {s.encoder} from scratch, head {s.head_depth} x 512, "
        f"{s.image_size} px, batch {s.batch_size}, {s.optimizer.upper()} lr {s.lr:g}, {s.steps} steps (patch model: "
        f"{s.patch_steps} steps of {s.patch_batch_size} crops of {s.patch_size} px), scars sized for "
        f"{s.scar_reference} px, seed 0; device {device} "
        f"({platform.machine()}), commit {_commit()}, {time.strftime('%Y-%m-%d')}. "
        "Not comparable with the paper's MVTec AD numbers."
    )
    text = "\n".join([header, *rows, "", note])
    io.write_text(out / "summary.md", text + "\n")
    io.write_json(out / "summary.json", {"rows": summary, "mean": mean, "note": note})
    print(f"\n== summary (also in {out / 'summary.md'})\n{text}")
    print(
        f"\nFigures: {out}/<category>/evaluate/*.png, {out}/<category>/localize/heatmaps.png\n"
        f"Done in {time.perf_counter() - start:.0f} s."
    )
    return 0
