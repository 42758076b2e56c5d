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

from cutpaste_lib.gradcam.compute import GradCAMResult, grad_cam
from cutpaste_lib.gradcam.errors import GradCAMError, LayerNotFoundError
from cutpaste_lib.gradcam.layers import (
    DEFAULT_LAYER,
    available_layers,
    default_layer,
    resolve_layer,
)
from cutpaste_lib.gradcam.maps import gradcam_maps, gradcam_metrics, minmax_per_image
from cutpaste_lib.gradcam.targets import (
    Target,
    anomaly_score_target,
    logit_target,
    parse_target,
)

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
