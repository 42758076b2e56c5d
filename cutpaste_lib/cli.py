"""The ``cutpaste`` command line: a thin shell over :mod:`cutpaste_lib`.

Each subcommand lives in :mod:`cutpaste_lib.commands` and is imported only when used.
Errors the user can fix (missing data, bad checkpoint, bad flag) are printed as one clear
line on stderr with exit status 2; they are never hidden.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, str] = {
    "synth": "generate the synthetic MVTec-layout dataset",
    "download": "download MVTec AD (needs network) or explain how to place it by hand",
    "train": "train a CutPaste model (self-supervised proxy task) on one category",
    "evaluate": "fit the Gaussian density on clean train images and report image AUROC",
    "localize": "dense patch scores, heatmaps, pixel AUROC and AUPRO",
    "gradcam": "Grad-CAM maps that explain the anomaly score, with pixel metrics",
    "reproduce": "run the paper's category x variant x seed grid and write the tables",
    "demo": "the whole pipeline on the embedded synthetic data, small settings",
}


class UserError(Exception):
    """An error caused by input the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cutpaste",
        description="CutPaste (Li et al., CVPR 2021): self-supervised anomaly detection and localization.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=f"cutpaste_lib.commands.{name}")
        try:
            module = importlib.import_module(f"cutpaste_lib.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"cutpaste_lib.commands.{name}":
                raise
            p.set_defaults(_missing=True)
            continue
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_missing", False):
        parser.error(f"command {args.command!r} is not available in this version")
    module = importlib.import_module(args._module)
    from cutpaste_lib.errors import CutPasteError

    try:
        return int(module.run(args) or 0)
    except (UserError, CutPasteError) as exc:
        print(f"cutpaste {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
