"""The :class:`~cutpaste_lib.detector.Detector` as plain data and back (the file's content).

:func:`to_payload` gives what :mod:`~cutpaste_lib.detector.artifact` writes; :func:`from_payload`
rebuilds the network, the Gaussian(s) and the thresholds from what it read, and says which part
of a file does not fit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cutpaste_lib.density import GaussianDensity
from cutpaste_lib.detector.artifact import DetectorFileError
from cutpaste_lib.detector.detector import Detector
from cutpaste_lib.detector.threshold import FprThreshold
from cutpaste_lib.localize import PatchDensity, PatchGrid
from cutpaste_lib.localize.scale import HeatmapScale
from cutpaste_lib.model import build_model


def to_payload(detector: Detector) -> dict[str, Any]:
    """The detector as plain data: tensors, numbers, strings (what :meth:`Detector.save` writes)."""
    payload: dict[str, Any] = {
        "kind": detector.kind,
        "model_config": detector.model.config(),
        "model": {k: v.detach().cpu() for k, v in detector.model.state_dict().items()},
        "image_size": list(detector.image_size),
        "train_scores": detector.train_scores.double().cpu(),
        "threshold": detector.threshold.to_dict(),
        "info": detector.info,
    }
    if detector.kind == "image":
        gaussian = detector.density
    else:
        pd = detector.density
        gaussian = pd.density
        payload["patch"] = {
            "patch_size": pd.grid.patch_size,
            "stride": pd.grid.stride,
            "mode": pd.mode,
            "sigma": pd.sigma,
            "normalize": pd.normalize,
            "scale": pd.scale.to_dict(),
        }
        payload["train_map_max"] = detector.train_map_max.double().cpu()
        payload["pixel_threshold"] = detector.pixel_threshold.to_dict()
    payload["density"] = {
        "config": gaussian.config(),
        "state": {k: v.cpu() for k, v in gaussian.state_dict().items()},
    }
    return payload


def from_payload(
    data: dict[str, Any], path: str | Path, *, device: str | torch.device = "cpu"
) -> Detector:
    """A detector (model in eval mode on ``device``) from a checked file's content; ``path`` names it in errors."""
    kind = data["kind"]
    if kind not in ("image", "patch") or (kind == "patch" and "patch" not in data):
        raise DetectorFileError(f"{path}: unknown detector kind {kind!r}")
    model = build_model(data["model_config"], load_weights=False)
    try:
        model.load_state_dict(data["model"])
    except RuntimeError as exc:
        raise DetectorFileError(
            f"{path}: its weights do not fit its model {data['model_config']}: {exc}"
        ) from exc
    model.to(device).eval()
    gaussian = GaussianDensity(**data["density"]["config"])
    try:
        gaussian.load_state_dict(data["density"]["state"])
    except ValueError as exc:
        raise DetectorFileError(f"{path}: damaged density: {exc}") from exc
    size = (int(data["image_size"][0]), int(data["image_size"][1]))
    density: GaussianDensity | PatchDensity = gaussian
    pixel, map_max = None, None
    if kind == "patch":
        p = data["patch"]
        density = PatchDensity(
            density=gaussian,
            grid=PatchGrid(size, int(p["patch_size"]), int(p["stride"])),
            mode=p["mode"],
            scale=HeatmapScale(**p["scale"]),
            sigma=p["sigma"],
            normalize=bool(p["normalize"]),
        )
        pixel = FprThreshold.from_dict(data["pixel_threshold"])
        map_max = data["train_map_max"]
    return Detector(
        model=model,
        kind=kind,
        image_size=size,
        density=density,
        train_scores=data["train_scores"],
        threshold=FprThreshold.from_dict(data["threshold"]),
        pixel_threshold=pixel,
        train_map_max=map_max,
        info=dict(data.get("info") or {}),
    )
