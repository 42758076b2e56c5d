"""``cutpaste fit``: a detector from a checkpoint and a folder of normal images (no test split needed).

For your own parts: point ``--normal`` at files or folders of defect-free images (recursive, any
supported format). The Gaussian (image model) or the patch Gaussian(s) (patch model, chosen from
the checkpoint) are fitted on them, the threshold at ``--fpr`` on their ten-fold cross-fitted
scores. Unreadable files are an error that names them: a detector is never fitted on part of what
was asked for.

Example:
    cutpaste fit --checkpoint runs/parts/checkpoint.pt --normal photos/good --out runs/parts/detector.pt
"""

from __future__ import annotations

import argparse

from cutpaste_lib.commands import _args, _detector_args


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        type=_args.existing_file,
        required=True,
        help="checkpoint.pt of cutpaste train",
    )
    parser.add_argument(
        "--normal", nargs="+", required=True, metavar="PATH", help="files/folders of normal images"
    )
    parser.add_argument(
        "--out", type=_detector_args.new_file, required=True, help="the detector file to write"
    )
    _detector_args.add_fpr(parser, "false-positive rate on normal images (default 0.01)")
    _args.add_patch_density(parser, "patch model only: ")
    _args.add_device(parser)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from cutpaste_lib.cli import UserError
    from cutpaste_lib.commands.localize import default_patch_size
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.data import ImageCache
    from cutpaste_lib.detector import DEFAULT_FPR, expand_paths, fit_detector, load_images
    from cutpaste_lib.train import load_checkpoint

    device = resolve_device(args.device)
    model, config = load_checkpoint(args.checkpoint, device=device)
    size = int(config["image_size"])
    files, problems = expand_paths(args.normal)
    batch = load_images(files, (size, size), progress=len(files) > 50)
    problems += batch.failed
    if problems:
        raise UserError("; ".join(f"{p}: {why}" for p, why in problems))
    n = len(batch.paths)
    if n < 6:
        raise UserError(f"--normal gives {n} image(s); a detector needs at least 6 normal images")
    cache = ImageCache(
        images=batch.images.to(device),
        masks=None,
        labels=torch.zeros(n, dtype=torch.int64, device=device),
        defects=["good"] * n,
        paths=batch.paths,
        category=str(config.get("category", "")),
        split="train",
    )
    patch = bool(config.get("patch_size"))
    info = _detector_args.provenance(
        args,
        config,
        size,
        normal=[str(Path(p).resolve()) for p in args.normal],
        normal_images=n,
    )
    try:
        detector = fit_detector(
            model,
            cache,
            kind="patch" if patch else "image",
            fpr=args.fpr or DEFAULT_FPR,
            patch_size=default_patch_size(config) if patch else None,
            density=args.density,
            device=device,
            info=info,
        )
    except ValueError as exc:  # too few images for a per-location density, and the like
        raise UserError(str(exc)) from exc
    detector.save(args.out)
    print("\n".join(_detector_args.threshold_lines(detector)))
    print(f"wrote {detector.kind} detector {args.out} ({n} normal images, {size} px)")
    return 0
