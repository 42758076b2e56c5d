"""The CutPaste network (encoder + projection head + linear classifier), its output and rebuild.

Also :func:`eval_mode`, the context manager that evaluates a model and restores each submodule's
own mode afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cutpaste_lib.model.encoders import build_encoder
from cutpaste_lib.model.head import projection_head


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Eval mode for the duration (BatchNorm on running statistics), then every submodule's own
    mode back: a model with frozen batch-norm layers inside a training model keeps them frozen.

    Example:
        >>> m = nn.Sequential(nn.BatchNorm1d(2)).train()
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for m, mode in modes.items():
            m.training = mode


class ModelOutput(NamedTuple):
    """What :meth:`CutPasteModel.forward` returns (fields, not positions, are the API)."""

    logits: torch.Tensor
    """(B, num_classes) proxy-task logits."""
    features: torch.Tensor
    """(B, D) average-pooled encoder features: the representation the Gaussian density is fitted on."""
    embedding: torch.Tensor
    """(B, embedding_dim) output of the projection head (input of the linear classifier)."""


class CutPasteModel(nn.Module):
    """Encoder + projection head + linear classifier for the CutPaste proxy task.

    Args:
        encoder: torchvision model name; ``resnet18`` as in the paper's Table 1.
        num_classes: 3 for the 3-way variant, 2 for binary ones.
        head_depth: number of [Linear -> BN -> ReLU] blocks (sister code: 8).
        head_width: width of those blocks (512).
        embedding_dim: size of the linear embedding before the classifier (128).
        pretrained: load ImageNet weights from the torch hub cache (never downloads). The paper's
            Table 1 trains from scratch (the default); Table 3 fine-tunes an ImageNet EfficientNet-B4.
        weights: a torchvision state-dict file to load instead of the hub cache.
    """

    def __init__(
        self,
        *,
        encoder: str = "resnet18",
        num_classes: int = 3,
        head_depth: int = 8,
        head_width: int = 512,
        embedding_dim: int = 128,
        pretrained: bool = False,
        weights: str | Path | None = None,
    ) -> None:
        super().__init__()
        for label, value in (
            ("num_classes", num_classes),
            ("head_width", head_width),
            ("embedding_dim", embedding_dim),
        ):
            if int(value) < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if int(head_depth) < 0:
            raise ValueError(f"head_depth must be >= 0, got {head_depth}")
        self.encoder_name = encoder
        self.encoder, self.feature_dim = build_encoder(
            encoder, pretrained=pretrained, weights=weights
        )
        self.head = projection_head(
            self.feature_dim, depth=head_depth, width=head_width, embedding_dim=embedding_dim
        )
        self.classifier = nn.Linear(embedding_dim, num_classes)
        self._config = {
            "encoder": encoder,
            "num_classes": int(num_classes),
            "head_depth": int(head_depth),
            "head_width": int(head_width),
            "embedding_dim": int(embedding_dim),
            "pretrained": bool(pretrained or weights is not None),
            "weights": None if weights is None else str(weights),
        }
        self._encoder_frozen = False
        self._encoder_bn_frozen = False

    def forward(self, x: torch.Tensor) -> ModelOutput:
        """``x``: normalised images (B, 3, H, W) (``cutpaste_lib.data.normalize`` output)."""
        features = self.encoder(x)
        if not isinstance(features, torch.Tensor):  # GoogLeNet/Inception return (logits, aux...)
            features = features[0]
        embedding = self.head(features)
        return ModelOutput(self.classifier(embedding), features, embedding)

    def config(self) -> dict[str, Any]:
        """Plain dict that :func:`build_model` turns back into the same architecture."""
        return dict(self._config)

    # ---- transfer-learning switches (the paper's Table 3 protocol, A.4) ----
    def freeze_encoder(self, frozen: bool = True) -> CutPasteModel:
        """Head-only training: encoder parameters get no gradient and its BN statistics stay put."""
        self._encoder_frozen = frozen
        for p in self.encoder.parameters():
            p.requires_grad_(not frozen)
        if not frozen:
            self.freeze_encoder_batchnorm(self._encoder_bn_frozen)
        return self.train(self.training)

    def freeze_encoder_batchnorm(self, frozen: bool = True) -> CutPasteModel:
        """Keep the encoder's batch-norm layers fixed (eval statistics, no affine updates).

        The head's own BatchNorm1d layers keep training: the paper says the network's batch-norm
        layers stay frozen during fine-tuning, and the head was only just trained in the warm-up.
        """
        self._encoder_bn_frozen = frozen
        for m in self.encoder.modules():
            if isinstance(m, _BatchNorm):
                for p in m.parameters():
                    p.requires_grad_(not (frozen or self._encoder_frozen))
        return self.train(self.training)

    def train(self, mode: bool = True) -> CutPasteModel:
        super().train(mode)
        if mode and self._encoder_frozen:
            self.encoder.eval()
        elif mode and self._encoder_bn_frozen:
            for m in self.encoder.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self


MODEL_KEYS = ("encoder", "num_classes", "head_depth", "head_width", "embedding_dim")


def build_model(config: dict[str, Any], *, load_weights: bool = True) -> CutPasteModel:
    """Rebuild a :class:`CutPasteModel` from :meth:`CutPasteModel.config` (extra keys are ignored).

    Args:
        config: a dict with at least ``encoder`` and ``num_classes``; head sizes default as in the paper.
        load_weights: load the ImageNet weights the config names (``pretrained``/``weights``). Pass
            ``False`` when a checkpoint's state dict will overwrite them anyway.
    """
    if "encoder" not in config or "num_classes" not in config:
        raise ValueError(
            f"model config needs 'encoder' and 'num_classes', got keys {sorted(config)}"
        )
    kwargs = {k: config[k] for k in MODEL_KEYS if k in config}
    if load_weights:
        kwargs["pretrained"] = bool(config.get("pretrained", False))
        kwargs["weights"] = config.get("weights")
    model = CutPasteModel(**kwargs)
    if not load_weights:
        model._config.update(
            pretrained=bool(config.get("pretrained", False)), weights=config.get("weights")
        )
    return model
