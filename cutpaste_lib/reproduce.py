"""Reproduce the paper's tables: a category x variant x seed grid, one results CSV, Markdown tables.

Each grid cell is a *job*: train one model (:func:`cutpaste_lib.train.train`), fit the Gaussian
density on its clean train embeddings, score the test images (image AUROC) and, for patch models,
localize (pixel AUROC, AUPRO). Every finished job adds one row to ``results.csv``; the file is
rewritten whole to a temporary name, fsync-ed and renamed under a lock, so a crash or a kill at any
moment leaves the previous complete file. A rerun skips the jobs already in the CSV (resume).

Scale-out: one worker process per visible GPU on a multi-GPU machine; across machines,
``shard=(i, n)`` runs a disjoint, stable part of the grid (a job belongs to shard
``sha256(key) mod n``, so adding seeds never moves a finished job to another shard) and
:func:`merge_results` combines the shards' CSVs.

The job is a parameter (``job=``): the default :func:`train_evaluate_job` is the real pipeline; tests
pass a fast deterministic fake. A job receives a :class:`JobSpec` and returns a dict with
``image_auroc`` (fraction in [0, 1]), optionally ``pixel_auroc``/``aupro`` and ``scores`` (path of
the per-image score file written with :func:`save_scores`, needed for the seed ensemble).

Choices where the paper is silent (repeated in the tables' header):
    * The *Ensemble* column of Table 1 is the ensemble of the seeds' 3-way models (our reading of
      the paper's column). Each model's test scores are standardised with the mean and standard
      deviation of its own *training* scores (never test statistics), then averaged. Those
      training scores are cross-fitted (each half of the train images scored by a Gaussian fitted
      on the other half): in-sample scores of a Gaussian fitted on N < 512 images are several
      times too small, by an amount that differs between models.
    * Group averages (texture / object / all) are the mean of the per-category means; their
      standard error is ``sqrt(sum se_c^2) / C`` (categories are trained independently).
    * The paper's numbers are shown only for MVTec AD data: on synthetic data they are "—".

Example:
    >>> from cutpaste_lib import reproduce
    >>> jobs = reproduce.make_grid(["bottle", "screw"], ["cutpaste", "3way"], [0, 1])
    >>> len(jobs), jobs[0].key
    (8, 'bottle/cutpaste/image/seed0')
    >>> a, b = reproduce.select_shard(jobs, 0, 2), reproduce.select_shard(jobs, 1, 2)
    >>> sorted(j.key for j in a + b) == sorted(j.key for j in jobs)
    True
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import math
import os
import pickle
import platform
import subprocess
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cutpaste_lib import config, paper
from cutpaste_lib.errors import CutPasteError, DataNotFoundError, DatasetError
from cutpaste_lib.io import atomic_write, write_text

VARIANTS: tuple[str, ...] = ("cutpaste", "scar", "union", "3way")
"""Trainable variants (the same names as :data:`cutpaste_lib.augment.VARIANTS`)."""

TABLE1_VARIANTS = paper.TABLE1_VARIANTS
MODES: tuple[str, ...] = ("image", "patch")

KEY_COLUMNS = ("category", "variant", "mode", "seed")
RESULT_COLUMNS = ("image_auroc", "pixel_auroc", "aupro")
SETTING_COLUMNS = (
    "encoder",
    "pretrained",
    "steps",
    "batch_size",
    "image_size",
    "patch_size",
    "dense_patch",
    "dense_stride",
    "data_kind",
)
INFO_COLUMNS = ("kind", "scores", "seconds", "device", "commit", "finished_at")
COLUMNS = KEY_COLUMNS + RESULT_COLUMNS + SETTING_COLUMNS + INFO_COLUMNS
"""The results CSV header, in order."""

_INT_COLUMNS = {
    "seed",
    "steps",
    "batch_size",
    "image_size",
    "patch_size",
    "dense_patch",
    "dense_stride",
}
_FLOAT_COLUMNS = {"image_auroc", "pixel_auroc", "aupro", "seconds"}
_OPTIONAL_COLUMNS = {"pixel_auroc", "aupro", "scores", "patch_size", "dense_patch", "dense_stride"}

DataKind = Literal["mvtec", "synthetic", "other"]
_DATA_KIND_TEXT = {
    "mvtec": "MVTec AD",
    "synthetic": "synthetic (generated, MVTec layout)",
    "other": "other dataset in MVTec layout",
}


# ============================== settings, jobs, grid ==============================


@dataclass(frozen=True)
class GridSettings:
    """Training/evaluation settings shared by every job of a grid (defaults: the paper, A.1 and A.5).

    ``batch_size`` counts original images per step (the paper's 64 binary / 96 3-way classifier
    inputs are 32 originals with their augmented views). ``patch_size`` is the training crop of
    patch models; ``dense_patch``/``dense_stride`` the dense extraction at test time (A.5).
    """

    steps: int = 65_536
    batch_size: int = 32
    image_size: int = 256
    patch_size: int = 64
    dense_patch: int = 32
    dense_stride: int = 4
    encoder: str = "resnet18"
    pretrained: bool = False
    weights: str | None = None
    compile: bool = False  # torch.compile + CUDA graphs on a GPU (speed only, same protocol)

    @classmethod
    def paper(cls) -> GridSettings:
        """The paper's Table 1/2 settings (ResNet-18 from scratch, 65,536 steps, 256 px)."""
        return cls()

    @classmethod
    def demo(cls) -> GridSettings:
        """Small CPU-friendly settings (``config.FAST``) for the synthetic data and ``make demo``."""
        s = config.FAST
        return cls(
            steps=s.steps,
            batch_size=s.batch_size,
            image_size=s.image_size,
            patch_size=s.patch_size,
            dense_patch=s.dense_patch,
            dense_stride=s.dense_stride,
        )

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "batch_size",
            "image_size",
            "patch_size",
            "dense_patch",
            "dense_stride",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GridSettings.{name} must be a positive integer, got {value!r}")
        if self.patch_size > self.image_size:
            raise ValueError(
                f"GridSettings.patch_size ({self.patch_size}) exceeds image_size ({self.image_size})"
            )
        if self.dense_patch > self.image_size:
            raise ValueError(
                f"GridSettings.dense_patch ({self.dense_patch}) exceeds image_size ({self.image_size})"
            )


