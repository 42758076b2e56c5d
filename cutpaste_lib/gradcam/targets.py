"""What Grad-CAM explains: a :data:`Target` maps the model's output to one scalar per image.

:func:`anomaly_score_target` is the paper's choice (§4.2), :func:`logit_target` a proxy-class logit;
:func:`parse_target` reads the command line's ``score`` / ``distance`` / ``logit:K``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from cutpaste_lib.gradcam.errors import GradCAMError

__all__ = ["Target", "anomaly_score_target", "logit_target", "parse_target"]

Target = Callable[[Any], torch.Tensor]
"""Maps the model's output (a tensor or a ``ModelOutput``) to one scalar per image, shape ``(B,)``."""


def _field(output: Any, name: str) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    value = getattr(output, name, None)
    if value is None and isinstance(output, dict):
        value = output.get(name)
    if not isinstance(value, torch.Tensor):
        raise GradCAMError(
            f"model output of type {type(output).__name__} has no tensor field {name!r}"
        )
    return value


def logit_target(k: int) -> Target:
    """Target = logit ``k`` of the proxy classifier (0 normal, 1 CutPaste, 2 scar for 3-way).

    Works with a model returning logits directly or a ``ModelOutput`` with a ``logits`` field.
    """
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise ValueError(f"class index must be an integer >= 0, got {k!r}")

    def target(output: Any) -> torch.Tensor:
        logits = _field(output, "logits")
        if logits.ndim != 2 or k >= logits.shape[1]:
            raise GradCAMError(
                f"logit:{k} asked for, but the model gives logits of shape {tuple(logits.shape)}"
            )
        return logits[:, k]

    target.__name__ = f"logit_{k}"
    return target


def anomaly_score_target(density: Any, *, field: str = "features", sqrt: bool = False) -> Target:
    """Target = the anomaly score ``density.score(features)`` of every image.

    The score is the **squared** Mahalanobis distance (the paper's log-density up to constants).
    With ``sqrt=True`` the target is the distance itself, ``sqrt(score)``. The two rank images the
    same, but Grad-CAM weights are gradients: ``d sqrt(s) = ds / (2 sqrt(s))``, so each image's map is
    divided by ``2 sqrt(s)``. The per-image min-max normalised maps are therefore identical; a
    pixel AUROC pooled over images *without* that normalisation can change (notebook 05 shows it).

    ``features`` are the pooled encoder features (``ModelOutput.features``), the same ones
    :func:`cutpaste_lib.features.extract_features` gives the density at fit time. The density's own
    ``score`` is called, so the gradient flows through exactly the preprocessing it applies (the L2
    normalisation) and the Mahalanobis form it uses; it must therefore be differentiable (no
    ``no_grad``/``detach`` inside). Features are cast to float32 at least, so a bf16 autocast
    forward pass never reaches the covariance algebra.
    """
    if not callable(getattr(density, "score", None)):
        raise GradCAMError(f"{type(density).__name__} has no score(features) method")

    def target(output: Any) -> torch.Tensor:
        feats = _field(output, field)
        feats = feats.to(torch.promote_types(feats.dtype, torch.float32))
        mean = getattr(density, "mean", None)
        if isinstance(mean, torch.Tensor) and mean.device != feats.device:
            feats = feats.to(mean.device)  # the density may live on another device than the model
        scores = density.score(feats)
        if not isinstance(scores, torch.Tensor) or not scores.requires_grad:
            raise GradCAMError(
                f"{type(density).__name__}.score returned a tensor without a gradient; Grad-CAM "
                "on the anomaly score needs a differentiable score (no detach/no_grad inside)"
            )
        return scores.clamp_min(0).sqrt() if sqrt else scores

    target.__name__ = "anomaly_distance" if sqrt else "anomaly_score"
    return target


def parse_target(spec: str, density: Any | None = None) -> Target:
    """``"score"`` (squared Mahalanobis distance), ``"distance"`` (its square root), both needing
    ``density``, or ``"logit:K"`` -> a :data:`Target`."""
    text = str(spec).strip().lower()
    if text in ("score", "distance"):
        if density is None:
            raise GradCAMError(f"target {text!r} needs a fitted GaussianDensity")
        return anomaly_score_target(density, sqrt=text == "distance")
    if text.startswith("logit:"):
        try:
            k = int(text.split(":", 1)[1])
        except ValueError:
            k = -1
        if k >= 0:
            return logit_target(k)
    raise ValueError(
        f"unknown Grad-CAM target {spec!r}: use 'score', 'distance' or 'logit:K' (K >= 0)"
    )
