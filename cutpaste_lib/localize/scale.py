"""The display scale of heatmaps, fixed by (cross-fitted) training maps, never by the test image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass
class HeatmapScale:
    """A fixed display scale from (cross-fitted) **training** maps: ``(map - mean) / std``, shown from 0 to ``high``.

    Attributes:
        mean, std: mean and standard deviation of all training-map pixels.
        high: the 99.9th percentile of the standardised training pixels (top of the colour
            scale; the maximum would let one outlier flatten every heatmap).
        image_mean, image_std: mean and standard deviation of training image scores (max of grid).
    """

    mean: float
    std: float
    high: float
    image_mean: float = 0.0
    image_std: float = 1.0

    @classmethod
    def from_training(cls, train_maps: Tensor, train_image_scores: Tensor) -> HeatmapScale:
        maps = train_maps.double()
        mean, std = float(maps.mean()), float(maps.std().clamp_min(1e-12))
        top = float(np.quantile(train_maps.float().cpu().numpy(), 0.999))
        high = max((top - mean) / std, 1.0)
        img = train_image_scores.double()
        image_std = float(img.std().clamp_min(1e-12)) if img.numel() > 1 else 1.0
        return cls(mean, std, high, float(img.mean()), image_std)

    def standardize(self, maps: Tensor) -> Tensor:
        """``(maps - train mean) / train std`` (same scale for every image)."""
        return (maps - self.mean) / self.std

    def to_dict(self) -> dict[str, float]:
        return {
            "mean": self.mean,
            "std": self.std,
            "high": self.high,
            "image_mean": self.image_mean,
            "image_std": self.image_std,
        }
