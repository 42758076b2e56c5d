"""Flags shared by the commands that write or use a detector (``--save-detector``, ``--fpr``),
and the lines they print about its threshold."""

from __future__ import annotations

import argparse
from pathlib import Path

from cutpaste_lib.commands._args import out_dir


def rate(text: str) -> float:
    """A false-positive rate strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), got {text!r}") from None
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a rate in (0, 1), e.g. 0.01, got {text!r}")
    return value


def new_file(text: str) -> Path:
    """An output file: its folder may not exist yet; it must not be a folder."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{path} is a folder; name the detector file, e.g. {path}/detector.pt"
        )
    out_dir(str(path.parent))
    return path


def add_fpr(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--fpr", type=rate, default=None, help=help)


def add_save_detector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--save-detector",
        type=new_file,
        default=None,
        metavar="FILE",
        help="also write a detector (model + fitted density + threshold) for `cutpaste predict`",
    )
    add_fpr(
        parser,
        "false-positive rate on normal images that fixes the detector's threshold "
        "(default 0.01; estimated from cross-fitted train scores)",
    )


def _pct(value: float) -> str:
    return "n/a (nothing flagged)" if value != value else f"{value:.1%}"


def threshold_lines(detector) -> list[str]:
    """What a person should know about a detector's thresholds, one line each."""
    lines = [f"detector: {detector.threshold.describe()}"]
    if detector.pixel_threshold is not None:
        lines.append(f"pixel masks: {detector.pixel_threshold.describe()}")
    if detector.threshold.warning:
        lines.append(f"warning: {detector.threshold.warning}")
    labelled = detector.info.get("labelled", {})
    for key, name in (
        ("at_fpr_threshold", "at the FPR threshold"),
        ("f1_max", "at the F1-max threshold (fitted on the test split: optimistic)"),
    ):
        r = labelled.get(key)
        if r:
            lines.append(
                f"test split {name} {r['threshold']:.6g}: false-positive rate {r['fpr']:.1%}, "
                f"recall {r['recall']:.1%}, precision {_pct(r['precision'])}"
            )
    return lines


def check_detector_flags(args) -> None:
    """Refuse, before any work, what ``--save-detector``/``--fpr`` cannot mean together."""
    from cutpaste_lib.cli import UserError

    if args.fpr is not None and args.save_detector is None:
        raise UserError("--fpr sets the threshold of a detector: add --save-detector FILE")
    if args.save_detector is not None and getattr(args, "density", None) == "kde":
        raise UserError(
            "--save-detector needs a Gaussian density: use --density ledoit_wolf (default) or ridge"
        )


def provenance(args, config: dict, size: int, **source) -> dict:
    """Where a detector came from (stored in it, shown by ``cutpaste predict``): the checkpoint,
    its training config, the image size and command line, and ``source`` (the images it was
    fitted on; default ``--data`` and ``--category``)."""
    import json

    if not source:
        source = {"data": str(Path(args.data).resolve()), "category": args.category}
    return {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        **source,
        "image_size": int(size),
        "command": " ".join(["cutpaste", *getattr(args, "argv", [])]),
        "train_config": json.loads(json.dumps(config, default=str)),
    }
