"""Making a :class:`~cutpaste_lib.detector.Detector`: from clean training images, or from the result
of an evaluation (image model) or a localization (patch model) that already fitted the density.

Either way the density is fitted on the clean training images only, and the threshold on their
**cross-fitted** scores (never in-sample). When the result also holds a labelled test split, the
F1-max threshold and the false-positive rate / recall at both thresholds go into ``info``; the
F1-max threshold is fitted on those test images and is never the default.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cutpaste_lib.density import GaussianDensity
from cutpaste_lib.detector.detector import Detector
from cutpaste_lib.detector.threshold import f1_max_threshold, fpr_threshold, rates_at
from cutpaste_lib.errors import CutPasteError

DEFAULT_FPR = 0.01
# Cross-fitting folds of the scores a threshold is fixed on: each fold's density sees 90 % of the
# training images, close to the deployed density fitted on all of them. Two folds (half the images)
# are not enough with fewer images than feature dimensions: a Ledoit-Wolf Gaussian of half the
# images scores new normals *lower* than the full one does, so the threshold would sit too low.
# Measured on the laptop carpet model (120 images, 512-d): 95th percentile of the 2-fold scores
# 1171, 10-fold 1402, leave-one-out 1440, the 40 good test images 1280.
DETECTOR_FOLDS = 10


def labelled_report(detector: Detector, scores, labels, maps=None, masks=None) -> dict[str, Any]:
    """Rates of the detector's threshold and of the F1-max threshold on labelled images.

    ``maps``/``masks`` (patch model) add the same at the pixel level, for the pixel threshold.
    """
    labels = torch.as_tensor(labels)
    report: dict[str, Any] = {
        "n_images": int(labels.numel()),
        "n_defective": int((labels != 0).sum()),
    }
    if 0 < int((labels != 0).sum()) < labels.numel():
        report["at_fpr_threshold"] = rates_at(detector.threshold.value, scores, labels)
        report["f1_max"] = f1_max_threshold(scores, labels)
    if maps is not None and masks is not None and detector.pixel_threshold is not None:
        m = torch.as_tensor(masks).reshape(maps.shape)
        if bool(m.any()) and not bool(m.all()):
            report["pixel_at_threshold"] = rates_at(detector.pixel_threshold.value, maps, m)
            report["pixel_f1_max"] = f1_max_threshold(maps, m)
    return report


def _require_gaussian(density) -> GaussianDensity:
    if not isinstance(density, GaussianDensity):
        raise CutPasteError(
            f"a detector holds a Gaussian density; this evaluation used {type(density).__name__} "
            "(run it with --density ledoit_wolf, ridge or empirical)"
        )
    return density


def _image_detector(model, gaussian, train_scores, size, fpr, confidence, info) -> Detector:
    train_scores = train_scores.double().cpu()
    return Detector(
        model=model.eval(),
        kind="image",
        image_size=(int(size[0]), int(size[1])),
        density=gaussian,
        train_scores=train_scores,
        threshold=fpr_threshold(train_scores, fpr, confidence=confidence),
        info=dict(info or {}),
    )


def detector_from_patch_density(
    model: nn.Module,
    pd,
    fpr: float = DEFAULT_FPR,
    confidence: float = 0.9,
    info: dict[str, Any] | None = None,
) -> Detector:
    """A patch-model detector from a :class:`~cutpaste_lib.localize.PatchDensity` fitted with
    ``folds=DETECTOR_FOLDS`` (its cross-fitted training maps fix both thresholds)."""
    if pd.train_image_scores is None or pd.train_map_max is None:
        raise ValueError("this patch density has no cross-fitted training scores (refit it)")
    if pd.folds < DETECTOR_FOLDS:
        raise ValueError(
            f"this patch density's training maps are {pd.folds}-fold cross-fitted; a threshold "
            f"needs {DETECTOR_FOLDS} folds (each fit close to the full one): fit it with "
            f"fit_patch_density(..., folds={DETECTOR_FOLDS}) or use fit_detector"
        )
    return Detector(
        model=model.eval(),
        kind="patch",
        image_size=tuple(pd.grid.image_size),
        density=pd,
        train_scores=pd.train_image_scores,
        threshold=fpr_threshold(pd.train_image_scores, fpr, confidence=confidence),
        pixel_threshold=fpr_threshold(pd.train_map_max, fpr, confidence=confidence),
        train_map_max=pd.train_map_max,
        info=dict(info or {}),
    )


def detector_from_evaluation(
    model: nn.Module,
    result,
    *,
    image_size: int | tuple[int, int],
    fpr: float = DEFAULT_FPR,
    confidence: float = 0.9,
    info: dict[str, Any] | None = None,
) -> Detector:
    """An image-model detector from an :class:`~cutpaste_lib.evaluate.EvaluationResult`.

    Reuses its density (fitted on all clean train images), so the detector scores the test images
    exactly as the evaluation did; the threshold comes from ``DETECTOR_FOLDS``-fold cross-fitted
    train scores (the evaluation's own are two-fold). ``image_size``: the size the evaluation's
    images were resized to.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else image_size
    gaussian = _require_gaussian(result.density)
    train_scores = gaussian.cross_fitted_scores(result.train, folds=DETECTOR_FOLDS)
    detector = _image_detector(model, gaussian, train_scores, size, fpr, confidence, info)
    detector.info["labelled"] = labelled_report(detector, result.scores, result.labels)
    return detector


def detector_from_localization(
    model: nn.Module,
    result,
    *,
    fpr: float = DEFAULT_FPR,
    confidence: float = 0.9,
    test_masks=None,
    test_labels=None,
    info: dict[str, Any] | None = None,
) -> Detector:
    """A patch-model detector from a :class:`~cutpaste_lib.localize.LocalizationResult` of
    ``localize(..., folds=DETECTOR_FOLDS)``.

    ``test_labels`` (and ``test_masks``) of the localized test split add the labelled report.
    """
    detector = detector_from_patch_density(model, result.patch_density, fpr, confidence, info)
    if test_labels is not None:
        detector.info["labelled"] = labelled_report(
            detector, result.image_scores, test_labels, result.maps, test_masks
        )
    return detector


def fit_detector(
    model: nn.Module,
    train_cache,
    *,
    kind: str = "image",
    fpr: float = DEFAULT_FPR,
    confidence: float = 0.9,
    patch_size: int | None = None,
    stride: int = 4,
    density: str = "auto",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    info: dict[str, Any] | None = None,
) -> Detector:
    """Fit a detector on a cache of **clean training** images (refused otherwise).

    ``kind="image"``: one Ledoit–Wolf Gaussian on pooled features; ``kind="patch"``: the patch
    Gaussian(s) of :func:`~cutpaste_lib.localize.fit_patch_density` (``patch_size`` default: an
    eighth of the image side, ``density`` "auto"/"shared"/"per-location").
    """
    from cutpaste_lib.features import embed
    from cutpaste_lib.localize import fit_patch_density

    size = tuple(train_cache.image_size)
    if kind == "image":
        emb = embed(model, train_cache, batch_size=batch_size, device=device)
        gaussian = GaussianDensity().fit(emb)
        train_scores = gaussian.cross_fitted_scores(emb, folds=DETECTOR_FOLDS)
        return _image_detector(model, gaussian, train_scores, size, fpr, confidence, info)
    if kind != "patch":
        raise ValueError(f"kind must be 'image' or 'patch', got {kind!r}")
    pd = fit_patch_density(
        model,
        train_cache,
        patch_size=patch_size or max(2, size[0] // 8),
        stride=stride,
        mode=density,
        device=device,
        folds=DETECTOR_FOLDS,
    )
    return detector_from_patch_density(model, pd, fpr, confidence, info)
