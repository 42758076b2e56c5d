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

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from cutpaste_lib.errors import CheckpointError, WeightsUnavailableError


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


EXAMPLE_ENCODERS = ("resnet18", "resnet50", "wide_resnet50_2", "efficientnet_b4", "convnext_tiny")
"""Names to suggest in error messages; any torchvision classification model works."""


class ModelOutput(NamedTuple):
    """What :meth:`CutPasteModel.forward` returns (fields, not positions, are the API)."""

    logits: torch.Tensor
    """(B, num_classes) proxy-task logits."""
    features: torch.Tensor
    """(B, D) average-pooled encoder features: the representation the Gaussian density is fitted on."""
    embedding: torch.Tensor
    """(B, embedding_dim) output of the projection head (input of the linear classifier)."""


def available_encoders() -> list[str]:
    """Names of the torchvision classification models (``torchvision.models.list_models``)."""
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_encoder_name(name: str) -> str:
    """Return ``name`` if it is a torchvision classification model, else raise ``ValueError``."""
    if name not in available_encoders():
        raise ValueError(
            f"unknown encoder {name!r}: use a torchvision classification model name, "
            f"e.g. {', '.join(EXAMPLE_ENCODERS)} (see torchvision.models.list_models())"
        )
    return name


def pretrained_weights_info(name: str) -> tuple[str, Path, str]:
    """Where the ImageNet weights of encoder ``name`` are expected.

    Returns:
        ``(file_name, folder, url)``: the torchvision file name, the torch hub checkpoint folder
        (``torch.hub.get_dir()/checkpoints``) and the URL to download it from by hand.
    """
    weights = torchvision.models.get_model_weights(check_encoder_name(name)).DEFAULT
    file_name = os.path.basename(weights.url)
    return file_name, Path(torch.hub.get_dir()) / "checkpoints", weights.url


def _weights_missing_message(name: str, missing: Path) -> str:
    file_name, folder, url = pretrained_weights_info(name)
    return (
        f"ImageNet weights for {name} not found at {missing}. There is no network at run time: "
        f"download {file_name} from {url} and put it in {folder} "
        f"(or pass weights=/path/to/{file_name}); or train from scratch (the paper's default)."
    )


def _replace_classifier(net: nn.Module) -> int:
    """Swap the last ``nn.Linear`` of ``net`` for ``nn.Identity``; return its ``in_features``."""
    linears = [(name, m) for name, m in net.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"{type(net).__name__} has no final nn.Linear classifier to replace; use a model such as "
            f"{', '.join(EXAMPLE_ENCODERS)}"
        )
    name, last = linears[-1]
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, nn.Identity())
    if isinstance(parent, nn.Sequential):
        # Dropout just before the ImageNet classifier belongs to that classifier: drop it too.
        keys = list(parent._modules)
        i = keys.index(child) - 1
        while i >= 0 and isinstance(parent._modules[keys[i]], nn.Dropout):
            parent._modules[keys[i]] = nn.Identity()
            i -= 1
    return int(last.in_features)


def load_error_message(path: str | Path, exc: BaseException, what: str) -> str:
    """One short line for a failed ``torch.load(path, weights_only=True)``.

    torch's own text suggests ``weights_only=False``, which would run code from the file and does
    not help with a corrupt file anyway: it is not passed on.
    """
    if isinstance(exc, OSError):  # permissions, a folder, ...: the system's reason
        return f"cannot read {what} {path}: {exc.strerror or exc}"
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
    if found:
        return (
            f"cannot read {what} {path}: it holds pickled Python objects ({found.group(1)}), not "
            "a tensor-only file; save plain data, e.g. torch.save(model.state_dict(), FILE)"
        )
    return (
        f"cannot read {what} {path}: not a PyTorch checkpoint/state dict "
        "(file is corrupt or of another kind)"
    )


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, pickle with code, truncated file, text...
        raise CheckpointError(load_error_message(path, exc, "weights file")) from exc
    if isinstance(obj, dict) and {"model", "optimizer", "config"} <= obj.keys():
        raise CheckpointError(
            f"{path} is a cutpaste training checkpoint (has model/optimizer/config), not encoder "
            "weights: continue it with `cutpaste train --resume` (same --out) or score it with "
            f"`cutpaste evaluate --checkpoint {path}`"
        )
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors")
    return obj


def build_encoder(
    name: str = "resnet18", *, pretrained: bool = False, weights: str | Path | None = None
) -> tuple[nn.Module, int]:
    """A torchvision classifier with its last Linear replaced by Identity, and its feature size.

    Args:
        name: torchvision model name (``torchvision.models.list_models()``).
        pretrained: load torchvision's default ImageNet weights from the torch hub cache.
        weights: a state-dict file to load instead (implies pretrained). Must match ``name``.

    Raises:
        ValueError: unknown model name, or a model without a final Linear.
        WeightsUnavailableError: the weights file is not on disk (names the file, URL and folder).
        CheckpointError: the weights file is unreadable or does not match the architecture.
    """
    check_encoder_name(name)
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise WeightsUnavailableError(_weights_missing_message(name, path))
        net = torchvision.models.get_model(name, weights=None)
        state = _read_state_dict(path)
        expected = net.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        if missing or unexpected:  # torch would list every key: give counts and the first three

            def first(keys: list[str]) -> str:
                return f" ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})" if keys else ""

            raise CheckpointError(
                f"weights file {path} does not fit {name} (--encoder): "
                f"{len(missing)} of its {len(expected)} keys missing{first(missing)}, "
                f"{len(unexpected)} unexpected{first(unexpected)}; pass weights saved from "
                f"{name}, or the --encoder they were saved from"
            )
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:  # same keys, other shapes: one "size mismatch" line each
            lines = [line.strip() for line in str(exc).splitlines()[1:] if line.strip()]
            shown = "; ".join(lines[:3]) + ("; ..." if len(lines) > 3 else "")
            raise CheckpointError(
                f"weights file {path} does not fit {name} (--encoder): "
                f"{len(lines)} tensors of another shape ({shown})"
            ) from exc
    elif pretrained:
        file_name, folder, _ = pretrained_weights_info(name)
        if not (folder / file_name).is_file():
            raise WeightsUnavailableError(_weights_missing_message(name, folder / file_name))
        # torchvision reads the cached file (and checks its hash) without touching the network
        # because the file exists; going through the builder keeps model-specific fix-ups.
        enum = torchvision.models.get_model_weights(name).DEFAULT
        try:
            net = torchvision.models.get_model(name, weights=enum)
        except RuntimeError as exc:
            raise CheckpointError(
                f"cached weights {folder / file_name} are corrupt ({exc}); delete and download again"
            ) from exc
    else:
        net = torchvision.models.get_model(name, weights=None)
    feature_dim = _replace_classifier(net)
    return net, feature_dim


def projection_head(
    in_dim: int, *, depth: int = 8, width: int = 512, embedding_dim: int = 128
) -> nn.Sequential:
    """``depth`` x [Linear(width, no bias) -> BatchNorm1d -> ReLU] then Linear(embedding_dim).

    The Linear layers have no bias because the BatchNorm that follows removes any constant.
    ``depth=0`` gives a single linear projection.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers += [nn.Linear(dim, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        dim = width
    layers.append(nn.Linear(dim, embedding_dim))
    return nn.Sequential(*layers)


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
