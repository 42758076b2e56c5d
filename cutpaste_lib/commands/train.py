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

from cutpaste_lib.commands._train_args import add_arguments  # noqa: F401 (the command's flags)


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
            scar_reference=args.scar_reference,
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
