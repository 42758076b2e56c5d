"""The setup files agree with each other and with what the README promises."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_installs_this_package_with_dev_extra_and_nothing_else():
    text = (ROOT / "environment.yml").read_text()
    deps = text.split("dependencies:", 1)[1]
    lines = [line.split("#")[0].strip() for line in deps.splitlines()]
    pip_items = [line[2:].strip() for line in lines if line.startswith("- ") and "pip:" not in line]
    # conda-level packages are only the interpreter and pip; everything else comes from pyproject via pip
    conda_pkgs = {
        _name(item) for item in pip_items if not item.startswith("-e") and not item.startswith('"')
    }
    assert conda_pkgs == {"python", "pip"}, conda_pkgs
    assert any(re.fullmatch(r"""-e\s+["']?\.\[dev\]["']?""", item) for item in pip_items), pip_items


def test_python_version_in_environment_satisfies_requires_python():
    text = (ROOT / "environment.yml").read_text()
    version = re.search(r"python=(\d+)\.(\d+)", text)
    assert version, "environment.yml must pin a python minor version"
    minimum = re.search(r">=\s*(\d+)\.(\d+)", _pyproject()["project"]["requires-python"])
    assert tuple(map(int, version.groups())) >= tuple(map(int, minimum.groups()))


def test_dependencies_cover_the_field_stack():
    project = _pyproject()["project"]
    runtime = {_name(d) for d in project["dependencies"]}
    dev = {_name(d) for d in project["optional-dependencies"]["dev"]}
    assert {
        "torch",
        "torchvision",
        "numpy",
        "pillow",
        "scikit-learn",
        "matplotlib",
        "seaborn",
        "tqdm",
        "tensorboard",
    } <= runtime
    assert {"pytest", "nbval", "jupyterlab", "ipykernel", "ruff"} <= dev
    torch_spec = next(d for d in project["dependencies"] if _name(d) == "torch")
    assert ">=2.4" in torch_spec.replace(" ", "")


def test_console_script_points_at_cli_main():
    assert _pyproject()["project"]["scripts"]["cutpaste"] == "cutpaste_lib.cli:main"
    from cutpaste_lib.cli import main

    assert callable(main)


def test_readme_shows_the_two_commands_first_and_makefile_has_them():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines() if line.strip()]
    assert commands[:2] == ["make demo", "make test"], commands
    makefile = (ROOT / "Makefile").read_text()
    for target in ("demo", "test", "lab"):
        assert re.search(rf"^{target}:", makefile, re.M), target


def test_ci_runs_make_test_and_fails_on_error():
    script = (ROOT / ".ci" / "run").read_text()
    assert "set -e" in script and re.search(r"^make test\s*$", script, re.M)
