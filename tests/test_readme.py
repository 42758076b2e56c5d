"""The README's usage block is the API contract: run it as written."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import torch
from sklearn.metrics import roc_auc_score

README = Path(__file__).resolve().parent.parent / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_one_usage_block():
    assert len(_python_blocks()) == 1


def test_readme_usage_block_runs_and_reports_a_true_auroc(synthetic_root, monkeypatch, capsys):
    monkeypatch.setenv("CUTPASTE_DATA", str(synthetic_root))
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(_python_blocks()[0], str(README), "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    expected = roc_auc_score(result.labels.numpy(), result.scores.numpy())
    assert result.image_auroc == pytest.approx(expected, abs=1e-12)
    assert capsys.readouterr().out.strip() == f"image AUROC {expected:.3f}"
    # the Gaussian was fitted on the clean train images only
    assert result.train.split == "train" and result.train.augmentation is None
    assert int(result.train.labels.sum()) == 0


def _documented_commands():
    """Every `cutpaste ...` line in the Markdown files and in the notebooks' markdown cells."""
    root = README.parent
    docs = [README, *sorted(root.glob("*/README.md")), root / "benchmarks" / "RESULTS.md"]
    texts = [(p.name, p.read_text()) for p in docs if p.is_file()]
    for nb in sorted((root / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        texts += [(nb.name, "".join(c["source"])) for c in cells if c["cell_type"] == "markdown"]
    for where, text in texts:
        for line in re.sub(r"\\\n\s*", " ", text).splitlines():  # join continued lines
            line = line.strip().lstrip("$ ").split("  #")[0].split(" # ")[0]
            if line.startswith("cutpaste ") and not line.startswith("cutpaste-"):
                yield where, line.rstrip("\\").strip()


def test_every_documented_cutpaste_flag_exists():
    """Docs drift: a flag in the README or a notebook that the command does not have is an error."""
    from cutpaste_lib import cli

    lines = list(_documented_commands())
    assert len(lines) >= 15, lines  # the README's CLI block alone has more
    for where, line in lines:
        tokens = shlex.split(line.replace("[", " ").replace("]", " ").replace("|", " "))
        command = tokens[1]
        assert command in cli.COMMANDS, f"{where}: unknown command in {line!r}"
        parser, _ = cli.command_parser(command)
        known = {s for action in parser._actions for s in action.option_strings}
        for token in tokens[2:]:
            flag = token.split("=")[0]
            if flag.startswith("--"):
                assert flag in known, f"{where}: `cutpaste {command}` has no {flag} ({line!r})"
