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


def test_system_errors_name_the_file_in_one_line(monkeypatch, capsys):
    fake = types.ModuleType("cutpaste_lib.commands.synth")

    def run(args):
        raise PermissionError(13, "Permission denied", "/root/locked/out")

    fake.add_arguments = lambda parser: None
    fake.run = run
    monkeypatch.setitem(sys.modules, "cutpaste_lib.commands.synth", fake)
    assert cli.main(["synth"]) == 2
    assert capsys.readouterr().err.strip() == (
        "cutpaste synth: error: Permission denied: /root/locked/out"
    )


def test_no_command_prints_the_command_list(capsys):
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert all(name in err for name in cli.COMMANDS) and "args" not in err


@pytest.mark.parametrize(
    "command", ["train", "evaluate", "localize", "gradcam", "reproduce", "demo", "synth"]
)
def test_out_that_is_a_file_is_refused_before_anything_runs(command, tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    for out in (taken, taken / "sub"):
        with pytest.raises(SystemExit) as exc:
            cli.main([command, "--out", str(out)])
        assert exc.value.code == 2
        assert f"--out: {taken} is a file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "mine"


def test_download_root_that_is_a_file_is_refused_before_any_network(tmp_path, capsys):
    taken = tmp_path / "taken.txt"
    taken.write_text("mine")
    with pytest.raises(SystemExit) as exc:
        cli.main(["download", "mvtec", "--root", str(taken)])
    assert exc.value.code == 2 and f"--root: {taken} is a file" in capsys.readouterr().err


def test_path_arguments_say_what_is_wrong(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.pt").write_bytes(b"")
    for argv, message in (
        (
            ["evaluate", "--checkpoint", str(run)],
            f"{run} is a folder, not a file (pass the checkpoint.pt inside it)",
        ),
        (
            ["evaluate", "--data", str(run / "checkpoint.pt")],
            f"{run / 'checkpoint.pt'} is a file, not a folder",
        ),
    ):
        with pytest.raises(SystemExit):
            cli.main(argv)
        assert message in capsys.readouterr().err


def test_console_script_is_installed():
    out = subprocess.run(
        [sys.executable, "-m", "cutpaste_lib.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for name in cli.COMMANDS:
        assert name in out
