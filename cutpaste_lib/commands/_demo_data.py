"""Which categories ``cutpaste demo`` runs, and the table of what their splits hold."""

from __future__ import annotations

from pathlib import Path


def dataset_summary(root: Path, categories: list[str]) -> str:
    """A table of each category's split counts and defect types, as the demo prints it first."""
    from cutpaste_lib.data import load_split

    lines = [f"{'category':<16} {'train':>5} {'test good':>9} {'defective':>9}  defect types"]
    for cat in categories:
        train, test = load_split(root, cat, "train"), load_split(root, cat, "test")
        bad = [s for s in test if s.label == 1]
        types = sorted({s.defect for s in bad})
        lines.append(
            f"{cat:<16} {len(train):>5} {len(test) - len(bad):>9} {len(bad):>9}  {', '.join(types)}"
        )
    return "\n".join(lines)


def choose_categories(requested: list[str] | None, available: list[str], root: Path) -> list[str]:
    """The categories a demo runs: ``requested`` as given, ``["all"]`` for the synthetic three (or
    every category of a user's folder), nothing for the course's story category (every category
    found when the folder has no ``synth_carpet``). Raises :class:`cli.UserError` naming the unknown."""
    from cutpaste_lib import cli
    from cutpaste_lib.config import STORY_CATEGORY
    from cutpaste_lib.data import SYNTHETIC_CATEGORIES

    if requested == ["all"]:
        categories = [c for c in SYNTHETIC_CATEGORIES if c in available] or list(available)
    elif requested:
        categories = list(requested)
    else:
        categories = [STORY_CATEGORY] if STORY_CATEGORY in available else list(available)
    unknown = sorted(set(categories) - set(available))
    if unknown:
        raise cli.UserError(
            f"--categories {' '.join(unknown)} not found under {root}; found: {', '.join(available)}"
        )
    return categories
