"""``cutpaste gradcam``: Grad-CAM maps that explain the anomaly score, with pixel AUROC and AUPRO.

Fits the Gaussian density on the clean train images (as ``cutpaste evaluate`` does), computes one
Grad-CAM map per test image for the chosen target and layer, and writes ``OUT/overlays.png`` (a few
images per defect type), ``OUT/overlays/<defect>.png`` (every test image of that type) and
``OUT/metrics.json`` (``pixel_auroc`` and ``aupro`` as fractions in [0, 1], plus the settings).
``metrics.json`` is written last: if it exists, the run finished. The paper reports 88.3 pixel AUROC
for Grad-CAM on the anomaly score of the image-level 3-way model (96.0 for the patch model).

Example:
    cutpaste gradcam --checkpoint runs/synth_grid/checkpoint.pt --data data/synthetic --category synth_grid
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cutpaste_lib.commands import _args


def target_spec(text: str) -> str:
    """``--target``: ``score``, ``distance`` or ``logit:K``."""
    value = text.strip().lower()
    if value in ("score", "distance"):
        return value
    head, _, tail = value.partition(":")
    if head == "logit" and tail.isdigit():
        return f"logit:{int(tail)}"
    raise argparse.ArgumentTypeError(
        f"expected 'score', 'distance' or 'logit:K' (K = class index, 3-way: 0 normal, 1 cutpaste, 2 scar), got {text!r}"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_inputs(
        parser,
        checkpoint_help="checkpoint.pt written by `cutpaste train` (an image-level model)",
        data_help="dataset root in MVTec layout (ROOT/CATEGORY/train/good, test/*, ground_truth/*)",
        category_help="category folder under --data, e.g. bottle",
        out_help="output folder (default: outputs/gradcam/CATEGORY)",
    )
    parser.add_argument(
        "--layer",
        default=None,
        help="dotted name of the layer to explain (default: the encoder's last stage, "
        "layer4 for ResNets: 8x8 at 256 px for ResNet-18, layer3 is twice as fine "
        "but less semantic; features.N, the last block, for EfficientNet)",
    )
    parser.add_argument(
        "--target",
        type=target_spec,
        default="score",
        help="score (default, as in the paper: the squared Mahalanobis distance under the "
        "Gaussian fitted on clean train images), distance (its square root) or "
        "logit:K (a proxy-class logit)",
    )
    _args.add_device(parser)
    parser.add_argument(
        "--batch-size",
        type=_args.positive_int,
        default=32,
        help="images per forward/backward pass (default 32; lower it if memory runs out)",
    )
    parser.add_argument(
        "--image-size",
        type=_args.positive_int,
        default=None,
        help="resize images to this side (default: the checkpoint's training size)",
    )
    parser.add_argument(
        "--per-defect",
        type=_args.positive_int,
        default=2,
        help="rows per defect type in overlays.png (default 2)",
    )


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib import io
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.density import MIN_TRAIN_IMAGES, GaussianDensity
    from cutpaste_lib.evaluate import embed
    from cutpaste_lib.gradcam import (
        default_layer,
        gradcam_maps,
        gradcam_metrics,
        parse_target,
        resolve_layer,
    )
    from cutpaste_lib.metrics import auroc
    from cutpaste_lib.paper import GRADCAM_PIXEL_AUROC_MEAN
    from cutpaste_lib.train import load_checkpoint
    from cutpaste_lib.viz.common import save_figure
    from cutpaste_lib.viz.gradcam import gradcam_gallery
    from cutpaste_lib.viz.heatmaps import pick_examples

    device = resolve_device(args.device)
    model, config = load_checkpoint(args.checkpoint, device=device)
    # fail on a bad name before any heavy work
    layer, _ = resolve_layer(model, args.layer or default_layer(model))
    num_classes = int(config.get("model", {}).get("num_classes", model.classifier.out_features))
    if args.target.startswith("logit:") and int(args.target[6:]) >= num_classes:
        raise UserError(
            f"--target {args.target}: the model has {num_classes} classes (0..{num_classes - 1})"
        )
    image_size = args.image_size or int(config.get("image_size", 256))
    train = load_cache(args.data, args.category, "train", image_size, device=device)
    _args.require_train_images(
        train, MIN_TRAIN_IMAGES, args.data, args.category, "the Gaussian density"
    )
    test = load_cache(args.data, args.category, "test", image_size, device=device)
    if test.masks is None or not bool(test.masks.any()) or bool(test.masks.all()):
        raise UserError(
            f"the test split of {args.category!r} under {args.data} has no defect pixels in its masks "
            "(or only defects): pixel metrics are undefined"
        )

    start = time.perf_counter()
    density = GaussianDensity().fit(embed(model, train, batch_size=args.batch_size, device=device))
    density.to(device)
    target = parse_target(args.target, density)
    result = gradcam_maps(
        model, test, target, layer=layer, batch_size=args.batch_size, device=device
    )
    seconds = time.perf_counter() - start
    masks = test.masks.cpu()
    metrics = {
        **gradcam_metrics(result.maps, masks),
        "category": args.category,
        "checkpoint": str(args.checkpoint),
        "target": args.target,
        "layer": layer,
        "layer_resolution": list(result.low_res.shape[-2:]),
        "image_size": image_size,
        "num_train": len(train),
        "num_test": len(test),
        "seconds": round(seconds, 2),
        "device": str(device),
        "paper_pixel_auroc": GRADCAM_PIXEL_AUROC_MEAN / 100,
        "note": "maps are raw Grad-CAM values (ReLU, bilinear upsampling), not rescaled per image",
    }
    if args.target == "score":
        metrics["image_auroc"] = auroc(result.scores, test.labels.cpu())

    images = test.images.cpu()
    title = f"{args.category}: Grad-CAM of {args.target} at {layer} ({tuple(result.low_res.shape[-2:])})"
    scale = {"Grad-CAM": float(result.maps.max())}
    figures = {
        "overlays.png": gradcam_gallery(
            images,
            result.maps,
            masks=masks,
            defects=test.defects,
            vmax=scale,
            indices=pick_examples(test.defects, args.per_defect, scores=result.scores),
            title=title,
        ),
    }
    for defect in sorted(set(test.defects)):
        idx = [i for i, d in enumerate(test.defects) if d == defect]
        figures[f"overlays/{defect}.png"] = gradcam_gallery(
            images,
            result.maps,
            masks=masks,
            defects=test.defects,
            indices=idx,
            vmax=scale,
            title=f"{title}: {defect}",
        )
    out = args.out or Path("outputs") / "gradcam" / args.category
    # everything is computed; now write (each file atomically, metrics.json last)
    for name, fig in figures.items():
        save_figure(fig, out / name, dpi=80)
    io.write_json(out / "metrics.json", metrics)
    print(
        f"{args.category}: Grad-CAM ({args.target}, {layer}) pixel AUROC {metrics['pixel_auroc']:.4f}  "
        f"AUPRO {metrics['aupro']:.4f}  [paper, 3-way on MVTec: {GRADCAM_PIXEL_AUROC_MEAN / 100:.3f}; {seconds:.1f} s]"
    )
    print(f"wrote {out / 'metrics.json'} and {len(figures)} figures under {out}")
    return 0
