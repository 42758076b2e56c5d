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
    "fit": "a detector from a checkpoint and a folder of normal images",
    "predict": "score new images with a saved detector: decisions, heatmaps and masks",
    "export": "a detector as one TorchScript or ONNX graph, with a parity check",
    "reproduce": "run the paper's category x variant x seed grid and write the tables",
    "demo": "the whole pipeline on the embedded synthetic data, small settings",
}


class UserError(Exception):
    """An error caused by input the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: lists the commands without importing any of them."""
    commands = "\n".join(f"  {name:<10} {text}" for name, text in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="cutpaste",
        description="CutPaste (Li et al., CVPR 2021): self-supervised anomaly detection and "
        f"localization.\n\ncommands:\n{commands}",
        epilog="Run `cutpaste COMMAND --help` for the flags of one command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", metavar="COMMAND", choices=list(COMMANDS), help="one of the commands above"
    )
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS, metavar="...")
    return parser


def command_parser(name: str) -> tuple[argparse.ArgumentParser, object]:
    """The parser of one command, with its module (imported only now)."""
    module = importlib.import_module(f"cutpaste_lib.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"cutpaste {name}", description=COMMANDS[name])
    module.add_arguments(parser)
    return parser, module


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # no command: the list of commands, as a usage error
        build_parser().print_help(sys.stderr)
        return 2
    top = build_parser().parse_args(argv)
    parser, module = command_parser(top.command)
    args = parser.parse_args(top.args)
    args.command = top.command
    args.argv = argv  # the command line, recorded by commands that write provenance
    from cutpaste_lib.errors import CutPasteError

    try:
        return int(module.run(args) or 0)
    except (UserError, CutPasteError) as exc:
        print(f"cutpaste {top.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file the system refused (permissions, full disk, ...): name it
        where = f": {exc.filename}" if exc.filename else ""
        print(f"cutpaste {top.command}: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
