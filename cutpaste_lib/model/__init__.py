"""The CutPaste network: a torchvision encoder, an MLP projection head and a linear classifier.

The paper (Li et al., 2021, A.1) trains a ResNet-18 from scratch with an MLP projection head on the
average-pooled features, followed by a linear classifier that solves the proxy task (normal vs
CutPaste vs Scar). The head's depth and width are not given in the paper; the default follows the
authors' sister code: 8 x [Linear(512, no bias) -> BatchNorm -> ReLU], a linear 128-d embedding,
then the logits. Anomaly scores are later computed on the *pooled encoder features* (as in the paper), which
``forward`` returns next to the logits and the embedding.

Any torchvision classification model can be the encoder: its last ``nn.Linear`` (the ImageNet
classifier) is replaced by ``nn.Identity`` so that ``model.encoder(x)`` returns the pooled features,
and the feature dimension is read from that layer (never hard-coded). Dropout layers that sit right
before that Linear in the same ``nn.Sequential`` (EfficientNet, MobileNet) are removed as well, since
they belonged to the ImageNet classifier; a choice of ours, the paper does not say.

Pretrained ImageNet weights are never downloaded: they are read from the torch hub cache
(``torch.hub.get_dir()/checkpoints/<file>``) or from a file the caller passes; when missing,
:class:`~cutpaste_lib.errors.WeightsUnavailableError` says which file to fetch and where to put it.

Example:
    >>> import torch
    >>> from cutpaste_lib.model import CutPasteModel
    >>> model = CutPasteModel(encoder="resnet18", num_classes=3)
    >>> out = model(torch.randn(2, 3, 64, 64))
    >>> out.logits.shape, out.features.shape, out.embedding.shape
    (torch.Size([2, 3]), torch.Size([2, 512]), torch.Size([2, 128]))
"""

from cutpaste_lib.model.encoders import (
    EXAMPLE_ENCODERS,
    available_encoders,
    build_encoder,
    check_encoder_name,
    pretrained_weights_info,
)
from cutpaste_lib.model.head import projection_head
from cutpaste_lib.model.network import (
    MODEL_KEYS,
    CutPasteModel,
    ModelOutput,
    build_model,
    eval_mode,
)
from cutpaste_lib.model.state_dict import load_error_message

__all__ = [
    "EXAMPLE_ENCODERS",
    "MODEL_KEYS",
    "CutPasteModel",
    "ModelOutput",
    "available_encoders",
    "build_encoder",
    "build_model",
    "check_encoder_name",
    "eval_mode",
    "load_error_message",
    "pretrained_weights_info",
    "projection_head",
]
