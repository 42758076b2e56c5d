"""Atomic writes: the file appears whole or not at all, with the permissions a plain open() gives."""

from __future__ import annotations

import os
import stat

import pytest

from cutpaste_lib import io


def test_atomic_write_gives_the_mode_a_plain_file_gets(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = io.write_text(tmp_path / "atomic.txt", "x")
    assert stat.S_IMODE(os.stat(written).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)
    old = os.umask(0o077)
    try:
        private = io.write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = io.write_text(tmp_path / "out.json", "old")

    def fail(path):
        path.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        io.atomic_write(target, fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]
