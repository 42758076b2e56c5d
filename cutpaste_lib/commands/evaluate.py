"""``cutpaste evaluate``: fit the Gaussian density on clean train images, report image AUROC.

Writes ``OUT/metrics.json`` (``image_auroc`` as a fraction in [0, 1], per-defect AUROC, image
counts, density settings, the checkpoint path and its training config), ``OUT/scores.csv`` (one
line per test image) and the figures ``roc.png``, ``score_histogram.png``, ``tsne.png``, then
prints a short table. ``metrics.json`` is written last: if it exists, the run finished.

Example:
    cutpaste evaluate --checkpoint runs/synth_grid/checkpoint.pt --data data/synthetic --category synth_grid
"""

from __future__ import annotations

import argparse
import csv
import io as _io
import json
import sys
from pathlib import Path

from cutpaste_lib.commands._args import (
    add_device,
    add_model_inputs,
    non_negative_int,
    positive_int,
    require_train_images,
)
from cutpaste_lib.commands._detector_args import (
    add_save_detector,
    check_detector_flags,
    provenance,
    threshold_lines,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutpaste_lib.density import DENSITY_METHODS

    add_model_inputs(
        parser,
        checkpoint_help="checkpoint.pt written by `cutpaste train`",
        data_help="dataset root in MVTec layout",
        category_help="category folder under --data, e.g. screw",
        out_help="output folder (default: outputs/evaluate/CATEGORY)",
    )
    add_device(parser, "cpu, cuda, cuda:N or auto (default)")
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="images per forward pass (default 64)"
    )
    parser.add_argument(
        "--density",
        choices=DENSITY_METHODS,
        default="ledoit_wolf",
        help="ledoit_wolf (default: shrinkage, safe with few images), ridge, empirical "
        "(needs more images than feature dimensions) or kde (for comparison)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=None,
        help="resize images to this side (default: the checkpoint's training size)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seed of the CutPaste/Scar views and t-SNE in the figure (default 0)",
    )
    parser.add_argument(
        "--tsne-images",
        type=non_negative_int,
        default=200,
        help="train images (and as many CutPaste and Scar views) in the t-SNE figure; "
        "0 skips t-SNE (default 200)",
    )
    add_save_detector(parser)


def _scores_csv(result) -> str:
    buf = _io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["path", "label", "defect", "score"])
    paths = result.test.paths or ("",) * len(result.test)
    for path, label, defect, score in zip(
        paths, result.labels.tolist(), result.defects, result.scores.tolist()
    ):
        writer.writerow([str(path), label, defect, f"{score:.10g}"])
    return buf.getvalue()


def _tsne_figure(model, train_cache, result, *, n: int, seed: int, batch_size: int, device):
    from cutpaste_lib.evaluate import embed_augmented, tsne_points
    from cutpaste_lib.viz.density import plot_tsne

    subset = train_cache.subset(list(range(min(n, len(train_cache)))))
    test = result.test
    groups = {
        "train": result.train.features[: len(subset)],
        "test good": test.features[test.labels == 0],
        "test defective": test.features[test.labels != 0],
        "cutpaste": embed_augmented(
            model, subset, "cutpaste", seed=seed, batch_size=batch_size, device=device
        ).features,
        "scar": embed_augmented(
            model, subset, "scar", seed=seed + 1, batch_size=batch_size, device=device
        ).features,
    }
    return plot_tsne(
        tsne_points(groups, seed=seed), title=f"t-SNE of pooled features: {train_cache.category}"
    )


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib import io
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.density import MIN_TRAIN_IMAGES
    from cutpaste_lib.evaluate import evaluate
    from cutpaste_lib.train import load_checkpoint
    from cutpaste_lib.viz.common import save_figure
    from cutpaste_lib.viz.density import plot_roc, plot_score_histograms

    check_detector_flags(args)
    dev = resolve_device(args.device)
    model, config = load_checkpoint(args.checkpoint, device=dev)
    trained_on = config.get("category")
    if trained_on and trained_on != args.category:
        print(
            f"cutpaste evaluate: warning: {args.checkpoint} was trained on {trained_on!r}, "
            f"evaluating on {args.category!r}",
            file=sys.stderr,
        )
    if config.get("patch_size"):
        print(
            f"note: {args.checkpoint} is a patch model (trained on {config['patch_size']} px crops); "
            "`cutpaste localize` is its evaluation, this scores whole images",
            file=sys.stderr,
        )
    size = args.image_size or int(config["image_size"])
    train_cache = load_cache(args.data, args.category, "train", size)
    require_train_images(
        train_cache, MIN_TRAIN_IMAGES, args.data, args.category, "the Gaussian density"
    )
    # image-level only: defective test images need no ground-truth mask (your own data)
    test_cache = load_cache(args.data, args.category, "test", size, masks=False)
    result = evaluate(
        model, train_cache, test_cache, density=args.density, batch_size=args.batch_size, device=dev
    )

    figures = {
        "roc.png": plot_roc(
            {args.category: (result.scores, result.labels)}, title=f"ROC: {args.category}"
        ),
        "score_histogram.png": plot_score_histograms(
            result.scores, result.labels, result.defects, title=f"anomaly scores: {args.category}"
        ),
    }
    if args.tsne_images:
        figures["tsne.png"] = _tsne_figure(
            model,
            train_cache,
            result,
            n=args.tsne_images,
            seed=args.seed,
            batch_size=args.batch_size,
            device=dev,
        )

    detector = None
    if args.save_detector is not None:
        from cutpaste_lib.detector import DEFAULT_FPR, detector_from_evaluation

        detector = detector_from_evaluation(
            model,
            result,
            image_size=size,
            fpr=args.fpr or DEFAULT_FPR,
            info=provenance(args, config, size),
        )

    out = args.out if args.out is not None else Path("outputs") / "evaluate" / args.category
    for name, fig in figures.items():
        save_figure(fig, out / name)
    io.write_text(out / "scores.csv", _scores_csv(result))
    metrics = {
        **result.summary(),
        "category": args.category,
        "data": str(Path(args.data).resolve()),
        "image_size": size,
        "device": str(dev),
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "checkpoint_config": json.loads(json.dumps(config, default=str)),
        "figures": sorted(figures),
    }
    if detector is not None:
        detector.save(args.save_detector)
        metrics["detector"] = {
            "path": str(Path(args.save_detector).resolve()),
            "threshold": detector.threshold.to_dict(),
            "labelled": detector.info["labelled"],
        }
    io.write_json(out / "metrics.json", metrics)

    print(f"{'category':<22} {'defect':<18} {'image AUROC':>11}")
    for defect, value in result.per_defect.items():
        print(f"{args.category:<22} {defect:<18} {value:>11.3f}")
    print(f"{args.category:<22} {'ALL':<18} {result.image_auroc:>11.3f}")
    print(
        f"{len(result.train)} train / {int(result.labels.numel())} test images, density {args.density}; wrote {out}"
    )
    if detector is not None:
        print("\n".join(threshold_lines(detector)))
        print(f"wrote detector {args.save_detector}")
    return 0
