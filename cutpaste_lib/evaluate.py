"""Image-level evaluation: embeddings through the image cache, a Gaussian density, image AUROC.

The path of an evaluation (paper §2.3, Table 1):

1. :func:`embed` the **clean train** split (un-augmented, defect-free) -> :class:`Embeddings`;
2. fit a :class:`~cutpaste_lib.density.GaussianDensity` on them (refuses anything else);
3. :func:`embed` the test split and score it: squared Mahalanobis distance, one image at a time
   in effect (a score never depends on the other test images);
4. image AUROC overall and per defect type (each defect type against all good test images).

:func:`embed_augmented` produces CutPaste / Scar embeddings for the t-SNE figure only (paper
Figure 3); they carry their augmentation name, so a density refuses to be fitted on them.

Example:
    >>> import torch
    >>> from cutpaste_lib.evaluate import extract_features
    >>> encoder = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> extract_features(encoder, torch.zeros(5, 3, 16, 16, dtype=torch.uint8), batch_size=2).shape
    torch.Size([5, 4])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from cutpaste_lib.data import normalize
from cutpaste_lib.density import (
    Embeddings,
    GaussianDensity,
    GaussianKDE,
    check_finite,
    l2_normalize,
    make_density,
)
from cutpaste_lib.errors import DatasetError
from cutpaste_lib.model import eval_mode
from cutpaste_lib.precision import compute_precision

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


def _images_of(images) -> Tensor:
    data = getattr(images, "images", images)  # an ImageCache or a tensor
    if not torch.is_tensor(data) or data.ndim != 4 or data.shape[1] != 3:
        raise ValueError(
            "images must be an ImageCache or a (N, 3, H, W) uint8 / float [0, 1] tensor"
        )
    return data


def _feature_fn(model: nn.Module):
    """Pooled encoder features: ``model.encoder`` for a CutPasteModel, else the module's output."""
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, nn.Module):
        return encoder

    def run(x: Tensor) -> Tensor:
        out = model(x)
        return out.features if hasattr(out, "features") else out

    return run


def _model_device(model: nn.Module) -> torch.device:
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


def extract_features(
    model: nn.Module, images, *, batch_size: int = 64, device: str | torch.device | None = None
) -> Tensor:
    """Average-pooled encoder features of every image, float32 (N, D) on the CPU.

    Args:
        model: a :class:`~cutpaste_lib.model.CutPasteModel` (its ``.encoder`` is used) or any module
            mapping normalised images to (B, D) features (or to an output with ``.features``).
        images: an :class:`~cutpaste_lib.data.ImageCache` or a uint8 / float-in-[0, 1] (N, 3, H, W) tensor.
            They are ImageNet-normalised here (:func:`cutpaste_lib.data.normalize`).
        batch_size: images per forward pass.
        device: where to run; default the model's device. CUDA runs in bf16 autocast with channels_last.

    The model runs in eval mode under ``torch.inference_mode`` and is returned to its previous mode.
    If ``device`` differs from the model's device the model is moved there (in place, like ``.to``).
    """

    data = _images_of(images)
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    if _model_device(model) != device:
        model = model.to(device)
    fn = _feature_fn(model)
    policy = compute_precision(device)
    out = []
    with eval_mode(model), torch.inference_mode():
        for start in range(0, data.shape[0], batch_size):
            x = normalize(data[start : start + batch_size].to(device, non_blocking=True))
            with policy.autocast():
                feats = fn(policy.prepare(x))
            out.append(feats.float().reshape(feats.shape[0], -1).cpu())
    if not out:
        raise ValueError("no images to extract features from")
    return torch.cat(out)


def embed(
    model: nn.Module, cache, *, batch_size: int = 64, device: str | torch.device | None = None
) -> Embeddings:
    """:func:`extract_features` of an ImageCache, with the cache's split, labels and defects attached."""
    return Embeddings.from_cache(
        cache, extract_features(model, cache, batch_size=batch_size, device=device)
    )


def embed_augmented(
    model: nn.Module,
    cache,
    augmentation: str,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: str | torch.device | None = None,
) -> Embeddings:
    """Embeddings of CutPaste- or Scar-augmented copies of ``cache``'s images (for figures only).

    The result is marked with ``augmentation``, so :meth:`GaussianDensity.fit` refuses it.
    """
    from cutpaste_lib import augment

    if augmentation not in ("cutpaste", "scar"):
        raise ValueError(f"augmentation must be 'cutpaste' or 'scar', got {augmentation!r}")
    images = _images_of(cache)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    augmented = getattr(augment, augmentation)(
        images.float() / 255.0 if images.dtype == torch.uint8 else images, generator=generator
    ).images
    feats = extract_features(model, augmented, batch_size=batch_size, device=device)
    n = feats.shape[0]
    return Embeddings(
        feats,
        torch.ones(n, dtype=torch.int64),
        (augmentation,) * n,
        str(cache.split),
        str(getattr(cache, "category", "")),
        augmentation,
    )


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