@dataclass(frozen=True, order=True)
class Job:
    """One grid cell. ``mode="patch"`` is a patch model (localization, Table 2)."""

    category: str
    variant: str
    seed: int
    mode: str = "image"

    @property
    def key(self) -> str:
        return f"{self.category}/{self.variant}/{self.mode}/seed{self.seed}"

    @property
    def rel_dir(self) -> Path:
        """Folder of the job's checkpoint and scores, relative to the output folder."""
        return Path("jobs") / self.category / f"{self.variant}-{self.mode}" / f"seed{self.seed}"


@dataclass(frozen=True)
class JobSpec:
    """Everything a job function needs (picklable: sent to worker processes)."""

    job: Job
    data_root: Path
    job_dir: Path
    settings: GridSettings
    device: str


JobFn = Callable[[JobSpec], dict]


def make_grid(
    categories: Sequence[str],
    variants: Sequence[str],
    seeds: Iterable[int],
    *,
    patch_variants: Sequence[str] = (),
) -> list[Job]:
    """Image jobs for categories x variants x seeds, plus patch jobs for ``patch_variants``.

    The order is the paper's (categories as given, then variants, then seeds). Duplicates in any
    argument are an error rather than silently merged.
    """
    seeds = list(seeds)
    for name, items in (
        ("categories", categories),
        ("variants", variants),
        ("seeds", seeds),
        ("patch_variants", patch_variants),
    ):
        if len(set(items)) != len(items):
            raise ValueError(f"duplicate entries in {name}: {list(items)}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ValueError(f"seeds must be integers >= 0, got {s!r}")
    for v in list(variants) + list(patch_variants):
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}: valid are {', '.join(VARIANTS)}")
    jobs = [Job(c, v, s) for c in categories for v in variants for s in seeds]
    jobs += [Job(c, v, s, "patch") for c in categories for v in patch_variants for s in seeds]
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0-based ``i``, like ``SLURM_ARRAY_TASK_ID``) into ``(i, n)``."""
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"bad shard {text!r}: expected i/n with integers, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"bad shard {text!r}: need n >= 1 and 0 <= i < n (i is 0-based, e.g. 0/4 .. 3/4)"
        )
    return index, count


def shard_of(job: Job, count: int) -> int:
    """The shard a job belongs to: stable across runs, machines and Python hash seeds."""
    digest = hashlib.sha256(job.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` of ``count`` (disjoint; their union is ``jobs``)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {index}/{count}: need 0 <= i < n")
    return [j for j in jobs if shard_of(j, count) == index]


# ============================== dataset facts ==============================


def available_categories(root: str | Path) -> list[str]:
    """Categories under ``root`` (:func:`cutpaste_lib.data.list_categories`), MVTec ones in paper order."""
    from cutpaste_lib.data import list_categories

    root = Path(root)
    found = set(list_categories(root))
    if not found:
        raise DataNotFoundError(
            f"no categories in {root}: expected MVTec layout <root>/<category>/train/good/*.png"
        )
    return [c for c in paper.CATEGORIES if c in found] + sorted(found - set(paper.CATEGORIES))


def check_test_splits(root: str | Path, categories: Iterable[str]) -> None:
    """Check, before any training, that every category's test split can give an image AUROC.

    The AUROC needs good and defective test images; without this check a category that lacks
    either shows up only after each of its models has been trained. The test splits are read with
    :func:`cutpaste_lib.data.load_split`, so a missing folder or mask is reported here too.

    Raises:
        DatasetError: one or more categories cannot be scored; the message lists all of them,
            each with its test folder.
    """
    from cutpaste_lib.data import load_split

    root = Path(root).expanduser()
    problems = []
    for category in categories:
        folder = root / category / "test"
        try:
            labels = {s.label for s in load_split(root, category, "test")}
        except CutPasteError as exc:
            problems.append(f"{category}: {exc}")
            continue
        if 0 not in labels:
            problems.append(f"{category}: no good images in {folder / 'good'}")
        elif 1 not in labels:
            problems.append(f"{category}: no defective images in {folder} (only good/)")
    if problems:
        raise DatasetError(
            f"the image AUROC needs good and defective test images: {'; '.join(problems)}"
        )


def category_kind(category: str) -> str:
    """``texture`` or ``object`` (:func:`cutpaste_lib.data.category_info`; unknown names: object)."""
    from cutpaste_lib.data import category_info

    return category_info(category).kind


def data_kind(root: str | Path, categories: Iterable[str]) -> DataKind:
    """``synthetic`` for a generated set, ``mvtec`` when every category is an MVTec AD one, else other.

    Paper numbers are shown only for ``mvtec``: a synthetic set is recognised by the generator's
    manifest or by its category names, so it is never compared with the paper by accident.
    """
    from cutpaste_lib.data import SYNTHETIC_CATEGORIES
    from cutpaste_lib.data.synthetic import MANIFEST

    cats = set(categories)
    if (Path(root) / MANIFEST).is_file() or (cats and cats <= set(SYNTHETIC_CATEGORIES)):
        return "synthetic"
    if cats and cats <= set(paper.CATEGORIES):
        return "mvtec"
    return "other"


def git_commit() -> str:
    """``git rev-parse HEAD`` of the checkout (``+dirty`` if tracked files changed), else ``unknown``."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=config.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=config.REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + "+dirty" if dirty else head) or "unknown"


