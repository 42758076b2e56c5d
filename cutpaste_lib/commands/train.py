"""``cutpaste train``: self-supervised CutPaste training on the good train images of one category.

Writes ``OUT/checkpoint.pt`` (tensors + plain config, every ``--checkpoint-every`` steps and at the
end), ``OUT/config.json`` and TensorBoard scalars under ``OUT/tb`` (``tensorboard --logdir OUT/tb``).

Ctrl-C (or SIGTERM) finishes the step under way, writes its checkpoint and stops with one line
that says the step, the checkpoint and how to continue (``--resume``); exit status 2, as for
other errors. A second Ctrl-C stops at once.

Example:
    cutpaste train --data data/synthetic --category synth_grid --steps 30 --image-size 64 --batch-size 8
    cutpaste train --data /data/mvtec --category screw --device cuda        # the paper's protocol
"""

from __future__ import annotations

import argparse
from pathlib import Path

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


def build_config(args: argparse.Namespace):
    """A validated :class:`~cutpaste_lib.train.TrainConfig` from parsed flags."""
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.train import TrainConfig

    if args.patch_size is not None and not args.patch:
        raise UserError("--patch-size needs --patch")
    patch_size = (args.patch_size or 64) if args.patch else None
    if patch_size is not None and patch_size > args.image_size:
        raise UserError(f"--patch-size {patch_size} is larger than --image-size {args.image_size}")
    if args.resume and args.overwrite:
        raise UserError(
            "--resume continues OUT/checkpoint.pt and --overwrite starts over and replaces it: "
            "pass only one"
        )
    for flag, value in (("--warmup-steps", args.warmup_steps), ("--finetune-lr", args.finetune_lr)):
        if value is not None and not args.transfer:
            raise UserError(
                f"{flag} needs --transfer (it sets the transfer protocol's fine-tuning)"
            )
    if args.transfer and not (args.pretrained or args.weights):
        raise UserError(
            "--transfer fine-tunes ImageNet weights: add --pretrained or --weights FILE"
        )
    # Without --transfer the library defaults are stored (unused by the scratch protocol).
    warmup_steps = TrainConfig.warmup_steps if args.warmup_steps is None else args.warmup_steps
    finetune_lr = TrainConfig.finetune_lr if args.finetune_lr is None else args.finetune_lr
    if args.transfer and warmup_steps >= args.steps:
        default = " (the default)" if args.warmup_steps is None else ""
        raise UserError(
            f"--warmup-steps {warmup_steps}{default} must be smaller than --steps {args.steps}"
        )
    try:
        return TrainConfig(
            variant=args.variant,
            encoder=args.encoder,
            steps=args.steps,
            batch_size=args.batch_size,
            lr=args.lr,
            optimizer=args.optimizer,
            head_depth=args.head_depth,
            image_size=args.image_size,
            patch_size=patch_size,
            seed=args.seed,
            device=args.device,
            log_every=args.log_every,
            checkpoint_every=args.checkpoint_every,
            checkpoint_minutes=args.checkpoint_minutes,
            deterministic=args.deterministic,
            compile=args.compile,
            pretrained=args.pretrained,
            weights=None if args.weights is None else str(args.weights),
            protocol="transfer" if args.transfer else "scratch",
            warmup_steps=warmup_steps,
            finetune_lr=finetune_lr,
        )
    except ValueError as exc:
        raise UserError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.config import resolve_device
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.train import TrainingInterrupted, check_out_dir, train

    config = build_config(args)
    out = args.out or Path("runs") / args.category / (
        f"{config.variant}{'-patch' if config.patch_size else ''}-seed{config.seed}"
    )
    check_out_dir(out, resume=args.resume, overwrite=args.overwrite)  # fail before decoding images
    dev = resolve_device(config.device)
    cache = load_cache(args.data, args.category, "train", config.image_size, device=dev)
    print(
        f"training {config.variant} ({config.encoder}) on {len(cache)} {args.category} images, "
        f"{config.steps} steps of {config.inputs_per_step} inputs, device {dev}, out {out}"
    )
    try:
        result = train(
            config,
            cache,
            out_dir=out,
            resume=args.resume,
            overwrite=args.overwrite,
            progress=not args.no_progress,
        )
    except TrainingInterrupted as exc:
        how = "--resume instead of --overwrite" if args.overwrite else "--resume added"
        raise UserError(
            f"interrupted by {exc.signal_name} after step {exc.step} of {exc.steps}; checkpoint of "
            f"that step: {exc.checkpoint}; to continue, run the same command with {how}"
        ) from None
    h = result.history
    if h["step"]:
        print(
            f"step {h['step'][-1]}: loss {h['loss'][-1]:.4f}, proxy accuracy {h['accuracy'][-1]:.3f}, "
            f"{h['images_per_s'][-1]:.0f} images/s"
        )
    print(f"checkpoint: {result.checkpoint}\nTensorBoard: tensorboard --logdir {out / 'tb'}")
    return 0
