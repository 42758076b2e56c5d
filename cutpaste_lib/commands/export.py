"""``cutpaste export``: a detector as one TorchScript or ONNX graph (image -> score, heatmap).

The density is folded into the graph (:mod:`cutpaste_lib.detector.export`); the graph takes float
images in [0, 1] at the detector's size. ``--verify`` scores sample images (the given ``--images``,
else random ones) with the eager detector and the exported file and fails above the tolerance;
the exported file is only kept when it passes.

Example:
    cutpaste export --detector runs/carpet-detector.pt --format onnx --out runs/carpet.onnx --verify
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cutpaste_lib.commands import _args, _detector_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutpaste_lib.detector.export import DEFAULT_RTOL, FORMATS

    parser.add_argument(
        "--detector", type=_args.existing_file, required=True, help="detector file to export"
    )
    parser.add_argument("--format", choices=FORMATS, default="torchscript", help="graph format")
    parser.add_argument(
        "--out",
        type=_detector_args.new_file,
        default=None,
        help="output file (default: the detector's name with .torchscript.pt or .onnx)",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="compare exported and eager scores (and heatmaps) on sample images",
    )
    parser.add_argument(
        "--images",
        nargs="+",
        default=None,
        metavar="PATH",
        help="image files/folders for --verify (default: 8 random images)",
    )
    parser.add_argument(
        "--rtol",
        type=_args.positive_float,
        default=DEFAULT_RTOL,
        help=f"largest relative difference --verify accepts (default {DEFAULT_RTOL:g})",
    )


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from cutpaste_lib.cli import UserError
    from cutpaste_lib.detector import Detector, expand_paths, load_images
    from cutpaste_lib.detector.export import export, verify

    if args.images and not args.verify:
        raise UserError("--images are the samples of --verify: add --verify")
    detector = Detector.load(args.detector)
    suffix = ".onnx" if args.format == "onnx" else ".torchscript.pt"
    out = args.out or Path(args.detector).with_suffix(suffix)
    if args.verify:
        if args.images:
            files, problems = expand_paths(args.images)
            batch = load_images(files, detector.image_size)
            problems += batch.failed
            if problems:
                raise UserError("; ".join(f"cannot read {p}: {why}" for p, why in problems))
            images = batch.images
        else:
            g = torch.Generator().manual_seed(0)
            images = torch.randint(
                0, 256, (8, 3, *detector.image_size), generator=g, dtype=torch.uint8
            )
    tmp = out.with_name(f".{out.name}.verify")
    export(detector, tmp if args.verify else out, args.format)
    if args.verify:
        try:
            report = verify(detector, tmp, args.format, images, rtol=args.rtol)
        except Exception:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, out)
        maps = f", heatmaps {report['max_map_error']:.2e}" if "max_map_error" in report else ""
        print(
            f"verified on {report['images']} images: largest relative score difference "
            f"{report['max_relative_score_error']:.2e}{maps} (tolerance {args.rtol:g}); "
            f"decisions agree: {report['decisions_agree']}"
        )
    h, w = detector.image_size
    outputs = "score (B,) and heatmap (B, H, W)" if detector.kind == "patch" else "score (B,)"
    print(f"wrote {out}: input float images in [0, 1], shape (B, 3, {h}, {w}); output {outputs}")
    return 0
