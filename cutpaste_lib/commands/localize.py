"""``cutpaste localize``: dense patch scores of a patch model, heatmaps, pixel AUROC and AUPRO.

Example:
    cutpaste train --data data/mvtec --category bottle --patch --out runs/bottle-patch
    cutpaste localize --checkpoint runs/bottle-patch/checkpoint.pt --data data/mvtec --category bottle --out outputs/loc/bottle
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from cutpaste_lib.commands import _args, _detector_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _args.add_model_inputs(
        parser,
        checkpoint_help="checkpoint.pt of a patch model (cutpaste train --patch)",
        data_help="dataset root in MVTec layout (ROOT/CATEGORY/train/good, test/*, ground_truth/*)",
        category_help="category to localize, e.g. bottle",
        out_help="output folder for metrics.json and figures (default outputs/localize/CATEGORY)",
    )
    parser.add_argument(
        "--patch-size",
        type=_args.positive_int,
        default=None,
        help="dense patch side at test time (paper A.5: 32 at 256 px; default: half the "
        "model's training crop, else image_size / 8)",
    )
    parser.add_argument(
        "--stride",
        type=_args.positive_int,
        default=4,
        help="step between patches (paper: 4, giving a 57x57 grid at 256 px)",
    )
    _args.add_patch_density(parser)
    parser.add_argument(
        "--upsample",
        choices=("average", "plain"),
        default="average",
        help="patch scores to pixels by a Gaussian transposed convolution (sigma = patch/4): "
        "'average' divides by the kernel coverage, so each pixel gets the weighted mean of the "
        "patches that contain it (default, our choice: the border is not darkened); 'plain' is "
        "the paper's form with zero bias, which fades toward the image border",
    )
    _args.add_device(parser)
    parser.add_argument(
        "--max-patches",
        type=_args.positive_int,
        default=1024,
        help="patches per forward pass (lower it if memory runs out)",
    )
    parser.add_argument(
        "--per-defect", type=_args.positive_int, default=2, help="gallery rows per defect type"
    )
    _detector_args.add_save_detector(parser)


def default_patch_size(config: dict) -> int:
    """Half the training crop (paper: 64 -> 32), else an eighth of the image (256 -> 32)."""
    crop = config.get("patch_size")
    size = int(config.get("image_size", 256))
    return max(2, int(crop) // 2) if crop else max(2, size // 8)


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib import io
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.detector import DETECTOR_FOLDS
    from cutpaste_lib.localize import MIN_TRAIN_IMAGES, localize, resolve_density_mode
    from cutpaste_lib.train import load_checkpoint
    from cutpaste_lib.viz.common import save_figure
    from cutpaste_lib.viz.heatmaps import heatmap_gallery, pick_examples, pixel_curves_figure

    _detector_args.check_detector_flags(args)
    device = resolve_device(args.device)
    model, config = load_checkpoint(args.checkpoint, device=device)
    image_size = int(config.get("image_size", 256))
    patch = args.patch_size or default_patch_size(config)
    if patch > image_size:
        raise UserError(f"--patch-size {patch} is larger than the model's image size {image_size}")
    if args.stride > image_size - patch:
        raise UserError(
            f"--stride {args.stride} with {patch} px patches on {image_size} px images gives a single "
            f"patch: no map to localize with; use a stride of at most {max(1, image_size - patch)} "
            "(paper: 4)"
        )
    if not config.get("patch_size"):
        print(
            "note: this checkpoint was trained on whole images, not patches; localization expects a "
            "patch model (cutpaste train --patch)"
        )
    train = load_cache(args.data, args.category, "train", image_size, device=device)
    mode = resolve_density_mode(args.density, args.category)
    _args.require_train_images(
        train, MIN_TRAIN_IMAGES[mode], args.data, args.category, f"the {mode} patch Gaussian"
    )
    test = load_cache(args.data, args.category, "test", image_size, device=device)
    start = time.perf_counter()
    result = localize(
        model,
        train,
        test,
        patch_size=patch,
        stride=args.stride,
        density=args.density,
        normalize=args.upsample == "average",
        max_patches=args.max_patches,
        device=device,
        folds=DETECTOR_FOLDS if args.save_detector is not None else 2,
    )
    seconds = time.perf_counter() - start
    if "pixel_auroc" not in result.metrics:
        raise UserError(
            f"the test split of {args.category!r} under {args.data} has no defect pixels in its masks "
            "(or only defects): pixel metrics are undefined"
        )
    out = args.out or Path("outputs") / "localize" / args.category
    pd = result.patch_density
    metrics = {
        **result.metrics,
        "category": args.category,
        "checkpoint": str(args.checkpoint),
        "image_size": image_size,
        "patch_size": patch,
        "stride": args.stride,
        "grid": list(pd.grid.shape),
        "density": pd.mode,
        "upsample": args.upsample,
        "num_train": len(train),
        "num_test": len(test),
        "heatmap_scale": pd.scale.to_dict(),
        "seconds": round(seconds, 2),
        "device": str(device),
    }
    images, masks = test.images.cpu(), test.masks.cpu()
    picked = pick_examples(test.defects, args.per_defect, scores=result.image_scores)
    gallery = heatmap_gallery(
        images,
        masks,
        result.maps,
        test.defects,
        scale=pd.scale,
        indices=picked,
        title=f"{args.category}: patch {patch}, stride {args.stride}, {pd.mode} density",
    )
    curves = pixel_curves_figure(result.maps, masks, label=args.category)
    detector = None
    if args.save_detector is not None:
        from cutpaste_lib.detector import DEFAULT_FPR, detector_from_localization

        detector = detector_from_localization(
            model,
            result,
            fpr=args.fpr or DEFAULT_FPR,
            test_masks=masks,
            test_labels=test.labels.cpu(),
            info=_detector_args.provenance(args, config, image_size),
        )
        metrics["detector"] = {
            "path": str(Path(args.save_detector).resolve()),
            "threshold": detector.threshold.to_dict(),
            "pixel_threshold": detector.pixel_threshold.to_dict(),
            "labelled": detector.info["labelled"],
        }
    # everything is computed; now write (each file atomically)
    if detector is not None:
        detector.save(args.save_detector)
    save_figure(gallery, out / "heatmaps.png", dpi=90)
    save_figure(curves, out / "pixel_curves.png", dpi=90)
    io.write_json(out / "metrics.json", metrics)
    image_auroc = (
        f"{metrics['image_auroc']:.4f}"
        if "image_auroc" in metrics
        else "n/a (the test split needs good and defective images)"
    )
    print(
        f"{args.category}: pixel AUROC {metrics['pixel_auroc']:.4f}  AUPRO {metrics['aupro']:.4f}  "
        f"pixel F1-max {metrics['pixel_f1_max']:.4f}  image AUROC (max patch score) "
        f"{image_auroc}  [{pd.mode}, grid {pd.grid.shape}, {seconds:.1f} s]"
    )
    print(f"wrote {out / 'metrics.json'}, {out / 'heatmaps.png'}, {out / 'pixel_curves.png'}")
    if detector is not None:
        print("\n".join(_detector_args.threshold_lines(detector)))
        print(f"wrote detector {args.save_detector}")
    return 0
