"""A saved detector: a trained CutPaste model, its fitted Gaussian(s), and a decision threshold.

:class:`Detector` answers the question an engineer asks after training: *is this new image
defective, and where?* It holds

* the network (encoder + head weights and architecture),
* the density fitted on the clean training images: one Gaussian on pooled features (image
  model), or the patch Gaussian(s) of :mod:`cutpaste_lib.localize` with the upsampling and the
  heatmap scale (patch model),
* the **cross-fitted** anomaly scores of the training images (how new normal images score), and
  from them the threshold at a target false-positive rate (:mod:`~cutpaste_lib.detector.threshold`)
  and, for a patch model, a pixel threshold: the same rule on each training map's maximum, so a
  normal image gets any pixel flagged with the same rate as it is flagged as a whole,
* where it came from (checkpoint, category, data, settings) and, when it was made next to a
  labelled test split, the F1-max threshold and the rates at both.

Scores are reported three ways: raw (squared Mahalanobis distance), as the percentage of normal
(cross-fitted) training scores below it, and normalised, ``sigmoid((score - threshold) / std)``
with the standard deviation of the normal scores, so that 0.5 is the threshold (our choice).

Example:
    >>> detector = Detector.load("detector.pt")  # doctest: +SKIP
    >>> prediction = detector.predict(["new_part.png"])  # doctest: +SKIP
    >>> prediction.decisions, prediction.normalized  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from cutpaste_lib.density import GaussianDensity
from cutpaste_lib.detector.artifact import DetectorFileError, read_detector, write_detector
from cutpaste_lib.detector.inputs import expand_paths, load_images
from cutpaste_lib.detector.threshold import FprThreshold, fpr_threshold
from cutpaste_lib.localize import PatchDensity, score_images
from cutpaste_lib.model import CutPasteModel


@dataclass
class Prediction:
    """What :meth:`Detector.predict` returns, one entry per image (CPU tensors).

    Attributes:
        scores: float64 (N,) raw anomaly scores (patch model: the maximum of the patch grid).
        percentiles: float64 (N,) percentage of normal training scores below each score.
        normalized: float64 (N,) ``sigmoid((score - threshold) / std of normal scores)``: 0.5 at the threshold.
        decisions: bool (N,) ``score > threshold`` (defective).
        threshold: the image threshold used.
        maps: float32 (N, H, W) heatmaps (patch model) or ``None``.
        masks: bool (N, H, W) ``map > pixel threshold`` (patch model) or ``None``.
        paths: the files, when the images came from files.
    """

    scores: Tensor
    percentiles: Tensor
    normalized: Tensor
    decisions: Tensor
    threshold: float
    maps: Tensor | None = None
    masks: Tensor | None = None
    paths: list[Path] = field(default_factory=list)


@dataclass
class Detector:
    """A model + fitted density + threshold; build one with :mod:`~cutpaste_lib.detector.build`."""

    model: CutPasteModel
    kind: str  # "image" or "patch"
    image_size: tuple[int, int]
    density: GaussianDensity | PatchDensity
    train_scores: Tensor  # float64 (n,), cross-fitted
    threshold: FprThreshold
    pixel_threshold: FprThreshold | None = None
    train_map_max: Tensor | None = None  # float64 (n,), cross-fitted maps' maxima (patch model)
    info: dict[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ thresholds
    def with_fpr(self, fpr: float, *, confidence: float | None = None) -> Detector:
        """The same detector with its thresholds fixed again at another false-positive rate."""
        conf = self.threshold.confidence if confidence is None else confidence
        pixel = None
        if self.train_map_max is not None:
            pixel = fpr_threshold(self.train_map_max, fpr, confidence=conf)
        return replace(
            self,
            threshold=fpr_threshold(self.train_scores, fpr, confidence=conf),
            pixel_threshold=pixel,
        )

    def percentile(self, scores: Tensor) -> Tensor:
        """Percentage of normal (cross-fitted training) scores strictly below each score."""
        ref = torch.sort(self.train_scores.double().cpu()).values
        below = torch.searchsorted(ref, scores.double().cpu(), side="left")
        return below.double() * (100.0 / ref.numel())

    def normalize(self, scores: Tensor) -> Tensor:
        """``sigmoid((score - threshold) / std of the normal scores)``: 0.5 at the threshold."""
        std = float(self.train_scores.double().std().clamp_min(1e-12))
        return torch.sigmoid((scores.double().cpu() - self.threshold.value) / std)

    # ------------------------------------------------------------------ scoring
    def _device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(
        self, images: Tensor, *, batch_size: int = 64, max_patches: int = 1024
    ) -> tuple[Tensor, Tensor | None]:
        """Raw scores float64 (N,) and heatmaps float32 (N, H, W) (patch model; else ``None``).

        ``images``: uint8 (N, 3, H, W) (or float in [0, 1]) at the detector's image size.
        """
        from cutpaste_lib.features import extract_features

        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != self.image_size:
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} px but the detector works at "
                f"{self.image_size}: pass file paths (resized as in training) or resize them"
            )
        if images.shape[0] == 0:
            return torch.empty(0, dtype=torch.float64), None
        device = self._device()
        if self.kind == "image":
            feats = extract_features(self.model, images, batch_size=batch_size, device=device)
            return self.density.score(feats).double().cpu(), None
        patch_scores, maps = score_images(
            self.model, images.to(device), self.density, max_patches=max_patches, device=device
        )
        return patch_scores.flatten(1).amax(1).double(), maps

    def predict(
        self,
        images: Tensor | Sequence[str | Path],
        *,
        batch_size: int = 64,
        max_patches: int = 1024,
    ) -> Prediction:
        """Scores, decisions (and, for a patch model, heatmaps and masks) of new images.

        ``images``: a uint8 (N, 3, H, W) tensor at the detector's size, or file/folder paths
        (decoded and resized as in training). With paths, an unreadable file raises; use
        :func:`~cutpaste_lib.detector.inputs.load_images` to score the rest and list the bad ones.
        """
        paths: list[Path] = []
        if not torch.is_tensor(images):
            files, problems = expand_paths(images)
            batch = load_images(files, self.image_size)
            problems += batch.failed
            if problems:
                path, reason = problems[0]
                raise DetectorFileError(f"cannot read {path}: {reason}")
            images, paths = batch.images, batch.paths
        scores, maps = self.score(images, batch_size=batch_size, max_patches=max_patches)
        masks = None
        if maps is not None and self.pixel_threshold is not None:
            masks = maps > self.pixel_threshold.value
        return Prediction(
            scores=scores,
            percentiles=self.percentile(scores),
            normalized=self.normalize(scores),
            decisions=scores > self.threshold.value,
            threshold=self.threshold.value,
            maps=maps,
            masks=masks,
            paths=paths,
        )

    # ------------------------------------------------------------------ file
    def to_payload(self) -> dict[str, Any]:
        """The detector as plain data (what :meth:`save` writes; :mod:`~cutpaste_lib.detector.payload`)."""
        from cutpaste_lib.detector.payload import to_payload

        return to_payload(self)

    def save(self, path: str | Path) -> Path:
        """Write the detector file atomically (see :mod:`~cutpaste_lib.detector.artifact`)."""
        return write_detector(path, self.to_payload())

    @classmethod
    def load(cls, path: str | Path, *, device: str | torch.device = "cpu") -> Detector:
        """Read a detector file (``weights_only=True``, checksum checked), model in eval mode on ``device``."""
        from cutpaste_lib.detector.payload import from_payload

        return from_payload(read_detector(path), path, device=device)
