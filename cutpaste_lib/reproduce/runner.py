"""Running (or resuming) a grid: plan the jobs, skip the finished ones, run the rest, keep each row.

Every finished job adds its row to the results CSV at once, so a rerun skips the jobs already
there (resume) and retries only the failed ones.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cutpaste_lib.errors import CutPasteError, DataNotFoundError
from cutpaste_lib.reproduce.data_kind import available_categories, check_test_splits, data_kind
from cutpaste_lib.reproduce.grid import (
    TABLE1_VARIANTS,
    GridSettings,
    Job,
    JobFn,
    JobSpec,
    make_grid,
    parse_shard,
    select_shard,
)
from cutpaste_lib.reproduce.job import train_evaluate_job
from cutpaste_lib.reproduce.results import (
    append_result,
    describe_settings,
    read_results,
    row_key,
    settings_of,
    write_rows,
)
from cutpaste_lib.reproduce.row import fixed_columns, git_commit, make_row
from cutpaste_lib.reproduce.workers import execute, plan_workers


@dataclass
class GridResult:
    """What :func:`run_grid` did: the CSV, all its rows, and counts."""

    csv: Path
    rows: list[dict]
    ran: int
    skipped: int
    failures: list[tuple[str, str]] = field(default_factory=list)


def results_csv_path(out_dir: str | Path, shard: tuple[int, int] | None = None) -> Path:
    """``results.csv``, or ``results.shard-i-of-n.csv`` so shards may share a folder."""
    out_dir = Path(out_dir)
    if shard is None:
        return out_dir / "results.csv"
    return out_dir / f"results.shard-{shard[0]}-of-{shard[1]}.csv"


def run_grid(
    data_root: str | Path,
    out_dir: str | Path,
    *,
    categories: Sequence[str] | None = None,
    variants: Sequence[str] = TABLE1_VARIANTS,
    seeds: Iterable[int] = range(5),
    settings: GridSettings | None = None,
    patch: bool | Sequence[str] = False,
    shard: tuple[int, int] | str | None = None,
    device: str | None = "auto",
    workers: int | None = None,
    job: JobFn | None = None,
    progress: bool = True,
) -> GridResult:
    """Run (or resume) the grid; every finished job is appended to the results CSV at once.

    Args:
        data_root: MVTec-layout folder (MVTec AD or the synthetic set).
        out_dir: results CSV, per-job checkpoints and score files go here.
        categories: default: every category under ``data_root`` (the 15 for MVTec AD).
        variants: image-level variants (default Table 1's ``cutpaste``, ``scar``, ``3way``).
        seeds: default ``0..4`` (the paper's 5 seeds).
        settings: default :meth:`GridSettings.paper`.
        patch: ``True`` adds 3-way patch models (Table 2); a sequence names the patch variants.
        shard: ``(i, n)`` or ``"i/n"``: run only shard ``i`` (0-based) of ``n``.
        device: ``auto``/``cuda`` uses every visible GPU (one worker process each); ``cpu`` or
            ``cuda:N`` runs in this process.
        workers: cap (GPUs) or count (CPU processes) of workers.
        job: the job function (default :func:`train_evaluate_job`); must be a top-level function
            when several worker processes are used.
        progress: show the overall tqdm bar (jobs done, time per job, projected finish).

    Returns:
        :class:`GridResult`. Finished jobs are in the CSV even when a later job fails.

    Raises:
        DataNotFoundError / ValueError: bad root, category, variant, seed, shard or settings.
        DatasetError: a category's test split lacks good or defective images
            (:func:`check_test_splits`, before any job runs).
        CutPasteError: the CSV holds runs with other settings, or some jobs failed (after every
            other job ran; a rerun retries only the failed ones).
    """
    settings = settings or GridSettings.paper()
    root, out_dir = Path(data_root), Path(out_dir)
    categories = _check_categories(root, categories)
    shard = parse_shard(shard) if isinstance(shard, str) else shard
    jobs = _plan_jobs(root, categories, variants, seeds, patch=patch, shard=shard)
    devices = plan_workers(device, workers)
    job = job or train_evaluate_job
    if len(devices) > 1:
        _check_picklable(job)

    csv_path = results_csv_path(out_dir, shard)
    fixed = fixed_columns(settings, data_kind(root, categories))
    done = _finished_keys(csv_path, fixed)
    pending = [j for j in jobs if (j.category, j.variant, j.mode, j.seed) not in done]
    commit = git_commit()

    def on_done(spec: JobSpec, result: dict, seconds: float, dev: str) -> None:
        row = make_row(
            spec,
            result,
            fixed=fixed,
            seconds=seconds,
            device=dev,
            commit=commit,
            csv_dir=csv_path.parent,
        )
        append_result(csv_path, row)

    specs = [JobSpec(j, root, out_dir / j.rel_dir, settings, devices[0]) for j in pending]
    failures = execute(
        specs,
        job=job,
        devices=devices,
        on_done=on_done,
        total=len(jobs),
        initial=len(jobs) - len(pending),
        progress=progress,
    )
    return _grid_result(csv_path, jobs=jobs, pending=pending, failures=failures)


def _check_categories(root: Path, categories: Sequence[str] | None) -> Sequence[str]:
    """The categories to run (default: all under ``root``); an unknown one is an error."""
    available = available_categories(root)
    if categories is None:
        return available
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise DataNotFoundError(
            f"unknown categories {unknown} in {root}: valid are {', '.join(available)}"
        )
    return categories


def _plan_jobs(
    root: Path,
    categories: Sequence[str],
    variants: Sequence[str],
    seeds: Iterable[int],
    *,
    patch: bool | Sequence[str],
    shard: tuple[int, int] | None,
) -> list[Job]:
    """The grid's jobs (of ``shard`` only, if given), after checking every test split."""
    if isinstance(patch, bool):
        patch_variants: Sequence[str] = ("3way",) if patch else ()
    else:
        patch_variants = tuple(patch)
    jobs = make_grid(list(categories), list(variants), seeds, patch_variants=patch_variants)
    if not jobs:
        raise ValueError("the grid is empty: give at least one category, variant and seed")
    check_test_splits(root, categories)  # before any training, every problem at once
    if shard is not None:
        jobs = select_shard(jobs, *shard)
    return jobs


def _check_picklable(job: JobFn) -> None:
    try:
        pickle.dumps(job)
    except (pickle.PicklingError, AttributeError, TypeError) as exc:
        raise ValueError(
            f"job {job!r} cannot be sent to worker processes ({exc}): use a top-level function"
        ) from None


def _finished_keys(csv_path: Path, fixed: dict) -> set[tuple]:
    """Keys of the jobs already in the CSV, which must hold runs with the same settings."""
    existing = read_results(csv_path) if csv_path.exists() else []
    if existing and settings_of(existing[0]) != settings_of(fixed):
        raise CutPasteError(
            f"{csv_path} holds runs with other settings ({describe_settings(existing[0])}); "
            f"this run has ({describe_settings(fixed)}): use another --out folder"
        )
    return {row_key(r) for r in existing}


def _grid_result(
    csv_path: Path,
    *,
    jobs: Sequence[Job],
    pending: Sequence[Job],
    failures: list[tuple[str, str]],
) -> GridResult:
    """What the run did; raises after the fact when some jobs failed."""
    rows = read_results(csv_path) if csv_path.exists() else []
    if not csv_path.exists():
        write_rows(csv_path, [])  # an empty shard still leaves a valid CSV for --merge
    result = GridResult(
        csv_path,
        rows,
        ran=len(pending) - len(failures),
        skipped=len(jobs) - len(pending),
        failures=failures,
    )
    if failures:
        listing = "; ".join(f"{k}: {e}" for k, e in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        raise CutPasteError(
            f"{len(failures)} of {len(jobs)} jobs failed: {listing}{more}. The {result.ran} finished "
            f"jobs are saved in {csv_path}; rerun the same command to retry the failed ones"
        )
    return result
