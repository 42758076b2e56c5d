"""The README's usage block is the API contract: run it as written."""

from __future__ import annotations

import re
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
