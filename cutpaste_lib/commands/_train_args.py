"""The flags of ``cutpaste train`` and their types (the command itself is in ``train.py``)."""

from __future__ import annotations

import argparse

from cutpaste_lib.commands._args import (
    add_device,
    existing_dir,
    existing_file,
    non_negative_float,
    non_negative_int,
    out_dir,
    positive_float,
    positive_int,
)


def encoder_name(text: str) -> str:
    """argparse type: a torchvision classification model name."""
    from cutpaste_lib.model import check_encoder_name

    try:
        return check_encoder_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from cutpaste_lib.augment import VARIANTS

    parser.add_argument(
        "--data",
        type=existing_dir,
        required=True,
        help="dataset root in MVTec layout (CATEGORY/train/good/*.png)",
    )
    parser.add_argument(
        "--category", required=True, help="category folder under --data, e.g. screw"
    )
    parser.add_argument(
        "--variant",
        choices=VARIANTS,
        default="3way",
        help="proxy task: 3way (normal/CutPaste/Scar, best in Table 1), cutpaste, "
        "scar or union (binary)",
    )
    parser.add_argument(
        "--steps",
        type=positive_int,
        default=65_536,
        help="SGD updates (paper: 65536 = 256 x 256); the cosine schedule spans them",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=32,
        help="ORIGINAL images per step (paper: 32; 3-way feeds 3x as many to the model)",
    )
    parser.add_argument(
        "--image-size",
        type=positive_int,
        default=256,
        help="training images are resized to this square side (paper: 256)",
    )
    parser.add_argument(
        "--patch",
        action="store_true",
        help="patch model for localization: train on random crops of --patch-size",
    )
    parser.add_argument(
        "--patch-size", type=positive_int, default=None, help="crop side with --patch (paper: 64)"
    )
    parser.add_argument(
        "--encoder",
        type=encoder_name,
        default="resnet18",
        help="torchvision model name (paper: resnet18 from scratch; efficientnet_b4 for Table 3)",
    )
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument(
        "--pretrained",
        action="store_true",
        help="start from torchvision ImageNet weights in the torch hub cache (never "
        "downloaded; the error says which file to place where)",
    )
    weights.add_argument(
        "--weights",
        type=existing_file,
        default=None,
        help="start from this torchvision state-dict file instead",
    )
    parser.add_argument(
        "--transfer",
        action="store_true",
        help="Table 3 protocol: head-only warm-up on a frozen encoder, then fine-tune "
        "everything at --finetune-lr with encoder batch norm frozen (needs "
        "--pretrained or --weights; paper: batch 24, i.e. --batch-size 8 "
        "originals x 3 views in 3-way)",
    )
    parser.add_argument(
        "--warmup-steps",
        type=positive_int,
        default=None,
        help="head-only steps of --transfer (default and paper: 2560 = 10 epochs x 256)",
    )
    parser.add_argument(
        "--finetune-lr",
        type=positive_float,
        default=None,
        help="learning rate after the warm-up with --transfer (default and paper: 1e-4)",
    )
    parser.add_argument(
        "--lr", type=positive_float, default=0.03, help="peak learning rate (paper: 0.03 with SGD)"
    )
    parser.add_argument(
        "--head-depth",
        type=non_negative_int,
        default=8,
        help="hidden layers of the projection head (paper: 8; laptop protocol: see README)",
    )
    parser.add_argument(
        "--scar-reference",
        type=positive_int,
        default=256,
        help="image side the Scar sizes (2-16 x 10-25 px) refer to; they are scaled to "
        "--image-size (paper: 256; the laptop protocol: 128 at 64 px)",
    )
    parser.add_argument(
        "--optimizer",
        choices=("sgd", "adamw"),
        default="sgd",
        help="sgd (paper: momentum 0.9) or adamw (the laptop protocol's, e.g. with --lr 0.001)",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="seeds model init, sampling and augmentation (paper: 5 seeds per number)",
    )
    add_device(parser, "auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--out",
        type=out_dir,
        default=None,
        help="output folder (default: runs/CATEGORY/VARIANT[-patch]-seedS)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue OUT/checkpoint.pt exactly (same flags otherwise)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start over, replacing an existing OUT/checkpoint.pt",
    )
    parser.add_argument(
        "--log-every",
        type=positive_int,
        default=100,
        help="steps between progress/TensorBoard updates (the only GPU syncs)",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=positive_int,
        default=4096,
        help="steps between checkpoints (one is always written at the end)",
    )
    parser.add_argument(
        "--checkpoint-minutes",
        type=non_negative_float,
        default=5.0,
        help="also checkpoint at the first log point after this many minutes since the last "
        "checkpoint (default 5; 0 = by steps only): on a CPU 4096 steps can take half an hour",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the model and the augmentation (GPU; a minute slower to start)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic algorithms (reproducible on GPU, slower)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log files)")


# The library (and torch) is imported inside the functions, not at the top: the CLI imports this
# module to build its parser, and ``cutpaste train --help`` should not wait for torch to load.
