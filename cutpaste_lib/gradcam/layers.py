"""Which layer Grad-CAM explains: the default per encoder family, and dotted-name lookup."""

from __future__ import annotations

from torch import nn

from cutpaste_lib.gradcam.errors import LayerNotFoundError

__all__ = ["DEFAULT_LAYER", "available_layers", "default_layer", "resolve_layer"]

DEFAULT_LAYER = "layer4"


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
