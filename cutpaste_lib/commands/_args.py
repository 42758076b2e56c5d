"""Typed argparse validators: a bad flag value is an error that names the flag, never ignored."""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return value


def existing_dir(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_file():
        raise argparse.ArgumentTypeError(f"{path} is a file, not a folder")
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"folder not found: {path}")
    return path


def existing_file(text: str) -> Path:
    path = Path(text).expanduser()
    if path.is_dir():
        hint = " (pass the checkpoint.pt inside it)" if (path / "checkpoint.pt").is_file() else ""
        raise argparse.ArgumentTypeError(f"{path} is a folder, not a file{hint}")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file not found: {path}")
    return path


def out_dir(text: str) -> Path:
    """An output folder: may not exist yet, but must not be an existing file."""
    path = Path(text).expanduser()
    for folder in (path, *path.parents):  # the first that exists must be a folder
        if folder.exists():
            if not folder.is_dir():
                raise argparse.ArgumentTypeError(f"{folder} is a file, not a folder")
            break
    return path


def device(text: str) -> str:
    """Validate ``--device`` early (cpu, cuda, cuda:N, auto)."""
    from cutpaste_lib.config import resolve_device

    try:
        resolve_device(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def require_train_images(cache, minimum: int, root, category: str, why: str) -> None:
    """A one-line error naming ``train/good`` when it holds fewer than ``minimum`` images."""
    from cutpaste_lib.cli import UserError

    if len(cache) < minimum:
        folder = Path(root) / category / "train" / "good"
        raise UserError(
            f"{folder} has {len(cache)} image(s); {why} needs at least {minimum} "
            "(MVTec AD categories have 60 to 391)"
        )


def add_model_inputs(
    parser: argparse.ArgumentParser,
    *,
    checkpoint_help: str,
    data_help: str = "dataset root in MVTec layout",
    category_help: str = "category folder under --data, e.g. bottle",
    out_help: str,
) -> None:
    """The flags every command that reads a trained model shares: --checkpoint, --data,
    --category and --out (each checked by its type before the command starts)."""
    parser.add_argument("--checkpoint", type=existing_file, required=True, help=checkpoint_help)
    parser.add_argument("--data", type=existing_dir, required=True, help=data_help)
    parser.add_argument("--category", required=True, help=category_help)
    parser.add_argument("--out", type=out_dir, default=None, help=out_help)


def add_device(parser: argparse.ArgumentParser, help: str = "cpu, cuda, cuda:N or auto") -> None:
    """``--device`` (default auto), validated against this machine."""
    parser.add_argument("--device", type=device, default="auto", help=help)


def add_patch_density(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--density`` of the patch Gaussians: shared, per-location or auto (from the category)."""
    parser.add_argument(
        "--density",
        choices=("shared", "per-location", "auto"),
        default="auto",
        help=f"{prefix}one Gaussian for all locations (textures, hazelnut, screw), one per "
        "location (aligned objects), or auto from the category metadata",
    )
