"""Grad-CAM that explains the anomaly score (or a proxy-class logit) of a CutPaste model.

Grad-CAM (Selvaraju et al., 2017) asks which places of a convolutional feature map ``A``
(channels ``k``, positions ``ij``) push a scalar target ``y`` up. Each channel gets the weight

.. math::  \\alpha_k = \\frac{1}{hw} \\sum_{ij} \\frac{\\partial y}{\\partial A^k_{ij}},
           \\qquad L = \\mathrm{ReLU}\\Big(\\sum_k \\alpha_k A^k\\Big),

and ``L`` (``h x w``) is upsampled bilinearly to the input size. The paper (§4.2) applies it to the
image-level 3-way model with ``y`` = the **anomaly score**, the squared Mahalanobis distance of the pooled
features under the Gaussian fitted on clean train images (88.3 pixel AUROC, against 96.0 for the
patch model). Explaining a proxy-classifier logit instead (as some reimplementations do) answers a
different question: "what looks like a pasted patch?", not "what makes this image anomalous?".

Choices where the paper is silent (stated here, repeated in notebook 05):

* The default layer is the encoder's ``layer4`` (ResNet-18: 8x8 at 256 px, 2x2 at 64 px); for
  encoders without one (EfficientNet, the paper's Table 3 encoder) the last block of ``features``
  (:func:`default_layer`).
* Maps are returned raw (not min-max scaled per image): the pixel metrics pool pixels of all test
  images, and a per-image rescaling would erase the fact that an anomalous image gets a larger map
  than a normal one. :func:`minmax_per_image` gives the scaled version for display, which is what
  ``pytorch_grad_cam`` returns.
* Gradients are taken with ``torch.autograd.grad`` from the hooked activation only, so parameters'
  ``.grad`` are never touched and frozen models work; the model runs in eval mode (BatchNorm uses its
  running statistics), which is what makes one backward pass of the *sum* of per-image targets give
  every image the gradient of its own target.

Example:
    >>> import torch
    >>> from torchvision.models import resnet18
    >>> from cutpaste_lib.gradcam import grad_cam, logit_target
    >>> net = resnet18(num_classes=3)
    >>> res = grad_cam(net, torch.randn(2, 3, 64, 64), logit_target(1), layer="layer4")
    >>> tuple(res.maps.shape), tuple(res.low_res.shape), bool((res.maps >= 0).all())
    ((2, 64, 64), (2, 2, 2), True)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cutpaste_lib.data import normalize
from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.metrics import aupro, pixel_auroc
from cutpaste_lib.model import eval_mode
from cutpaste_lib.precision import Precision, compute_precision

Target = Callable[[Any], torch.Tensor]
"""Maps the model's output (a tensor or a ``ModelOutput``) to one scalar per image, shape ``(B,)``."""

DEFAULT_LAYER = "layer4"


class LayerNotFoundError(CutPasteError, ValueError):
    """The requested Grad-CAM layer is not a submodule of the model."""


class GradCAMError(CutPasteError, ValueError):
    """Grad-CAM cannot be computed for this model, layer and target combination."""


class GradCAMResult(NamedTuple):
    """Grad-CAM of one batch (float32 tensors; float64 when the model runs in float64).

    Attributes:
        maps: ``(B, H, W)`` ReLU'd and bilinearly upsampled to the input size (raw scale).
        low_res: ``(B, h, w)`` the same map at the layer's resolution (before upsampling).
        weights: ``(B, C)`` the channel weights ``alpha_k`` (spatial mean of the gradient).
        scores: ``(B,)`` the target value of every image (the anomaly score or the logit).
        layer: the dotted name of the layer that was explained.
    """

    maps: torch.Tensor
    low_res: torch.Tensor
    weights: torch.Tensor
    scores: torch.Tensor
    layer: str


# ---------------------------------------------------------------- layers


def available_layers(model: nn.Module, max_depth: int | None = None) -> list[str]:
    """Dotted names of ``model``'s submodules (``max_depth`` limits the number of dotted parts)."""
    names = [n for n, _ in model.named_modules() if n]
    if max_depth is not None:
        names = [n for n in names if n.count(".") < max_depth]
    return names


def default_layer(model: nn.Module) -> str:
    """The last convolutional stage of the encoder: ``layer4`` for ResNets (the paper's choice),
    the last block of ``features`` for EfficientNet / ConvNeXt / VGG-style encoders.

    Raises:
        LayerNotFoundError: neither exists (pass a layer name; the message lists them).
    """
    encoder = getattr(model, "encoder", model)
    if isinstance(getattr(encoder, "layer4", None), nn.Module):
        return DEFAULT_LAYER
    features = getattr(encoder, "features", None)
    if isinstance(features, nn.Sequential) and len(features) > 0:
        return f"features.{len(features) - 1}"
    shown = available_layers(model, max_depth=2)
    raise LayerNotFoundError(
        f"no default Grad-CAM layer for {type(encoder).__name__} (neither layer4 nor features): "
        f"name one, e.g. one of {', '.join(shown[-8:])}"
    )


