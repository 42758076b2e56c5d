"""The house rules of the library's layout, checked: short modules, all of them on the map."""

from __future__ import annotations

from pathlib import Path

import pytest

import cutpaste_lib

PACKAGE = Path(cutpaste_lib.__file__).resolve().parent
MAP = PACKAGE.parent / "docs" / "ARCHITECTURE.md"
MAX_LINES = 300  # "about 250 lines and one concept each"; this is the hard ceiling
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_longer_than_the_ceiling(path):
    n = len(path.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(PACKAGE.parent)} has {n} lines: split it by concept"


def test_every_module_is_on_the_architecture_map():
    text = MAP.read_text(encoding="utf-8")
    missing = [
        str(p.relative_to(PACKAGE.parent))
        for p in MODULES
        if p.name != "__init__.py" and f"`{p.relative_to(PACKAGE.parent)}`" not in text
    ]
    assert not missing, f"modules missing from {MAP.name}: {missing}"
