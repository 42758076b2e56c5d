"""Shared fixtures: a tiny synthetic MVTec-layout dataset, the shared real dataset, the gpu marker."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op torch thread per test: on 2 cores, spinning threads that compete with another
    process run many times slower than one (measured on the shared development machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs CUDA: no GPU on this machine (run on a GPU to exercise it)"
    )
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    """A small synthetic dataset (all synthetic categories, 64 px), generated once per test session."""
    from cutpaste_lib.data import generate_synthetic

    root = tmp_path_factory.mktemp("synthetic") / "data"
    return generate_synthetic(root, size=64, n_train=12, n_test_good=4, n_test_defect=2, seed=0)


@pytest.fixture(scope="session")
def bsdata_root():
    """The real ball-screw pitting set from ../shared (never copied into the repo)."""
    from cutpaste_lib.config import shared_dataset

    root = shared_dataset("bsdata")
    if root is None:
        pytest.skip(
            "real dataset bsdata not found: set CUTPASTE_BSDATA or place ../shared/datasets/bsdata"
        )
    return root