def resolve_layer(model: nn.Module, name: str = DEFAULT_LAYER) -> tuple[str, nn.Module]:
    """Find the submodule called ``name`` (dotted, e.g. ``"encoder.layer4"`` or ``"layer3.1"``).

    For a model with an ``encoder`` attribute (a :class:`~cutpaste_lib.model.CutPasteModel`), a name
    that is not found on the model itself is looked up in the encoder, so ``"layer4"`` means
    ``"encoder.layer4"``.

    Returns:
        ``(full dotted name, module)``.

    Raises:
        LayerNotFoundError: with the list of available layer names.
    """
    if not isinstance(name, str) or not name.strip():
        raise LayerNotFoundError(f"layer name must be a non-empty string, got {name!r}")
    candidates = [name]
    if isinstance(getattr(model, "encoder", None), nn.Module) and not name.startswith("encoder."):
        candidates.append(f"encoder.{name}")
    for cand in candidates:
        try:
            return cand, model.get_submodule(cand)
        except AttributeError:
            continue
    shown = available_layers(model, max_depth=3)
    more = len(available_layers(model)) - len(shown)
    suffix = f" (and {more} deeper ones, see model.named_modules())" if more > 0 else ""
    raise LayerNotFoundError(
        f"layer {name!r} not found in {type(model).__name__}; available layers: "
        f"{', '.join(shown)}{suffix}"
    )


# ---------------------------------------------------------------- targets


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
    :func:`cutpaste_lib.evaluate.extract_features` gives the density at fit time. The density's own
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


# ---------------------------------------------------------------- the computation


