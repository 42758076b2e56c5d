"""One batch of Grad-CAM: hook the layer, differentiate the target, weight and sum the channels."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cutpaste_lib.gradcam.errors import GradCAMError
from cutpaste_lib.gradcam.layers import DEFAULT_LAYER, resolve_layer
from cutpaste_lib.gradcam.targets import Target
from cutpaste_lib.model import eval_mode
from cutpaste_lib.precision import Precision

__all__ = ["GradCAMResult", "grad_cam"]


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
