"""The two Grad-CAM errors: an unknown layer, and a model/layer/target that cannot be explained."""

from __future__ import annotations

from cutpaste_lib.errors import CutPasteError

__all__ = ["GradCAMError", "LayerNotFoundError"]


class LayerNotFoundError(CutPasteError, ValueError):
    """The requested Grad-CAM layer is not a submodule of the model."""


class GradCAMError(CutPasteError, ValueError):
    """Grad-CAM cannot be computed for this model, layer and target combination."""