class _Capture:
    """Forward hook that swaps the layer's output for a fresh leaf we can differentiate against.

    Cutting the graph below the layer means nothing upstream is kept for backward (less memory) and
    parameters need not require grad. The clone keeps the leaf intact when the next module works in
    place (``ReLU(inplace=True)`` after ``bn1``), so ``A`` is the layer's true output.
    """

    def __init__(self) -> None:
        self.leaves: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, inputs: Any, output: Any) -> torch.Tensor:
        if not isinstance(output, torch.Tensor):
            raise GradCAMError(f"Grad-CAM layer must output a tensor, got {type(output).__name__}")
        leaf = output.detach().requires_grad_(True)
        self.leaves.append(leaf)
        return leaf.clone()


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    target: Target,
    *,
    layer: str = DEFAULT_LAYER,
    upsample: bool = True,
    amp: bool | None = None,
) -> GradCAMResult:
    """Grad-CAM of one batch of model inputs.

    Args:
        model: any ``nn.Module``; it is put in eval mode for the call and restored afterwards.
        x: the model's input ``(B, C, H, W)`` (for CutPaste models: ``normalize(images)``), on the
            model's device.
        target: output -> ``(B,)`` scalars, e.g. :func:`anomaly_score_target` or :func:`logit_target`.
        layer: dotted layer name (see :func:`resolve_layer`); its output must be ``(B, C, h, w)``.
        upsample: bilinear upsampling of the map to ``(H, W)``; when False ``maps`` = ``low_res``.
        amp: bf16 autocast for the forward pass (default: on CUDA only). The target and the map are
            computed in float32.

    Returns:
        A :class:`GradCAMResult` (tensors on ``x``'s device, detached).

    Raises:
        LayerNotFoundError: unknown layer (the message lists the available ones).
        GradCAMError: the layer's output is not 4-D, runs several times, or the target does not
            depend on it.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(
            f"expected a (B, C, H, W) input tensor, got {getattr(x, 'shape', type(x))}"
        )
    name, module = resolve_layer(model, layer)
    amp = (x.device.type == "cuda") if amp is None else amp
    capture = _Capture()
    handle = module.register_forward_hook(capture)
    try:
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            with Precision(x.device.type, bf16=amp).autocast():
                output = model(x)
            if len(capture.leaves) != 1:
                raise GradCAMError(
                    f"layer {name!r} ran {len(capture.leaves)} times in one forward pass; Grad-CAM "
                    "needs a layer that runs exactly once"
                )
            scores = target(output)
            _check_scores(scores, x.shape[0])
            activation = capture.leaves[0]
            if activation.ndim != 4 or activation.shape[0] != x.shape[0]:
                raise GradCAMError(
                    f"layer {name!r} outputs shape {tuple(activation.shape)}; Grad-CAM needs a "
                    "convolutional (B, C, h, w) feature map"
                )
            # Images do not interact in eval mode, so d(sum_b y_b)/dA_b = dy_b/dA_b for every b.
            (grad,) = torch.autograd.grad(scores.sum(), activation, allow_unused=True)
            if grad is None:
                raise GradCAMError(
                    f"the target does not depend on layer {name!r} (is the layer after the output "
                    "the target reads?)"
                )
    finally:
        handle.remove()
    # float32 at least (bf16 activations under autocast), float64 kept for float64 models.
    dtype = torch.promote_types(activation.dtype, torch.float32)
    grad = grad.to(dtype)
    act = activation.detach().to(dtype)
    weights = grad.mean(dim=(2, 3))
    low_res = torch.relu(torch.einsum("bc,bchw->bhw", weights, act))
    if upsample:
        maps = F.interpolate(
            low_res[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False
        )[:, 0]
    else:
        maps = low_res
    return GradCAMResult(maps, low_res, weights, scores.detach().to(dtype), name)


def _check_scores(scores: Any, batch: int) -> None:
    if not isinstance(scores, torch.Tensor) or scores.shape != (batch,):
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise GradCAMError(
            f"the target must give one scalar per image, shape ({batch},), got {shape}"
        )
    if not scores.requires_grad:
        raise GradCAMError("the target's output has no gradient (computed under no_grad/detach?)")


def gradcam_maps(
    model: nn.Module,
    images: Any,
    target: Target,
    *,
    layer: str = DEFAULT_LAYER,
    batch_size: int = 32,
    device: str | torch.device | None = None,
) -> GradCAMResult:
    """Grad-CAM of many images, in batches, results on the CPU.

    Args:
        model: a CutPaste model (or any module taking ImageNet-normalised images).
        images: an :class:`~cutpaste_lib.data.ImageCache`, or a ``(N, 3, H, W)`` uint8 or float
            ``[0, 1]`` tensor; images are normalised with :func:`cutpaste_lib.data.normalize` here.
        target: see :func:`grad_cam`.
        layer: see :func:`resolve_layer`.
        batch_size: images per forward/backward pass.
        device: where to run (default: the model's device).
    """

    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    tensor = getattr(images, "images", images)
    if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(
            f"expected an ImageCache or a (N, 3, H, W) image tensor, got {getattr(tensor, 'shape', type(tensor))}"
        )
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)
    parts: list[GradCAMResult] = []
    for start in range(0, tensor.shape[0], batch_size):
        batch = normalize(tensor[start : start + batch_size].to(device))
        batch = compute_precision(device).prepare(batch)
        res = grad_cam(model, batch, target, layer=layer)
        parts.append(GradCAMResult(*(t.cpu() for t in res[:4]), res.layer))
    if not parts:
        raise ValueError("no images given to gradcam_maps")
    return GradCAMResult(*(torch.cat([p[i] for p in parts]) for i in range(4)), parts[0].layer)


def minmax_per_image(maps: torch.Tensor) -> torch.Tensor:
    """Scale every map of ``(B, ...)`` to ``[0, 1]`` (``pytorch_grad_cam``'s display convention).

    A constant map becomes all zeros. No epsilon is added to the range: raw Grad-CAM values are
    often ~1e-4, where an epsilon of 1e-7 would already shift the result by 1e-3.
    """
    flat = maps.flatten(1)
    lo = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - lo
    safe = torch.where(span > 0, span, torch.ones_like(span))
    return torch.where(span > 0, (flat - lo) / safe, torch.zeros_like(flat)).view_as(maps)


def gradcam_metrics(
    maps: torch.Tensor, masks: torch.Tensor, *, fpr_limit: float = 0.3
) -> dict[str, float]:
    """Pixel AUROC and AUPRO (fractions in [0, 1]) of Grad-CAM maps against ground-truth masks.

    Args:
        maps: ``(N, H, W)`` or ``(N, 1, H, W)`` maps, higher = more anomalous.
        masks: boolean ground truth of the same size (all False for good images).
        fpr_limit: AUPRO integration limit (MVTec AD convention: 0.3).
    """

    maps = maps.detach().float().cpu()
    masks = masks.detach().cpu().bool()
    if maps.ndim == 4:
        maps = maps[:, 0]
    if masks.ndim == 4:
        masks = masks[:, 0]
    if maps.shape != masks.shape:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(masks.shape)} differ in shape")
    return {
        "pixel_auroc": float(pixel_auroc(maps, masks)),
        "aupro": float(aupro(maps, masks, fpr_limit=fpr_limit)),
    }


__all__ = [
    "DEFAULT_LAYER",
    "GradCAMError",
    "GradCAMResult",
    "LayerNotFoundError",
    "Target",
    "anomaly_score_target",
    "available_layers",
    "default_layer",
    "grad_cam",
    "gradcam_maps",
    "gradcam_metrics",
    "logit_target",
    "minmax_per_image",
    "parse_target",
    "resolve_layer",
]
