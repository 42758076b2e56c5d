"""``cutpaste download mvtec``: fetch MVTec AD (needs network) or explain how to place it by hand.

Example:
    cutpaste download mvtec --root data/mvtec --category bottle
    export CUTPASTE_DATA=data/mvtec
"""

from __future__ import annotations

import argparse

from cutpaste_lib.commands._args import out_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutpaste_lib.data import MVTEC_CATEGORIES

    parser.add_argument("dataset", choices=["mvtec"], help="only MVTec AD is known")
    parser.add_argument(
        "--root",
        type=out_dir,
        required=True,
        help="where the category folders go (then set CUTPASTE_DATA to it)",
    )
    parser.add_argument(
        "--category",
        choices=MVTEC_CATEGORIES,
        default=None,
        metavar="NAME",
        help="one category (default: the whole 5.3 GB dataset)",
    )
    parser.add_argument(
        "--keep-archive", action="store_true", help="keep the downloaded archive in ROOT/.downloads"
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace categories already in --root"
    )


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib.data.download import LICENSE, download_mvtec

    print(f"MVTec AD is licensed {LICENSE}.")
    root = download_mvtec(
        args.root,
        args.category,
        progress=True,
        keep_archive=args.keep_archive,
        overwrite=args.overwrite,
    )
    print(f"done: export CUTPASTE_DATA={root}")
    return 0
