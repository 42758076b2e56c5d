"""Image-level evaluation: embeddings through the image cache, a Gaussian density, image AUROC.

The path of an evaluation (paper §2.3, Table 1):

1. :func:`embed` the **clean train** split (un-augmented, defect-free) -> :class:`Embeddings`;
2. fit a :class:`~cutpaste_lib.density.GaussianDensity` on them (refuses anything else);
3. :func:`embed` the test split and score it: squared Mahalanobis distance, one image at a time
   in effect (a score never depends on the other test images);
4. image AUROC overall and per defect type (each defect type against all good test images).

:func:`embed_augmented` produces CutPaste / Scar embeddings for the t-SNE figure only (paper
Figure 3); they carry their augmentation name, so a density refuses to be fitted on them.

The feature extraction (:func:`extract_features`, :func:`embed`, :func:`embed_augmented`) lives in
:mod:`cutpaste_lib.features` and is re-exported here.

Example:
    >>> import torch
    >>> from cutpaste_lib.evaluate import image_auroc
    >>> image_auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1]))
    0.75
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cutpaste_lib.density import (
    Embeddings,
    GaussianDensity,
    GaussianKDE,
    check_finite,
    l2_normalize,
    make_density,
)
from cutpaste_lib.errors import DatasetError
from cutpaste_lib.features import embed, embed_augmented, extract_features

__all__ = [
    "EvaluationResult",
    "embed",
    "embed_augmented",
    "evaluate",
    "evaluate_embeddings",
    "extract_features",
    "image_auroc",
    "per_defect_auroc",
    "tsne_points",
]


# ---------------------------------------------------------------- metrics


def image_auroc(scores: Tensor | np.ndarray, labels: Tensor | np.ndarray) -> float:
    """Image AUROC as a fraction in [0, 1] (:func:`cutpaste_lib.metrics.auroc`; sklearn's if absent)."""
    try:
        from cutpaste_lib.metrics import auroc
    except ImportError:  # metrics.py is optional for this module
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(np.asarray(labels), np.asarray(scores)))
    return float(auroc(scores, labels))


def per_defect_auroc(
    scores: Tensor, labels: Tensor, defects: list[str] | tuple[str, ...]
) -> dict[str, float]:
    """AUROC of each defect type against all good images (MVTec per-defect convention)."""
    scores, labels = torch.as_tensor(scores).cpu(), torch.as_tensor(labels).cpu()
    good = labels == 0
    out = {}
    for name in sorted({d for d, lab in zip(defects, labels.tolist()) if lab != 0}):
        sel = good | torch.tensor([d == name for d in defects])
        out[name] = image_auroc(scores[sel], labels[sel])
    return out


# ---------------------------------------------------------------- evaluation


@dataclass
class EvaluationResult:
    """Everything an image-level evaluation produced (scores are float64, on the CPU).

    ``train_scores`` are the **cross-fitted** scores of the clean train images
    (:meth:`~cutpaste_lib.density.GaussianDensity.cross_fitted_scores`: each half scored by a
    density fitted on the other half), i.e. how new clean images score; they standardise this
    model in the seed ensemble.
    """

    scores: Tensor
    labels: Tensor
    defects: tuple[str, ...]
    image_auroc: float
    per_defect: dict[str, float]
    density: GaussianDensity | GaussianKDE
    density_settings: dict[str, Any]
    train: Embeddings
    test: Embeddings
    train_scores: Tensor = field(repr=False, default=None)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly numbers: AUROC (fractions), per-defect AUROC, counts, density settings."""
        labels = self.labels
        return {
            "image_auroc": self.image_auroc,
            "per_defect_auroc": dict(self.per_defect),
            "n_train": len(self.train),
            "n_test": int(labels.numel()),
            "n_test_good": int((labels == 0).sum()),
            "n_test_defective": int((labels != 0).sum()),
            "density": dict(self.density_settings),
        }


def evaluate_embeddings(
    train: Embeddings, test: Embeddings, *, density: str = "ledoit_wolf", **density_kwargs
) -> EvaluationResult:
    """Fit ``density`` on clean train embeddings, score the test embeddings, compute image AUROC."""
    check_finite(train.features, "train embeddings")
    check_finite(test.features, "test embeddings")
    if bool((test.labels == 0).all()) or bool((test.labels != 0).all()):
        raise DatasetError(
            f"the {test.category or 'test'} test split needs both good and defective images to compute an AUROC"
        )
    estimator = make_density(density, **density_kwargs).fit(train)
    scores = estimator.score(test).cpu()
    settings = {"method": density, **estimator.config()}
    if isinstance(estimator, GaussianDensity):
        settings["shrinkage"] = float(estimator.shrinkage.mean())
    else:
        settings["bandwidth_value"] = float(estimator.bandwidth)
    return EvaluationResult(
        scores=scores,
        labels=test.labels,
        defects=test.defects,
        image_auroc=image_auroc(scores, test.labels),
        per_defect=per_defect_auroc(scores, test.labels, test.defects),
        density=estimator,
        density_settings=settings,
        train=train,
        test=test,
        train_scores=estimator.cross_fitted_scores(train).cpu(),
    )


def evaluate(
    model: nn.Module,
    train_cache,
    test_cache,
    *,
    density: str = "ledoit_wolf",
    batch_size: int = 64,
    device: str | torch.device | None = None,
    **density_kwargs,
) -> EvaluationResult:
    """Image AUROC of ``model`` on one category: embed, fit the density on clean train, score the test split.

    Args:
        model: trained (or untrained, as a baseline) :class:`~cutpaste_lib.model.CutPasteModel`.
        train_cache: ImageCache of the **train** split (defect-free); test_cache: the test split.
        density: "ledoit_wolf" (default), "ridge", "empirical" or "kde".
        batch_size, device: for :func:`extract_features`.
        density_kwargs: passed to the estimator (e.g. ``ridge=1e-3``, ``bandwidth=0.1``).
    """
    train = embed(model, train_cache, batch_size=batch_size, device=device)
    test = embed(model, test_cache, batch_size=batch_size, device=device)
    return evaluate_embeddings(train, test, density=density, **density_kwargs)


def tsne_points(
    groups: dict[str, Tensor], *, seed: int = 0, perplexity: float = 30.0, max_iter: int = 1000
) -> dict[str, np.ndarray]:
    """2-D t-SNE (scikit-learn) of several groups of features, embedded together (paper Figure 3).

    Features are L2-normalised first (the space the density sees). ``perplexity`` is capped at
    ``(n - 1) / 3`` for small sets; up to 200 points use the exact gradient (faster than
    Barnes-Hut at that size). Returns ``{group: (n_group, 2) array}``.
    """
    from sklearn.manifold import TSNE

    names = [k for k, v in groups.items() if len(v)]
    feats = torch.cat([l2_normalize(torch.as_tensor(groups[k]).double().cpu()) for k in names])
    n = feats.shape[0]
    if n < 5:
        raise ValueError(f"t-SNE needs at least 5 points, got {n}")
    tsne = TSNE(
        2,
        perplexity=min(perplexity, (n - 1) / 3),
        init="pca",
        random_state=seed,
        max_iter=max_iter,
        method="exact" if n <= 200 else "barnes_hut",
    )
    points = tsne.fit_transform(feats.numpy())
    out, start = {}, 0
    for k in names:
        out[k] = points[start : start + len(groups[k])]
        start += len(groups[k])
    return out
