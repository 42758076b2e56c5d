"""Combining results CSVs (e.g. the shards of one grid run on several machines) into one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cutpaste_lib import paper
from cutpaste_lib.augment import VARIANTS
from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.reproduce.grid import MODES
from cutpaste_lib.reproduce.results import (
    RESULT_COLUMNS,
    SETTING_COLUMNS,
    check_consistent,
    locked,
    read_results,
    row_key,
    write_rows,
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
    with locked(target):
        write_rows(target, rows)
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
