"""Per-image anomaly scores of each job, and the seed ensemble built from them (Table 1)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from cutpaste_lib.density import ensemble_scores
from cutpaste_lib.errors import CutPasteError, DataNotFoundError
from cutpaste_lib.io import atomic_write

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
    (cross-fitted) *training* scores (never test statistics) with
    :func:`cutpaste_lib.density.ensemble_scores`, so models whose Mahalanobis distances live on
    different scales count equally.
    """
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
    scores, labels = standardized_ensemble(files)
    if len(np.unique(labels)) < 2:
        raise CutPasteError(f"the test set of {files[0]} has only one class: AUROC undefined")
    return float(roc_auc_score(labels, scores))


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
