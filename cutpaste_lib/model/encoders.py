"""Encoders: any torchvision classification model, its ImageNet classifier replaced by Identity.

The feature dimension is read from the replaced ``nn.Linear`` (never hard-coded); Dropout right
before it in the same ``nn.Sequential`` goes too. Pretrained weights come from the torch hub cache
or a file the caller passes, never from the network; when missing,
:class:`~cutpaste_lib.errors.WeightsUnavailableError` says which file to fetch and where to put it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from cutpaste_lib.errors import CheckpointError, WeightsUnavailableError
from cutpaste_lib.model.state_dict import read_state_dict

EXAMPLE_ENCODERS = ("resnet18", "resnet50", "wide_resnet50_2", "efficientnet_b4", "convnext_tiny")
"""Names to suggest in error messages; any torchvision classification model works."""


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
        state = read_state_dict(path)
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
