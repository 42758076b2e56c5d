"""``cutpaste synth``: write the synthetic MVTec-layout dataset.

Example:
    cutpaste synth --out data/synthetic --size 128 --n-train 24 --seed 0
"""

from __future__ import annotations

import argparse

from cutpaste_lib.commands._args import non_negative_int, out_dir, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutpaste_lib.data import SYNTHETIC_CATEGORIES

    parser.add_argument(
        "--out",
        type=out_dir,
        required=True,
        help="dataset root to create (must not exist unless --overwrite)",
    )
    parser.add_argument(
        "--categories",
        nargs="+",
        choices=SYNTHETIC_CATEGORIES,
        default=None,
        metavar="NAME",
        help=f"subset of {', '.join(SYNTHETIC_CATEGORIES)} (default: all)",
    )
    parser.add_argument(
        "--size", type=positive_int, default=256, help="image side in pixels (paper input: 256)"
    )
    parser.add_argument(
        "--n-train", type=positive_int, default=120, help="defect-free training images per category"
    )
    parser.add_argument(
        "--n-test-good",
        type=positive_int,
        default=None,
        help="good test images (default: n_train/3, at least 10)",
    )
    parser.add_argument(
        "--n-test-defect",
        type=positive_int,
        default=None,
        help="test images per defect type (default: n_train/8, at least 4)",
    )
    parser.add_argument(
        "--seed", type=non_negative_int, default=0, help="same seed, byte-identical files"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --out dataset written by cutpaste synth (never other folders)",
    )


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.data import SYNTHETIC_CATEGORIES, generate_synthetic, load_split

    if args.size < 16:
        raise UserError(f"--size must be at least 16 pixels, got {args.size}")
    try:
        root = generate_synthetic(
            args.out,
            categories=args.categories,
            size=args.size,
            n_train=args.n_train,
            n_test_good=args.n_test_good,
            n_test_defect=args.n_test_defect,
            seed=args.seed,
            overwrite=args.overwrite,
            progress=True,
        )
    except OSError as exc:  # unwritable location, full disk: nothing was left behind
        where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(args.out) else ""
        raise UserError(f"cannot create {args.out}: {exc.strerror or exc}{where}") from None
    print(f"wrote {root}")
    for category in sorted(args.categories or SYNTHETIC_CATEGORIES):
        test = load_split(root, category, "test")
        bad = sum(s.label for s in test)
        defects = sorted({s.defect for s in test if s.label})
        print(
            f"  {category}: {len(load_split(root, category, 'train'))} train, "
            f"{len(test) - bad} good + {bad} defective test ({', '.join(defects)})"
        )
    return 0
