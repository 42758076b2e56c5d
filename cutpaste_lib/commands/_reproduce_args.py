"""Argument helpers of ``cutpaste reproduce``: the ``--shard`` type and the patch sizes that fit.

Like the commands themselves, they import library code only when called.
"""

from __future__ import annotations

import argparse


def shard(text: str) -> tuple[int, int]:
    """``--shard i/n`` as ``(i, n)``; a bad value is an argparse error (usage, exit 2)."""
    from cutpaste_lib.reproduce import parse_shard

    try:
        return parse_shard(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def patch_sizes(args: argparse.Namespace, base) -> dict:
    """Patch-model sizes that fit ``--image-size``, or a UserError naming the flags.

    Without ``--patch`` no patch model is trained: the preset's patch sizes (still recorded in the
    results CSV) shrink to the image size instead of refusing it. With ``--patch`` the training
    crop must fit; the dense test patch (no flag) falls back to the crop when it does not fit.
    Runs whose sizes already fit keep the preset's values.
    """
    from cutpaste_lib.cli import UserError

    image_size = args.image_size or base.image_size
    patch_size = args.patch_size or base.patch_size
    if args.patch and patch_size > image_size:
        have = (
            f"--image-size {image_size}"
            if args.image_size
            else f"the {args.preset} preset's --image-size {image_size}"
        )
        if args.patch_size:
            raise UserError(f"--patch-size {patch_size} is larger than {have}")
        raise UserError(
            f"--patch with {have} needs --patch-size <= {image_size} (the {args.preset} "
            f"preset's patch models train on {patch_size} px crops)"
        )
    patch_size = min(patch_size, image_size)
    out = {"patch_size": patch_size} if patch_size != base.patch_size else {}
    if base.dense_patch > image_size:
        out["dense_patch"] = patch_size
    return out
