"""Ensembles of density scores: each model's scores standardised by its own training scores."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cutpaste_lib.density.features import check_finite


def ensemble_scores(
    test_scores: Sequence[Tensor], train_scores: Sequence[Tensor] | None = None, *, densities=None
) -> Tensor:
    """Average of several models' scores, each first standardised with its **training**-score statistics.

    The paper ensembles 5 models; their scores live on different scales, so each is turned into
    ``(s - mean_train) / std_train`` before averaging. Test statistics are never used.

    Args:
        test_scores: one (M,) score tensor per model (same images, same order).
        train_scores: one tensor of training scores per model, or
        densities: the fitted densities (their stored training-score statistics are used).
    """
    if (train_scores is None) == (densities is None):
        raise ValueError("pass exactly one of train_scores or densities")
    if not test_scores:
        raise ValueError("ensemble_scores needs at least one model's scores")
    refs = train_scores if train_scores is not None else densities
    if len(refs) != len(test_scores):
        raise ValueError(
            f"{len(test_scores)} test score tensors but {len(refs)} training references"
        )
    shape = test_scores[0].shape
    total = torch.zeros(shape, dtype=torch.float64)
    for s, ref in zip(test_scores, refs):
        if s.shape != shape:
            raise ValueError(f"score tensors differ in shape: {tuple(s.shape)} vs {tuple(shape)}")
        s = check_finite(s, "scores").to(torch.float64).cpu()
        if train_scores is not None:
            t = check_finite(ref, "training scores").to(torch.float64).cpu()
            total += (s - t.mean()) / t.std().clamp_min(1e-12)
        else:
            total += ref.standardize(s.to(ref.train_score_mean.device)).cpu()
    return total / len(test_scores)
