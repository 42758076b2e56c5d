"""Two-fold cross-fitting: the one implementation behind every out-of-fold training score.

In-sample scores of a density fitted on fewer images than feature dimensions are far smaller,
and less spread, than those of new clean images (the density has seen its own images), so they
cannot calibrate anything. Cross-fitting splits the rows into two folds, even and odd indices,
fits the same estimator on each fold and scores every row with the fit of the *other* fold, so
each score is that of an image its density has not seen, as a clean test image would be. The
image-level densities (:meth:`cutpaste_lib.density.GaussianDensity.cross_fitted_scores`) and both
patch densities of :mod:`cutpaste_lib.localize` use :func:`cross_fit`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import Tensor

Model = TypeVar("Model")


def fold_rows(n: int, device: str | torch.device | None = None) -> tuple[Tensor, Tensor]:
    """The two folds of ``n`` rows: even and odd indices (int64 on ``device``)."""
    idx = torch.arange(n, device=device)
    return idx[0::2], idx[1::2]


def cross_fit(
    n: int,
    *,
    fit: Callable[[Tensor], Model],
    score: Callable[[Model, Tensor], Tensor],
    device: str | torch.device | None = None,
) -> Tensor:
    """Out-of-fold scores of ``n`` rows: each fold's rows scored by the fit of the other fold.

    Args:
        n: number of rows (at least 2, so both folds are non-empty).
        fit: ``fit(rows)`` fits a model on the rows at these indices and returns it.
        score: ``score(model, rows)`` returns the scores (len(rows), ...) of those rows.
        device: where the index tensors live (that of the data they index).

    Returns:
        (n, ...) scores in row order, dtype and device of what ``score`` returns. The folds are
        fitted one after the other (even first), each scored before the next is fitted, so only
        one fold's model is alive at a time.
    """
    even, odd = fold_rows(n, device)
    out = None
    for fit_rows, score_rows in ((even, odd), (odd, even)):
        scores = score(fit(fit_rows), score_rows)
        if out is None:
            out = scores.new_empty((n, *scores.shape[1:]))
        out[score_rows] = scores
    return out
