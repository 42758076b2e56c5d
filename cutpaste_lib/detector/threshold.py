"""A decision threshold from normal images only, at a target false-positive rate, with its uncertainty.

The scores come from **cross-fitted** training images (each fold scored by a density fitted on
the other folds, :func:`cutpaste_lib.density.crossfit.cross_fit`), so they are distributed like
those of new normal images, not like the far smaller in-sample scores. The rule is "defective if
``score > threshold``" with the threshold the ``k``-th smallest of the ``n`` normal scores. For a
new normal image exchangeable with them, ``P(score > s_(k)) = (n + 1 - k) / (n + 1)`` exactly
(continuous scores), so the smallest ``k`` with ``(n + 1 - k) / (n + 1) <= fpr`` is taken: the
**expected** false-positive rate is at most the target. The rate of *this* threshold (given the
``n`` scores) is random, Beta(n + 1 - k, k) distributed; its central interval is stated.

Exchangeable only approximately: each cross-fitted score comes from a density fitted on fewer
images than the deployed one. With fewer images than feature dimensions that matters: a
Ledoit–Wolf Gaussian of half the images scores new normals lower than the full one, so a
two-fold threshold is too low (anti-conservative). The detector therefore cross-fits with ten
folds (each fit sees 90 % of the images; :data:`cutpaste_lib.detector.build.DETECTOR_FOLDS`).

Example:
    >>> import torch
    >>> t = fpr_threshold(torch.arange(1.0, 200.0), fpr=0.01)  # 199 normal scores 1..199
    >>> t.value, t.expected_fpr
    (198.0, 0.01)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from torch import Tensor

__all__ = ["FprThreshold", "f1_max_threshold", "fpr_threshold", "rates_at"]


@dataclass(frozen=True)
class FprThreshold:
    """A threshold fixed on normal scores. Attributes are plain numbers (JSON-friendly).

    Attributes:
        value: images with ``score > value`` are called defective.
        target_fpr: the rate asked for.
        expected_fpr: ``(n + 1 - rank) / (n + 1)``, the false-positive rate on new normal images
            averaged over draws of the normals (at most the target unless ``warning`` says otherwise).
        low, high: central ``confidence`` interval of this threshold's false-positive rate (Beta).
        confidence: the interval's coverage (default 0.9).
        n_normals: normal scores it was fixed on; rank: ``value`` is the rank-th smallest of them.
        warning: why the asked rate cannot be trusted (too few normals), or ``None``.
    """

    value: float
    target_fpr: float
    expected_fpr: float
    low: float
    high: float
    confidence: float
    n_normals: int
    rank: int
    warning: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FprThreshold:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__})

    def describe(self) -> str:
        """One line for a person: the threshold, the expected rate and its interval."""
        return (
            f"threshold {self.value:.6g}: expected false-positive rate {self.expected_fpr:.2%} "
            f"(target {self.target_fpr:.2%}; {self.confidence:.0%} interval {self.low:.2%}-"
            f"{self.high:.2%}, from {self.n_normals} cross-fitted normal images)"
        )


def _as_numpy(x) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def fpr_threshold(normal_scores, fpr: float = 0.01, *, confidence: float = 0.9) -> FprThreshold:
    """The threshold at a target false-positive rate on normal images (see the module notes).

    Args:
        normal_scores: anomaly scores of normal images that the density did **not** see (the
            cross-fitted training scores; in-sample scores would give far too many false positives).
        fpr: target false-positive rate, in (0, 1).
        confidence: coverage of the stated interval of the achieved rate.

    Raises:
        ValueError: no scores, non-finite scores, or a rate or confidence outside (0, 1).
    """
    from scipy.stats import beta

    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be in (0, 1), got {fpr}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    s = np.sort(_as_numpy(normal_scores))
    n = s.size
    if n == 0:
        raise ValueError("no normal scores to fix a threshold on")
    if not np.isfinite(s).all():
        raise ValueError("normal scores must be finite")
    rank = math.ceil((n + 1) * (1.0 - fpr) - 1e-9)
    warning = None
    if rank > n:
        rank = n
        warning = (
            f"{n} normal images cannot fix a false-positive rate of {fpr:.2%}: the lowest "
            f"reachable is 1/(n+1) = {1 / (n + 1):.2%} (the largest normal score); give at least "
            f"{math.ceil(1 / fpr - 1)} normal images, or ask for a higher rate"
        )
    a, b = n + 1 - rank, rank
    tail = (1.0 - confidence) / 2.0
    low, high = (float(v) for v in beta.ppf([tail, 1.0 - tail], a, b))
    if warning is None and high > 3 * fpr:
        warning = (
            f"the false-positive rate of this threshold is uncertain: {confidence:.0%} interval "
            f"{low:.2%}-{high:.2%} for a target of {fpr:.2%} ({n} normal images; more narrow it)"
        )
    return FprThreshold(
        value=float(s[rank - 1]),
        target_fpr=float(fpr),
        expected_fpr=a / (n + 1),
        low=low,
        high=high,
        confidence=float(confidence),
        n_normals=int(n),
        rank=int(rank),
        warning=warning,
    )


def rates_at(threshold: float, scores, labels) -> dict[str, float]:
    """False-positive rate, recall, precision and F1 of the rule ``score > threshold``."""
    s, y = _as_numpy(scores), _as_numpy(labels) != 0
    pred = s > threshold
    tp, fp = int((pred & y).sum()), int((pred & ~y).sum())
    fn, neg = int((~pred & y).sum()), int((~y).sum())
    return {
        "threshold": float(threshold),
        "fpr": fp / neg if neg else float("nan"),
        "recall": tp / (tp + fn) if tp + fn else float("nan"),
        "precision": tp / (tp + fp) if tp + fp else float("nan"),
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan"),
    }


def f1_max_threshold(scores, labels) -> dict[str, float]:
    """The threshold of the best F1 on labelled images (rule ``score > threshold``) and its rates.

    It is fitted on labelled test images, so its rates are optimistic for new images; it is
    reported beside the normal-only threshold, never used as the default.

    Raises:
        ValueError: the labels hold no defective or no good image.
    """
    s, y = _as_numpy(scores), _as_numpy(labels) != 0
    if not y.any() or y.all():
        raise ValueError("the F1-max threshold needs both good and defective images")
    # candidate cuts: just below every score (all at or above it flagged), in decreasing order
    values = np.unique(s)[::-1]
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    tp_cum, fp_cum = np.cumsum(y_sorted), np.cumsum(~y_sorted)
    last = np.searchsorted(-s_sorted, -values, side="right") - 1  # last index with score >= v
    tp, fp = tp_cum[last], fp_cum[last]
    f1 = 2 * tp / (2 * tp + fp + (y.sum() - tp))
    best = int(np.argmax(f1))
    below = values[best + 1] if best + 1 < values.size else values[best] - 1.0
    cut = float((values[best] + below) / 2.0)  # midway: robust to rounding in a saved file
    return rates_at(cut, s, y)