def device_name(device: str) -> str:
    """A human name for the hardware behind ``device`` (GPU model, or the CPU architecture)."""
    import torch

    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev.index if dev.index is not None else 0)
    return f"cpu ({platform.machine() or 'unknown'})"


# ============================== per-image scores ==============================

SCORE_KEYS = ("test_scores", "test_labels", "test_names", "train_scores")


def save_scores(
    path: str | Path,
    *,
    test_scores: Any,
    test_labels: Any,
    test_names: Sequence[str],
    train_scores: Any,
) -> Path:
    """Write a job's per-image anomaly scores (atomically) for the seed ensemble.

    ``train_scores`` are the cross-fitted scores of the clean train images under the model's own
    density settings (:attr:`cutpaste_lib.evaluate.EvaluationResult.train_scores`); their mean and
    standard deviation standardise this model's test scores in :func:`ensemble_auroc`.
    """
    test_scores = _as_1d(test_scores, "test_scores")
    test_labels = _as_1d(test_labels, "test_labels").astype(np.int64)
    train_scores = _as_1d(train_scores, "train_scores")
    names = np.asarray([str(n) for n in test_names], dtype=np.str_)
    if not (len(test_scores) == len(test_labels) == len(names)):
        raise ValueError(
            f"test_scores ({len(test_scores)}), test_labels ({len(test_labels)}) and test_names "
            f"({len(names)}) must have the same length"
        )
    if len(train_scores) < 2:
        raise ValueError("need at least 2 train scores to standardise")

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a name
            np.savez(
                fh,
                test_scores=test_scores,
                test_labels=test_labels,
                test_names=names,
                train_scores=train_scores,
            )
            fh.flush()
            os.fsync(fh.fileno())

    return atomic_write(path, write)


