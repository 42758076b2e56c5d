"""Features plus where they came from, and the one provenance guard every density fit goes through.

A density must model clean images only: fitting on test images leaks test-set information into
the detector, and fitting on proxy-task augmentations (CutPaste / Scar) or defective images models
the anomalies themselves. :func:`check_provenance` refuses all three; :class:`Embeddings` (the
image-level densities) and :func:`cutpaste_lib.localize.fit_patch_density` (the patch densities)
both call it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from cutpaste_lib.errors import CutPasteError


class ProvenanceError(CutPasteError, ValueError):
    """Features that must not be used to fit a density (test, defective or augmented images)."""


def check_provenance(
    *, split: str, labels: Tensor | None, augmentation: str | None = None, what: str = "a density"
) -> None:
    """Raise :class:`ProvenanceError` unless the data are clean, un-augmented training images.

    Args:
        split: the dataset split the data come from; only "train" may be fitted.
        labels: 0 good / 1 defective per image, or None when unknown (a caller vouching for them).
        augmentation: None for real images, else the proxy-task augmentation applied to them.
        what: what is being fitted, for the message ("a density", "the patch density").
    """
    if augmentation is not None:
        raise ProvenanceError(
            f"refusing to fit {what} on {augmentation!r}-augmented embeddings: the detector must "
            "model clean images only (fitting on proxy-task augmentations leaks them into the detector)"
        )
    if split != "train":
        raise ProvenanceError(
            f"refusing to fit {what} on the {split!r} split: fit on the train split only "
            "(a density fitted on test images would score them with test-set information)"
        )
    if labels is not None and bool((labels != 0).any()):
        raise ProvenanceError(
            f"refusing to fit {what} on {int((labels != 0).sum())} defective images: "
            "fit on defect-free images only"
        )


@dataclass(frozen=True)
class Embeddings:
    """Features plus where they came from, so a density cannot be fitted on the wrong images by accident.

    Build it with :meth:`from_cache` (what :func:`cutpaste_lib.evaluate.embed` does) or
    :meth:`clean_train`. Only ``split == "train"``, all labels 0 and ``augmentation is None`` may
    be fitted.

    Attributes:
        features: (N, D) pooled features or (N, *locations, D) dense patch features.
        labels: int64 (N,), 0 good / 1 defective.
        defects: N defect names ("good" for good images).
        split: "train" or "test".
        category: dataset category ("" when unknown).
        augmentation: None for real images; the proxy-task augmentation ("cutpaste", "scar", ...)
            applied to them otherwise (such embeddings are for figures only, never for fitting).
    """

    features: Tensor
    labels: Tensor
    defects: tuple[str, ...]
    split: str
    category: str = ""
    augmentation: str | None = None
    paths: tuple = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not torch.is_tensor(self.features) or self.features.ndim < 2:
            raise ValueError(
                "Embeddings.features must be a tensor of shape (N, D) or (N, *locations, D)"
            )
        n = self.features.shape[0]
        labels = torch.as_tensor(self.labels, dtype=torch.int64).reshape(-1).cpu()
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "defects", tuple(self.defects))
        object.__setattr__(self, "paths", tuple(self.paths))
        if labels.numel() != n or len(self.defects) != n or (self.paths and len(self.paths) != n):
            raise ValueError(
                f"Embeddings: {n} feature rows but {labels.numel()} labels, {len(self.defects)} defect names"
                f" and {len(self.paths)} paths"
            )

    @classmethod
    def from_cache(cls, cache, features: Tensor, *, augmentation: str | None = None) -> Embeddings:
        """Attach an :class:`~cutpaste_lib.data.ImageCache`'s split, labels, defects and paths to ``features``."""
        if features.shape[0] != len(cache):
            raise ValueError(
                f"{features.shape[0]} feature rows for an image cache of {len(cache)} images"
            )
        return cls(
            features=features,
            labels=cache.labels,
            defects=tuple(cache.defects),
            split=str(cache.split),
            category=str(getattr(cache, "category", "")),
            augmentation=augmentation,
            paths=tuple(getattr(cache, "paths", ())),
        )

    @classmethod
    def clean_train(cls, features: Tensor, *, category: str = "") -> Embeddings:
        """Declare ``features`` to come from un-augmented, defect-free training images (tests, notebooks)."""
        n = features.shape[0]
        return cls(
            features=features,
            labels=torch.zeros(n, dtype=torch.int64),
            defects=("good",) * n,
            split="train",
            category=category,
        )

    def __len__(self) -> int:
        return self.features.shape[0]

    def check_fittable(self) -> None:
        """Raise :class:`ProvenanceError` unless these are embeddings of clean training images."""
        check_provenance(split=self.split, labels=self.labels, augmentation=self.augmentation)


def fit_input(data: Embeddings) -> Tensor:
    """The features of ``data`` after the provenance guard; a raw tensor is refused with a pointer."""
    if torch.is_tensor(data):
        raise TypeError(
            "fit() takes an Embeddings object (e.g. cutpaste_lib.evaluate.embed(model, train_cache)), so the "
            "density cannot be fitted on augmented or test images by accident; for a tensor you know holds "
            "clean train features, call fit_clean_features(features)"
        )
    if not isinstance(data, Embeddings):
        raise TypeError(f"fit() takes an Embeddings object, got {type(data).__name__}")
    data.check_fittable()
    return data.features
