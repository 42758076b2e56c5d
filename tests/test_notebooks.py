"""The notebooks as stored: what a learner opens on GitHub must be a complete run of the current code.

CI executes the notebooks (nbval, lax: only the outputs that are stable are compared), so these
checks are about the stored outputs, which nbval does not compare: every code cell ran, none failed,
the figures are there (a re-execution under ``MPLBACKEND=Agg`` silently drops them all), and the
protocol each notebook prints is the one the library ships (stale outputs fail here after a change
of :data:`cutpaste_lib.config.LAPTOP`; ``make notebooks`` regenerates them).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cutpaste_lib import config

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _code_cells(path: Path) -> list[dict]:
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _text(cell: dict) -> str:
    return "".join("".join(o.get("text", "")) for o in cell.get("outputs", []))


def test_the_course_has_its_notebooks():
    assert [p.name[:2] for p in NOTEBOOKS] == ["00", "01", "02", "03", "04", "05", "06"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_stored_notebook_is_one_complete_run_with_its_figures(path):
    cells = _code_cells(path)
    counts = [c["execution_count"] for c in cells if c["source"]]
    assert None not in counts, f"{path.name}: cells stored without running"
    assert counts == sorted(counts), (
        f"{path.name}: cells stored from more than one run, out of order"
    )
    errors = [o for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: stored error {errors[0].get('ename')}"
    figures = sum(
        any(k.startswith("image/") for k in o.get("data", {}))
        for c in cells
        for o in c.get("outputs", [])
    )
    assert figures >= 3, (
        f"{path.name}: {figures} figures stored (executed without the inline backend?)"
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_stored_notebook_shows_the_shipped_laptop_protocol(path):
    first = _text(_code_cells(path)[0])
    s = config.LAPTOP
    assert first.startswith(f"protocol: {s.name} "), f"{path.name}: {first[:80]!r}"
    if "Settings(" in first:  # notebook 00 prints them all
        assert repr(s) in first, f"{path.name} stores other settings: make notebooks"
    for number in re.findall(r"(\d+) (?:training )?steps", first):
        assert int(number) == s.steps, (
            f"{path.name} was run with {number} steps, LAPTOP has {s.steps}"
        )
    for number in re.findall(r"batch (\d+)", first):
        assert int(number) == s.batch_size, f"{path.name} was run with batch {number}"
    for number in re.findall(r"image(?: size)?:? (\d+)|\| (\d+) px", first):
        assert s.image_size in {int(n) for n in number if n}, f"{path.name}: image size {number}"
