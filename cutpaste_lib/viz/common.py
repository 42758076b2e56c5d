"""Small helpers every figure module uses.

No backend is forced here: without a display matplotlib falls back to Agg by itself, and
notebooks use their inline backend.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch


def to_hwc(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A (3, H, W) or (H, W, 3) image, uint8 or float in [0, 1], as an (H, W, 3) float array for imshow."""
    if isinstance(image, torch.Tensor):
        image = image.detach().float().cpu()
        if image.dtype == torch.uint8 or image.max() > 1.5:
            image = image / 255.0
        image = image.numpy()
    image = np.asarray(image, dtype=np.float32)
    if image.max() > 1.5:
        image = image / 255.0
    if image.ndim == 3 and image.shape[0] in (1, 3) and image.shape[-1] not in (1, 3):
        image = np.transpose(image, (1, 2, 0))
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    return np.clip(image, 0.0, 1.0)


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 110) -> Path:
    """Save atomically (temporary file, then rename) and close the figure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
        plt.close(fig)
    return path
