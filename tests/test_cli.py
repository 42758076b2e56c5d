"""The `cutpaste` dispatcher: every advertised command exists, errors are one clear line."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from cutpaste_lib import cli
from cutpaste_lib.errors import DataNotFoundError


def test_every_advertised_command_is_implemented():
    for name in cli.COMMANDS:
        module = __import__(f"cutpaste_lib.commands.{name}", fromlist=["run"])
        assert callable(module.add_arguments) and callable(module.run), name


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_help_of_each_command(name, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([name, "--help"])
    assert exc.value.code == 0
    assert "usage: cutpaste " + name in capsys.readouterr().out


def test_unknown_command_and_bad_flag_exit_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        cli.main(["synth", "--out", str(tmp_path / "d"), "--no-such-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_user_errors_are_one_line_without_traceback(monkeypatch, capsys):
    fake = types.ModuleType("cutpaste_lib.commands.synth")

    def run(args):
        raise DataNotFoundError("no dataset at /nowhere: run `cutpaste synth --out /nowhere`")

    fake.add_arguments = lambda parser: None
    fake.run = run
    monkeypatch.setitem(sys.modules, "cutpaste_lib.commands.synth", fake)
    assert cli.main(["synth"]) == 2
    err = capsys.readouterr().err
    assert (
        err.strip()
        == "cutpaste synth: error: no dataset at /nowhere: run `cutpaste synth --out /nowhere`"
    )


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "cutpaste_lib.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in cli.COMMANDS:
        assert name in out
