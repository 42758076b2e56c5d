"""Fast-mode switch, data root and device resolution."""

from __future__ import annotations

import pytest
import torch

from cutpaste_lib import config


@pytest.mark.parametrize(
    "value,expected",
    [("1", True), ("true", True), ("YES", True), ("0", False), ("", False), ("no", False)],
)
def test_fast_mode_reads_env(monkeypatch, value, expected):
    monkeypatch.delenv("CUTPASTE_PROTOCOL", raising=False)
    monkeypatch.setenv("CUTPASTE_FAST", value)
    assert config.fast_mode() is expected
    assert config.settings() == config.LAPTOP  # CI trains the laptop protocol too


def test_paper_settings_follow_the_paper():
    s = config.PAPER
    assert (s.image_size, s.steps, s.batch_size, s.patch_size, s.dense_patch, s.dense_stride) == (
        256,
        65_536,
        32,
        64,
        32,
        4,
    )


def test_data_root_prefers_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CUTPASTE_DATA", str(tmp_path))
    assert config.data_root() == tmp_path
    monkeypatch.delenv("CUTPASTE_DATA")
    monkeypatch.setenv("CUTPASTE_FAST", "1")
    monkeypatch.delenv("CUTPASTE_PROTOCOL", raising=False)
    assert config.data_root() == config.REPO_ROOT / "data" / "synthetic_128px_120"  # laptop
    monkeypatch.setenv("CUTPASTE_PROTOCOL", "paper")
    assert config.data_root() == config.REPO_ROOT / "data" / "synthetic"


def test_shared_dataset_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("CUTPASTE_NOSUCHSET", str(tmp_path))
    assert config.shared_dataset("nosuchset") == tmp_path
    monkeypatch.delenv("CUTPASTE_NOSUCHSET")
    assert config.shared_dataset("nosuchset") is None


def test_resolve_device():
    assert config.resolve_device("cpu") == torch.device("cpu")
    assert config.resolve_device(None).type in {"cpu", "cuda"}
    with pytest.raises(ValueError, match="unknown device"):
        config.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            config.resolve_device("cuda")


def test_compile_mode_uses_cuda_graphs_only_on_cuda():
    assert config.compile_mode(torch.device("cuda:1")) == "reduce-overhead"
    assert config.compile_mode("cuda") == "reduce-overhead"
    assert config.compile_mode(torch.device("cpu")) == "default"
