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


def fold_rows(
    n: int, device: str | torch.device | None = None, folds: int = 2
) -> tuple[Tensor, ...]:
    """The ``folds`` folds of ``n`` rows: row ``i`` is in fold ``i % folds`` (even / odd for two)."""
    idx = torch.arange(n, device=device)
    return tuple(idx[j::folds] for j in range(folds))


def cross_fit(
    n: int,
    *,
    fit: Callable[[Tensor], Model],
    score: Callable[[Model, Tensor], Tensor],
    device: str | torch.device | None = None,
    folds: int = 2,
) -> Tensor:
    """Out-of-fold scores of ``n`` rows: each fold's rows scored by the fit of all the other rows.

    Args:
        n: number of rows (at least ``folds``, so every fold is non-empty).
        fit: ``fit(rows)`` fits a model on the rows at these indices and returns it.
        score: ``score(model, rows)`` returns the scores (len(rows), ...) of those rows.
        device: where the index tensors live (that of the data they index).
        folds: 2 (default: each fit sees half the rows) or more (each fit sees ``1 - 1/folds`` of
            them, closer to a fit on all rows; ``folds = n`` is leave-one-out).

    Returns:
        (n, ...) scores in row order, dtype and device of what ``score`` returns. The folds are
        fitted one after the other (the fit without fold 1 first), each scored before the next is fitted, so only
        one model is alive at a time.
    """
    if not 2 <= folds <= n:
        raise ValueError(f"cross-fitting {n} rows needs 2 <= folds <= {n}, got {folds}")
    parts = fold_rows(n, device, folds)
    out = None
    for j in range(folds):
        k = (j + 1) % folds  # the fold scored now; two folds: fit the even rows, score the odd
        score_rows = parts[k]
        fit_rows = parts[j] if folds == 2 else torch.cat(parts[:k] + parts[k + 1 :]).sort().values
        scores = score(fit(fit_rows), score_rows)
        if out is None:
            out = scores.new_empty((n, *scores.shape[1:]))
        out[score_rows] = scores
    return out