def load_scores(path: str | Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_scores` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"score file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in SCORE_KEYS}
    except (OSError, ValueError, KeyError) as exc:
        raise CutPasteError(f"corrupt or foreign score file {path}: {exc}") from None
    return out


def _as_1d(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()  # float64 Mahalanobis scores stay float64
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def standardized_ensemble(files: Sequence[str | Path]) -> tuple[np.ndarray, np.ndarray]:
    """Average of the models' standardised test scores, and the shared test labels.

    Each model's scores are standardised by the mean and standard deviation of its own
    (cross-fitted) *training* scores (never test statistics) with :func:`cutpaste_lib.density.ensemble_scores`, so models whose
    Mahalanobis distances live on different scales count equally.
    """
    import torch

    from cutpaste_lib.density import ensemble_scores

    if not files:
        raise ValueError("no score files to ensemble")
    loaded = [load_scores(f) for f in files]
    ref = loaded[0]
    for f, s in zip(files, loaded):
        if not np.array_equal(s["test_names"], ref["test_names"]) or not np.array_equal(
            s["test_labels"], ref["test_labels"]
        ):
            raise CutPasteError(
                f"score files disagree on the test images: {files[0]} vs {f} (same data root?)"
            )
    mean = ensemble_scores(
        [torch.from_numpy(s["test_scores"]) for s in loaded],
        [torch.from_numpy(s["train_scores"]) for s in loaded],
    )
    return mean.numpy(), ref["test_labels"]


def ensemble_auroc(files: Sequence[str | Path]) -> float:
    """Image AUROC (fraction) of the standardised-score ensemble of the given models."""
    from sklearn.metrics import roc_auc_score

    scores, labels = standardized_ensemble(files)
    if len(np.unique(labels)) < 2:
        raise CutPasteError(f"the test set of {files[0]} has only one class: AUROC undefined")
    return float(roc_auc_score(labels, scores))


# ============================== results CSV ==============================


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # shortest exact round-trip: duplicates compare equal after a merge
    return str(value)


def _parse(column: str, text: str, where: str) -> Any:
    if text == "":
        if column in _OPTIONAL_COLUMNS or column in INFO_COLUMNS:
            return None
        raise CutPasteError(f"{where}: empty value in required column {column!r}")
    try:
        if column in _INT_COLUMNS:
            return int(text)
        if column in _FLOAT_COLUMNS:
            return float(text)
    except ValueError:
        raise CutPasteError(f"{where}: column {column!r} has a non-number {text!r}") from None
    if column == "pretrained":
        if text not in ("true", "false"):
            raise CutPasteError(f"{where}: column 'pretrained' must be true/false, got {text!r}")
        return text == "true"
    return text


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results CSV as typed dicts (raises a clear error on a foreign or damaged file)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"results CSV not found: {path}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or []
            missing = [c for c in COLUMNS if c not in header]
            if missing:
                raise CutPasteError(
                    f"{path} is not a reproduce results CSV: missing columns {missing}"
                )
            rows = []
            for line, raw in enumerate(reader, start=2):
                if None in raw or any(v is None for v in raw.values()):
                    raise CutPasteError(f"{path}:{line}: wrong number of fields")
                rows.append({c: _parse(c, raw[c], f"{path}:{line}") for c in COLUMNS})
    except UnicodeDecodeError as exc:  # a binary file, or text in another encoding
        raise CutPasteError(
            f"{path} is not a reproduce results CSV: not UTF-8 text (byte {exc.start})"
        ) from None
    except csv.Error as exc:
        raise CutPasteError(f"{path} is not a reproduce results CSV: {exc}") from None
    return rows


def _write_rows(path: Path, rows: Sequence[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(COLUMNS)
            for row in rows:
                writer.writerow([_format(row.get(c)) for c in COLUMNS])
            fh.flush()
            os.fsync(fh.fileno())  # the rename must never publish data still in the page cache

    atomic_write(path, write)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def _locked(path: Path):
    """An exclusive advisory lock next to ``path`` (POSIX), so two writers never interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "a") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: one writer per folder is the user's responsibility
            yield
            return
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def append_result(path: str | Path, row: dict) -> bool:
    """Add one finished job's row: whole new file to a temporary name, fsync, rename, under a lock.

    Returns ``False`` (and writes nothing) when the job's key is already in the file.
    """
    path = Path(path)
    with _locked(path):
        rows = read_results(path) if path.exists() else []
        key = row_key(row)
        if any(row_key(r) == key for r in rows):
            return False
        _write_rows(path, rows + [row])
    return True


def row_key(row: dict) -> tuple:
    return tuple(row[c] for c in KEY_COLUMNS)


def _settings_of(row: dict) -> tuple:
    return tuple(row[c] for c in SETTING_COLUMNS)


def _describe_settings(row: dict) -> str:
    return ", ".join(f"{c}={row[c]}" for c in SETTING_COLUMNS)


def check_consistent(rows: Sequence[dict], where: str) -> None:
    """All rows must come from one set of settings: a table states one protocol."""
    if not rows:
        return
    first = rows[0]
    for r in rows[1:]:
        if _settings_of(r) != _settings_of(first):
            raise CutPasteError(
                f"{where} mixes runs with different settings: ({_describe_settings(first)}) vs "
                f"({_describe_settings(r)}); keep each protocol in its own output folder"
            )


def merge_results(csv_paths: Sequence[str | Path], out_dir: str | Path) -> Path:
    """Combine results CSVs (e.g. shards) into ``out_dir/results.csv``.

    Rows with the same key and the same results and settings are kept once; the same key with
    different results is a conflict and an error naming both files. Score-file paths are rewritten
    relative to the merged CSV when the file exists. Every input is checked before anything is
    written: on an error ``out_dir`` is left as it was (not even created).

    Raises:
        CutPasteError: a file is not a results CSV, the CSVs conflict or mix settings, or they
            hold no rows at all (nothing to merge).
    """
    if not csv_paths:
        raise CutPasteError("--merge needs at least one CSV")
    out_dir = Path(out_dir)
    target = out_dir / "results.csv"
    merged: dict[tuple, tuple[dict, Path]] = {}
    for p in csv_paths:
        p = Path(p)
        for row in read_results(p):
            row = dict(row)
            row["scores"] = _rebase(row["scores"], p.parent, target.parent)
            key = row_key(row)
            if key in merged:
                other, other_path = merged[key]
                compared = RESULT_COLUMNS + SETTING_COLUMNS
                if any(other[c] != row[c] for c in compared):
                    diff = {c: (other[c], row[c]) for c in compared if other[c] != row[c]}
                    raise CutPasteError(
                        f"conflicting results for job {'/'.join(map(str, key))} in {other_path} "
                        f"and {p}: {diff}"
                    )
                continue
            merged[key] = (row, p)
    rows = [r for r, _ in merged.values()]
    if not rows:
        hold = "holds" if len(csv_paths) == 1 else "hold"
        raise CutPasteError(
            f"no results to tabulate: {', '.join(str(p) for p in csv_paths)} {hold} no rows "
            "(only a header): run the grid first"
        )
    check_consistent(rows, "the CSVs to merge")
    rows.sort(key=_row_order)
    with _locked(target):
        _write_rows(target, rows)
    return target


def _rebase(scores: str | None, src: Path, dst: Path) -> str | None:
    if not scores:
        return scores
    path = Path(scores) if Path(scores).is_absolute() else src / scores
    if not path.exists():
        return scores
    return os.path.relpath(path.resolve(), dst.resolve())


def _row_order(row: dict) -> tuple:
    cats = {c: i for i, c in enumerate(paper.CATEGORIES)}
    variants = {v: i for i, v in enumerate(VARIANTS)}
    return (
        cats.get(row["category"], len(cats)),
        row["category"],
        MODES.index(row["mode"]) if row["mode"] in MODES else 9,
        variants.get(row["variant"], 9),
        row["seed"],
    )


# ============================== running the grid ==============================


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


def plan_workers(device: str | None, workers: int | None) -> list[str]:
    """Devices of the worker processes: one per visible GPU, or ``[device]`` to run in-process.

    ``device`` "auto"/None/"cuda" with several GPUs gives ``cuda:0 .. cuda:k-1`` (``workers`` caps
    k); an explicit ``cuda:N`` or ``cpu`` gives one in-process worker unless ``workers`` asks for
    more (CPU processes share the cores).
    """
    import torch

    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    dev = config.resolve_device(device)
    n_gpu = torch.cuda.device_count() if dev.type == "cuda" else 0
    if dev.type == "cuda" and dev.index is None and n_gpu > 1:
        k = n_gpu if workers is None else min(workers, n_gpu)
        return [f"cuda:{i}" for i in range(k)]
    return [str(dev)] * (workers or 1)


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
    root = Path(data_root)
    out_dir = Path(out_dir)
    available = available_categories(root)
    if categories is None:
        categories = available
    unknown = [c for c in categories if c not in available]
    if unknown:
        raise DataNotFoundError(
            f"unknown categories {unknown} in {root}: valid are {', '.join(available)}"
        )
    if isinstance(patch, bool):
        patch_variants: Sequence[str] = ("3way",) if patch else ()
    else:
        patch_variants = tuple(patch)
    if isinstance(shard, str):
        shard = parse_shard(shard)
    jobs = make_grid(list(categories), list(variants), seeds, patch_variants=patch_variants)
    if not jobs:
        raise ValueError("the grid is empty: give at least one category, variant and seed")
    check_test_splits(root, categories)  # before any training, every problem at once
    if shard is not None:
        jobs = select_shard(jobs, *shard)
    devices = plan_workers(device, workers)
    job = job or train_evaluate_job
    if len(devices) > 1:
        try:
            pickle.dumps(job)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise ValueError(
                f"job {job!r} cannot be sent to worker processes ({exc}): use a top-level function"
            ) from None

    csv_path = results_csv_path(out_dir, shard)
    kind_of_data = data_kind(root, categories)
    fixed = _fixed_columns(settings, kind_of_data)
    existing = read_results(csv_path) if csv_path.exists() else []
    if existing and _settings_of(existing[0]) != _settings_of(fixed):
        raise CutPasteError(
            f"{csv_path} holds runs with other settings ({_describe_settings(existing[0])}); "
            f"this run has ({_describe_settings(fixed)}): use another --out folder"
        )
    done = {row_key(r) for r in existing}
    pending = [j for j in jobs if (j.category, j.variant, j.mode, j.seed) not in done]
    commit = git_commit()

    def on_done(spec: JobSpec, result: dict, seconds: float, dev: str) -> None:
        row = _make_row(spec, result, fixed, seconds, dev, commit, csv_path.parent)
        append_result(csv_path, row)

    specs = [JobSpec(j, root, out_dir / j.rel_dir, settings, devices[0]) for j in pending]
    failures = _execute(
        specs,
        job,
        devices,
        on_done,
        total=len(jobs),
        initial=len(jobs) - len(pending),
        progress=progress,
    )
    rows = read_results(csv_path) if csv_path.exists() else []
    if not csv_path.exists():
        _write_rows(csv_path, [])  # an empty shard still leaves a valid CSV for --merge
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


def _fixed_columns(settings: GridSettings, kind_of_data: str) -> dict:
    return {
        "encoder": settings.encoder,
        "pretrained": settings.pretrained,
        "steps": settings.steps,
        "batch_size": settings.batch_size,
        "image_size": settings.image_size,
        "patch_size": settings.patch_size,
        "dense_patch": settings.dense_patch,
        "dense_stride": settings.dense_stride,
        "data_kind": kind_of_data,
    }


def _make_row(spec, result, fixed, seconds, dev, commit, csv_dir) -> dict:
    job = spec.job
    if "image_auroc" not in result:
        raise CutPasteError(f"job {job.key} returned no 'image_auroc'")

    def fraction(name: str) -> float | None:
        value = result.get(name)
        if value is None:
            return None
        value = float(value)
        if not 0.0 <= value <= 1.0:
            raise CutPasteError(
                f"job {job.key} returned {name}={value}: expected a fraction in [0, 1]"
            )
        return value

    scores = result.get("scores")
    if scores is not None:
        scores = os.path.relpath(Path(scores).resolve(), csv_dir.resolve())
    return {
        "category": job.category,
        "variant": job.variant,
        "mode": job.mode,
        "seed": job.seed,
        "image_auroc": fraction("image_auroc"),
        "pixel_auroc": fraction("pixel_auroc"),
        "aupro": fraction("aupro"),
        **fixed,
        "kind": category_kind(job.category),
        "scores": scores,
        "seconds": round(float(seconds), 3),
        "device": device_name(dev),
        "commit": commit,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_WORKER_DEVICE: str | None = None


def _init_worker(device_queue, n_workers: int) -> None:
    """Runs once in each worker process: take one device; CPU workers share the cores."""
    import torch

    global _WORKER_DEVICE
    _WORKER_DEVICE = device_queue.get()
    if _WORKER_DEVICE.startswith("cuda"):
        torch.cuda.set_device(torch.device(_WORKER_DEVICE))
    else:  # n processes x all-core thread pools would oversubscribe the CPU
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // n_workers))


def _run_one(job: JobFn, spec: JobSpec) -> tuple[dict | None, str | None, float, str]:
    """Run a job, turning an exception into a message (the grid goes on with the other jobs)."""
    if _WORKER_DEVICE is not None:
        spec = dataclasses.replace(spec, device=_WORKER_DEVICE)
    start = time.perf_counter()
    try:
        result = job(spec)
    except Exception as exc:  # noqa: BLE001 - reported per job, the grid continues
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return None, last, time.perf_counter() - start, spec.device
    return result, None, time.perf_counter() - start, spec.device


def _execute(specs, job, devices, on_done, *, total, initial, progress) -> list[tuple[str, str]]:
    from tqdm import tqdm  # plain text bar: works in a terminal, a log file and a notebook

    failures: list[tuple[str, str]] = []
    bar = tqdm(
        total=total,
        initial=initial,
        unit="job",
        desc="reproduce grid",
        disable=not progress,
        dynamic_ncols=True,
    )
    start = time.perf_counter()
    finished = 0

    def account(spec: JobSpec, outcome) -> None:
        nonlocal finished
        result, error, seconds, dev = outcome
        if error is None:
            try:
                on_done(spec, result, seconds, dev)
            except CutPasteError as exc:
                error = str(exc)
        if error is not None:
            failures.append((spec.job.key, error))
        finished += 1
        bar.update(1)
        per_job = (time.perf_counter() - start) / finished  # wall time per job, all workers
        eta = _dt.datetime.now() + _dt.timedelta(seconds=per_job * (len(specs) - finished))
        bar.set_postfix_str(f"{per_job:.1f} s/job, finish ~{eta:%a %H:%M}, failed {len(failures)}")

    try:
        if len(devices) == 1:
            for spec in specs:
                spec = dataclasses.replace(spec, device=devices[0])
                account(spec, _run_one(job, spec))
        elif specs:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # CUDA cannot be used in forked children
            queue = ctx.Queue()
            for d in devices:
                queue.put(d)
            with ProcessPoolExecutor(
                len(devices),
                mp_context=ctx,
                initializer=_init_worker,
                initargs=(queue, len(devices)),
            ) as pool:
                futures = {pool.submit(_run_one, job, s): s for s in specs}
                try:
                    pending = set(futures)
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            try:
                                outcome = fut.result()
                            except Exception as exc:  # a worker died (killed, out of memory)
                                raise CutPasteError(
                                    f"a worker process died ({type(exc).__name__}: {exc}); finished "
                                    "jobs are saved, rerun to resume"
                                ) from exc
                            account(futures[fut], outcome)
                except BaseException:
                    pool.shutdown(wait=False, cancel_futures=True)
                    raise
    finally:
        bar.close()
    return failures


# ============================== the real job ==============================


def train_evaluate_job(spec: JobSpec) -> dict:
    """The real job: train -> Gaussian density on clean train embeddings -> image AUROC.

    Image models (``mode="image"``): :func:`cutpaste_lib.train.train` on the category's train
    images, then :func:`cutpaste_lib.evaluate.evaluate` (Ledoit-Wolf Gaussian fitted on the clean
    train embeddings only). Writes ``checkpoint.pt``/``config.json`` (by ``train``), ``scores.npz``
    (:func:`save_scores`, for the seed ensemble) and ``result.json`` into ``spec.job_dir``.

    Patch models (``mode="patch"``): trained on ``patch_size`` crops, then
    :func:`cutpaste_lib.localize.localize` with ``dense_patch``/``dense_stride`` gives pixel AUROC,
    AUPRO and the image AUROC of the max-of-map score (no score file: Table 1's ensemble uses
    image models only).

    A job killed mid-training resumes from its last checkpoint on the next run; a checkpoint from
    other settings is replaced.
    """
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.errors import CheckpointError
    from cutpaste_lib.io import write_json
    from cutpaste_lib.train import TrainConfig, train

    job, s = spec.job, spec.settings
    patch = job.mode == "patch"
    train_cache = load_cache(spec.data_root, job.category, "train", s.image_size)
    test_cache = load_cache(spec.data_root, job.category, "test", s.image_size)
    cfg = TrainConfig(
        variant=job.variant,
        encoder=s.encoder,
        steps=s.steps,
        batch_size=s.batch_size,
        image_size=s.image_size,
        patch_size=s.patch_size if patch else None,
        seed=job.seed,
        device=spec.device,
        pretrained=s.pretrained,
        weights=s.weights,
        compile=s.compile,
    )
    model = None
    if (spec.job_dir / "checkpoint.pt").is_file():
        try:
            model = train(cfg, train_cache, out_dir=spec.job_dir, resume=True, progress=False).model
        except CheckpointError:  # other settings or a damaged file: train again from scratch
            model = None
    if model is None:
        model = train(cfg, train_cache, out_dir=spec.job_dir, overwrite=True, progress=False).model

    if patch:
        from cutpaste_lib.localize import localize

        loc = localize(
            model,
            train_cache,
            test_cache,
            patch_size=s.dense_patch,
            stride=s.dense_stride,
            device=spec.device,
        )
        write_json(spec.job_dir / "result.json", {k: float(v) for k, v in loc.metrics.items()})
        missing = [m for m in ("image_auroc", "pixel_auroc", "aupro") if m not in loc.metrics]
        if missing:
            raise CutPasteError(
                f"{job.key}: localization gave no {missing} (test split without defects?)"
            )
        return {k: loc.metrics[k] for k in ("image_auroc", "pixel_auroc", "aupro")}

    from cutpaste_lib.evaluate import evaluate

    ev = evaluate(model, train_cache, test_cache, device=spec.device)
    root = Path(spec.data_root).resolve()
    names = [
        str(Path(p).resolve().relative_to(root))
        if Path(p).resolve().is_relative_to(root)
        else str(p)
        for p in test_cache.paths
    ]
    scores = save_scores(
        spec.job_dir / "scores.npz",
        test_scores=ev.scores,
        test_labels=ev.labels,
        test_names=names,
        train_scores=ev.train_scores,
    )
    write_json(spec.job_dir / "result.json", ev.summary())
    return {"image_auroc": ev.image_auroc, "scores": scores}


# ============================== tables ==============================


@dataclass(frozen=True)
class Stat:
    """Mean and standard error (percent) of one cell over seeds."""

    mean: float
    se: float | None  # None with a single seed
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        arr = np.asarray(values, dtype=np.float64) * 100.0
        se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else None
        return cls(float(arr.mean()), se, len(arr))


def summarize(
    rows: Sequence[dict], metric: str = "image_auroc"
) -> dict[tuple[str, str, str], Stat]:
    """``{(category, variant, mode): Stat}`` over seeds for ``metric`` (rows without it are skipped)."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r.get(metric) is not None:
            values.setdefault((r["category"], r["variant"], r["mode"]), []).append(r[metric])
    return {k: Stat.of(v) for k, v in values.items()}


def group_average(stats: Sequence[Stat]) -> Stat:
    """Mean of category means; standard error ``sqrt(sum se_c^2) / C`` (independent categories)."""
    means = [s.mean for s in stats]
    ses = [s.se for s in stats]
    se = None if any(s is None for s in ses) else math.sqrt(sum(s * s for s in ses)) / len(ses)
    return Stat(float(np.mean(means)), se, min(s.n for s in stats))


def ensembles(
    rows: Sequence[dict], base_dir: Path, variant: str = "3way"
) -> dict[str, float | str]:
    """Per category: ensemble image AUROC (fraction) of the seeds' ``variant`` image models.

    A category whose score files are missing (e.g. a shard run elsewhere) maps to a reason string.
    """
    out: dict[str, float | str] = {}
    by_cat: dict[str, list[dict]] = {}
    for r in rows:
        if r["variant"] == variant and r["mode"] == "image":
            by_cat.setdefault(r["category"], []).append(r)
    for cat, rs in by_cat.items():
        if len(rs) < 2:
            out[cat] = "one seed only"
            continue
        files = [base_dir / r["scores"] if r["scores"] else None for r in rs]
        if any(f is None or not f.is_file() for f in files):
            out[cat] = "score files missing"
            continue
        out[cat] = ensemble_auroc(sorted(files))
    return out


def _fmt_stat(s: Stat | None) -> str:
    if s is None:
        return "—"
    return f"{s.mean:.1f}" if s.se is None else f"{s.mean:.1f} ± {s.se:.1f}"


def _fmt_num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def _fmt_delta(ours: float | None, theirs: float | None) -> str:
    return "—" if ours is None or theirs is None else f"{ours - theirs:+.1f}"


def provenance(rows: Sequence[dict]) -> dict[str, str]:
    """How the numbers were obtained, from the rows themselves (one protocol per table)."""
    if not rows:
        return {}
    r = rows[0]
    seeds = sorted({x["seed"] for x in rows})
    dates = sorted(x["finished_at"] for x in rows if x["finished_at"])
    return {
        "model": f"{r['encoder']}, {'ImageNet-pretrained' if r['pretrained'] else 'from scratch'}",
        "steps": str(r["steps"]),
        "batch": f"{r['batch_size']} original images per step",
        "image size": f"{r['image_size']} px (patch models: {r['patch_size']} px crops, dense "
        f"{r['dense_patch']} px patches, stride {r['dense_stride']})",
        "data": _DATA_KIND_TEXT.get(r["data_kind"], r["data_kind"]),
        "seeds": ", ".join(map(str, seeds)),
        "commit": ", ".join(sorted({x["commit"] or "unknown" for x in rows})),
        "date": f"{dates[0][:10]} to {dates[-1][:10]}"
        if dates and dates[0][:10] != dates[-1][:10]
        else (dates[0][:10] if dates else "unknown"),
        "device": ", ".join(sorted({x["device"] or "unknown" for x in rows})),
    }


_VARIANT_TITLE = {"cutpaste": "CutPaste", "scar": "Scar", "union": "Union", "3way": "3-way"}


def format_tables(
    rows: Sequence[dict], *, base_dir: str | Path = ".", title: str | None = None
) -> str:
    """The Markdown report: provenance, Table 1 (+ ensemble), Table 5 (union), Table 2 (patch)."""
    rows = list(rows)
    if not rows:
        raise CutPasteError("no results to tabulate: the CSV is empty (run the grid first)")
    check_consistent(rows, "the results")
    base_dir = Path(base_dir)
    show_paper = rows[0]["data_kind"] == "mvtec"
    prov = provenance(rows)
    lines = [f"# {title or 'CutPaste reproduction: ours next to the paper'}", ""]
    lines.append("How these numbers were obtained:")
    lines += [f"- **{k}**: {v}" for k, v in prov.items()]
    lines += [
        "",
        "Ours: percent, mean ± standard error over seeds (n per cell = number of seeds); group "
        "averages are means of category means with the errors propagated. Δ = ours − paper.",
        f"Paper: {paper.CITATION} Table 1/2/5; averages over the same categories as ours.",
    ]
    if not show_paper:
        lines.append(
            "**These are not MVTec AD categories, so the paper's numbers do not apply and show as "
            "—.** The synthetic data only checks that the pipeline runs end to end."
        )
    cats = [c for c in paper.CATEGORIES if any(r["category"] == c for r in rows)]
    cats += sorted({r["category"] for r in rows} - set(cats))
    kinds = {r["category"]: r["kind"] for r in rows}
    lines += ["", *_table1(rows, cats, kinds, base_dir, show_paper)]
    if any(r["variant"] == "union" and r["mode"] == "image" for r in rows):
        lines += ["", *_table5(rows, cats, kinds, show_paper)]
    if any(r["mode"] == "patch" for r in rows):
        lines += ["", *_table2(rows, cats, kinds, show_paper)]
    return "\n".join(lines) + "\n"


def _groups(cats: Sequence[str], kinds: dict[str, str]) -> list[tuple[str, list[str]]]:
    groups = [
        ("texture mean", [c for c in cats if kinds[c] == "texture"]),
        ("object mean", [c for c in cats if kinds[c] == "object"]),
        ("all mean", list(cats)),
    ]
    return [(name, cs) for name, cs in groups if cs]


def _paper_avg(values: Sequence[float | None]) -> float | None:
    return None if not values or any(v is None for v in values) else float(np.mean(values))


def _table1(rows, cats, kinds, base_dir, show_paper) -> list[str]:
    stats = summarize([r for r in rows if r["mode"] == "image"])
    variants = [v for v in TABLE1_VARIANTS if any(k[1] == v for k in stats)]
    ens = ensembles(rows, base_dir) if "3way" in variants else {}
    has_ens = any(isinstance(v, float) for v in ens.values())
    header = ["category"]
    for v in variants:
        header += [_VARIANT_TITLE[v], "paper", "Δ"]
    if has_ens:
        header += ["Ensemble (3-way seeds)", "paper", "Δ"]
    out = [
        "## Table 1: image AUROC (%)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]

    def paper_value(c: str, col: str) -> float | None:
        return paper.image_auroc(c, col) if show_paper else None

    for c in cats:
        cells = [c]
        for v in variants:
            s = stats.get((c, v, "image"))
            p = paper_value(c, v)
            cells += [_fmt_stat(s), _fmt_num(p), _fmt_delta(s.mean if s else None, p)]
        if has_ens:
            e = ens.get(c)
            e_pct = e * 100 if isinstance(e, float) else None
            p = paper_value(c, "ensemble")
            cells += [
                _fmt_num(e_pct) if e_pct is not None else f"— ({e or 'not run'})",
                _fmt_num(p),
                _fmt_delta(e_pct, p),
            ]
        out.append("| " + " | ".join(cells) + " |")
    for name, cs in _groups(cats, kinds):
        cells = [f"**{name}**"]
        for v in variants:
            cell_stats = [stats.get((c, v, "image")) for c in cs]
            s = group_average(cell_stats) if all(cell_stats) else None
            p = _paper_avg([paper_value(c, v) for c in cs])
            cells += [_fmt_stat(s), _fmt_num(p), _fmt_delta(s.mean if s else None, p)]
        if has_ens:
            es = [ens.get(c) for c in cs]
            e_pct = float(np.mean(es)) * 100 if all(isinstance(e, float) for e in es) else None
            p = _paper_avg([paper_value(c, "ensemble") for c in cs])
            cells += [_fmt_num(e_pct), _fmt_num(p), _fmt_delta(e_pct, p)]
        out.append("| " + " | ".join(cells) + " |")
    if show_paper and len(cats) == len(paper.CATEGORIES):
        stated = ", ".join(f"{_VARIANT_TITLE.get(k, k)} {v}" for k, v in paper.TABLE1_MEAN.items())
        out += ["", f"The paper's stated means (all 15): {stated}."]
    if has_ens:
        out += [
            "",
            "Ensemble: each seed's 3-way model's test scores are standardised by the mean and "
            "standard deviation of its own cross-fitted training scores, then averaged (one "
            "number per category, no error bar).",
        ]
    return out


def _table5(rows, cats, kinds, show_paper) -> list[str]:
    stats = summarize([r for r in rows if r["mode"] == "image" and r["variant"] == "union"])
    out = [
        "## Table 5: Binary (Union), image AUROC (%)",
        "",
        "| group | Union (ours) | paper | Δ |",
        "|---|---|---|---|",
    ]
    cats = [c for c in cats if (c, "union", "image") in stats]
    for name, cs in _groups(cats, kinds):
        s = group_average([stats[(c, "union", "image")] for c in cs])
        group = name.split()[0]
        # The paper gives only group averages over all of a group's categories.
        full = set(cs) == set(
            paper.TEXTURES
            if group == "texture"
            else paper.OBJECTS
            if group == "object"
            else paper.CATEGORIES
        )
        p = paper.TABLE5_UNION[group] if show_paper and full else None
        out.append(f"| {name} | {_fmt_stat(s)} | {_fmt_num(p)} | {_fmt_delta(s.mean, p)} |")
    out += [
        "",
        "The paper publishes only group averages for Union, over the whole group: a partial "
        "group shows —.",
    ]
    return out


def _paper_pixel(category: str, variant: str, show_paper: bool) -> float | None:
    return paper.pixel_auroc(category) if show_paper and variant == "3way" else None


def _table2(rows, cats, kinds, show_paper) -> list[str]:
    patch_rows = [r for r in rows if r["mode"] == "patch"]
    pix = summarize(patch_rows, "pixel_auroc")
    pro = summarize(patch_rows, "aupro")
    img = summarize(patch_rows, "image_auroc")
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in patch_rows)]
    out = []
    for v in variants:
        cs = [c for c in cats if (c, v, "patch") in pix]
        out += [
            f"## Table 2: pixel AUROC (%), {_VARIANT_TITLE[v]} patch model",
            "",
            "| category | pixel AUROC (ours) | paper | Δ | AUPRO (ours) | image AUROC, max patch score (ours) |",
            "|---|---|---|---|---|---|",
        ]
        for c in cs:
            s = pix[(c, v, "patch")]
            p = _paper_pixel(c, v, show_paper)
            out.append(
                f"| {c} | {_fmt_stat(s)} | {_fmt_num(p)} | {_fmt_delta(s.mean, p)} | "
                f"{_fmt_stat(pro.get((c, v, 'patch')))} | {_fmt_stat(img.get((c, v, 'patch')))} |"
            )
        for name, group in _groups(cs, kinds):
            s = group_average([pix[(c, v, "patch")] for c in group])
            p = _paper_avg([_paper_pixel(c, v, show_paper) for c in group])
            pro_stats = [pro.get((c, v, "patch")) for c in group]
            pro_s = group_average(pro_stats) if all(pro_stats) else None
            out.append(
                f"| **{name}** | {_fmt_stat(s)} | {_fmt_num(p)} | {_fmt_delta(s.mean, p)} | "
                f"{_fmt_stat(pro_s)} | |"
            )
        out += [
            "",
            "The paper publishes pixel AUROC of the 3-way patch model only (mean 96.0); "
            "AUPRO has no paper number.",
            "",
        ]
    return out[:-1]


def write_tables(
    results: str | Path | Sequence[dict],
    out_dir: str | Path,
    *,
    base_dir: str | Path | None = None,
    title: str | None = None,
    filename: str = "tables.md",
) -> Path:
    """Write ``out_dir/<filename>`` (Markdown) from a results CSV (or its rows); return its path.

    ``base_dir`` is the folder that score-file paths in the rows are relative to (default: the
    CSV's folder, or ``out_dir`` when rows are given).
    """
    out_dir = Path(out_dir)
    if isinstance(results, (str, Path)):
        csv_path = Path(results)
        rows = read_results(csv_path)
        base = Path(base_dir) if base_dir is not None else csv_path.parent
    else:
        rows = list(results)
        base = Path(base_dir) if base_dir is not None else out_dir
    text = format_tables(rows, base_dir=base, title=title)
    return write_text(out_dir / filename, text)
