"""``cutpaste reproduce``: run the paper's category x variant x seed grid and write the tables.

Examples:
    cutpaste reproduce --data data/mvtec --out runs/table1                # the paper's grid (long)
    cutpaste reproduce --data data/synthetic --out runs/demo --preset demo
    cutpaste reproduce --data data/mvtec --out runs/t1 --shard 3/8        # one of 8 Slurm tasks
    cutpaste reproduce --merge runs/t1/results.shard-*.csv --out runs/t1-merged
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from cutpaste_lib.commands import _args, _reproduce_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    from cutpaste_lib.augment import VARIANTS

    p.add_argument(
        "--data",
        type=_args.existing_dir,
        metavar="ROOT",
        help="MVTec-layout dataset root (MVTec AD or the synthetic set)",
    )
    p.add_argument(
        "--out",
        type=_args.out_dir,
        required=True,
        metavar="DIR",
        help="results.csv, tables.md, per-job checkpoints and scores go here; rerunning "
        "the same command resumes (finished jobs are skipped)",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        type=_args.existing_file,
        metavar="CSV",
        help="combine results CSVs (e.g. shards) into DIR/results.csv and write the "
        "tables; takes no grid flags",
    )
    p.add_argument(
        "--preset",
        choices=("paper", "demo"),
        default="paper",
        help="paper: the paper's settings (65,536 steps, 256 px, batch 32, 5 seeds); demo: "
        "small CPU settings (30 steps, batch 8, 64 px, 2 seeds): the machinery, not learned models",
    )
    p.add_argument(
        "--categories",
        nargs="+",
        metavar="NAME",
        help="default: every category under --data (the 15 for MVTec AD)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        metavar="VARIANT",
        help=f"default: Table 1's cutpaste scar 3way; valid: {', '.join(VARIANTS)}",
    )
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument(
        "--seeds", type=_args.positive_int, metavar="N", help="seeds 0..N-1 (paper: 5)"
    )
    seeds.add_argument(
        "--seed-list",
        nargs="+",
        type=_args.non_negative_int,
        metavar="SEED",
        help="explicit seeds, e.g. --seed-list 3 7",
    )
    p.add_argument(
        "--steps", type=_args.positive_int, help="update steps per model (overrides preset)"
    )
    p.add_argument(
        "--batch-size",
        type=_args.positive_int,
        help="original images per step (paper: 32, i.e. 64 binary / 96 3-way inputs)",
    )
    p.add_argument(
        "--image-size",
        type=_args.positive_int,
        help="input size in px (paper: 256); without --patch the (unused) patch sizes shrink to fit",
    )
    p.add_argument(
        "--patch-size",
        type=_args.positive_int,
        help="training crop of patch models in px (paper: 64); needs --patch",
    )
    p.add_argument(
        "--patch",
        action="store_true",
        help="also train 3-way patch models and localize (Table 2: pixel AUROC, AUPRO)",
    )
    p.add_argument(
        "--pretrained",
        action="store_true",
        help="start from ImageNet weights (NOT the paper's Table 1 protocol; needs --weights "
        "or cached torchvision weights; tables say 'pretrained')",
    )
    p.add_argument(
        "--weights", type=_args.existing_file, help="encoder weights file for --pretrained"
    )
    p.add_argument(
        "--shard",
        type=_reproduce_args.shard,
        metavar="i/n",
        help="run only shard i (0-based, like SLURM_ARRAY_TASK_ID) of n disjoint shards; "
        "writes DIR/results.shard-i-of-n.csv for --merge",
    )
    p.add_argument(
        "--device",
        type=_args.device,
        default="auto",
        help="auto/cuda: one worker process per visible GPU; cpu or cuda:N: in-process",
    )
    p.add_argument(
        "--workers",
        type=_args.positive_int,
        help="cap on GPU workers (or number of CPU worker processes)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile each model and its augmentation, replayed as CUDA graphs on a GPU "
        "(faster steps; each job first spends a while compiling)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


_GRID_FLAGS = (
    "data",
    "categories",
    "variants",
    "seeds",
    "seed_list",
    "steps",
    "batch_size",
    "image_size",
    "patch_size",
    "shard",
    "workers",
    "weights",
)


def run(args: argparse.Namespace) -> int:
    from cutpaste_lib import reproduce
    from cutpaste_lib.cli import UserError
    from cutpaste_lib.errors import CutPasteError

    if args.merge:
        used = [f"--{f.replace('_', '-')}" for f in _GRID_FLAGS if getattr(args, f) is not None]
        used += [f"--{f}" for f in ("patch", "pretrained", "compile") if getattr(args, f)]
        if used:
            raise UserError(
                f"--merge combines CSVs and takes no grid flags (got {', '.join(used)})"
            )
        created = [d for d in (args.out, *args.out.parents) if not d.exists()]
        before = set(args.out.iterdir()) if args.out.is_dir() else set()
        # the files a merge may replace (results.csv, tables, figure): kept to put back on failure
        saved = {f: f.read_bytes() for f in before if f.is_file() and f.stat().st_size < 2**26}
        try:  # merge_results checks every CSV before it writes; the tables read the score files
            csv_path = reproduce.merge_results(args.merge, args.out)
            tables = reproduce.write_tables(csv_path, args.out)
            _figure(csv_path, args.out, "table1.png")
        except BaseException:
            _remove_new(args.out, before, created)
            _restore(saved)
            raise
        print(
            f"merged {len(args.merge)} CSVs into {csv_path} ({len(reproduce.read_results(csv_path))} jobs)"
        )
        print(f"tables: {tables}")
        return 0

    if args.data is None:
        raise UserError("--data ROOT is required (or use --merge CSV ... to combine results)")
    if args.weights is not None and not args.pretrained:
        raise UserError("--weights is only used with --pretrained")
    if args.patch_size is not None and not args.patch:
        raise UserError("--patch-size needs --patch")
    base = (
        reproduce.GridSettings.demo() if args.preset == "demo" else reproduce.GridSettings.paper()
    )
    overrides = {
        k: getattr(args, k)
        for k in ("steps", "batch_size", "image_size", "patch_size")
        if getattr(args, k) is not None
    }
    overrides.update(_reproduce_args.patch_sizes(args, base))
    if args.pretrained:
        overrides.update(pretrained=True, weights=str(args.weights) if args.weights else None)
    if args.compile:
        overrides.update(compile=True)
    try:
        settings = dataclasses.replace(base, **overrides)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if args.seed_list is not None:
        seeds = list(args.seed_list)
    else:
        seeds = list(range(args.seeds or (2 if args.preset == "demo" else 5)))
    try:
        result = reproduce.run_grid(
            args.data,
            args.out,
            categories=args.categories,
            variants=args.variants or reproduce.TABLE1_VARIANTS,
            seeds=seeds,
            settings=settings,
            patch=args.patch,
            shard=args.shard,
            device=args.device,
            workers=args.workers,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        if isinstance(exc, CutPasteError):
            raise
        raise UserError(str(exc)) from None
    suffix = "" if args.shard is None else f".shard-{args.shard[0]}-of-{args.shard[1]}"
    print(f"{result.ran} jobs run, {result.skipped} already done: {result.csv}")
    if not result.rows:
        print("no finished jobs in this shard: no tables")
        return 0
    tables = reproduce.write_tables(result.csv, args.out, filename=f"tables{suffix}.md")
    _figure(result.csv, args.out, f"table1{suffix}.png")
    print(f"tables: {tables}")
    return 0


def _remove_new(out: Path, before: set[Path], created: list[Path]) -> None:
    """Undo a failed --merge: remove the files it added to ``out`` and the folders it created."""
    from cutpaste_lib.io import remove_empty_folders

    if out.is_dir():
        for path in set(out.iterdir()) - before:
            if path.is_file() or path.is_symlink():
                path.unlink(missing_ok=True)
    remove_empty_folders(created)  # deepest first


def _restore(saved: dict[Path, bytes]) -> None:
    """Put back the files a failed --merge replaced (each atomically)."""
    from cutpaste_lib import io

    for path, content in saved.items():
        if not path.is_file() or path.read_bytes() != content:
            io.atomic_write(path, lambda tmp, data=content: tmp.write_bytes(data))


def _figure(csv_path: Path, out: Path, name: str) -> None:
    from cutpaste_lib import reproduce
    from cutpaste_lib.viz.common import save_figure
    from cutpaste_lib.viz.reproduce import plot_ours_vs_paper

    rows = reproduce.read_results(csv_path)
    image_rows = [r for r in rows if r["mode"] == "image"]
    if image_rows:
        variant = (
            "3way" if any(r["variant"] == "3way" for r in image_rows) else image_rows[0]["variant"]
        )
        save_figure(plot_ours_vs_paper(rows, variant=variant), Path(out) / name, dpi=90)
