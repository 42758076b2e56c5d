"""Table cells from results rows: mean and standard error over seeds, and group averages."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


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


def fmt_stat(s: Stat | None) -> str:
    """``mean ± se`` with one decimal (``—`` for a missing cell, the mean alone for one seed)."""
    if s is None:
        return "—"
    return f"{s.mean:.1f}" if s.se is None else f"{s.mean:.1f} ± {s.se:.1f}"


def fmt_num(x: float | None) -> str:
    return "—" if x is None else f"{x:.1f}"


def fmt_delta(ours: float | None, theirs: float | None) -> str:
    return "—" if ours is None or theirs is None else f"{ours - theirs:+.1f}"
