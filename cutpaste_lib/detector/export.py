"""Export a detector as one graph: image -> anomaly score (and heatmap), density folded in.

:class:`ScoringGraph` rewrites the detector's scoring as plain tensor operations that TorchScript
and ONNX both express: ImageNet normalisation, the encoder, L2 normalisation, and the squared
Mahalanobis distance as ``|| W (f - mu) ||^2`` with ``W = L^{-1}`` (the inverse Cholesky factor,
computed once in float64 and stored as float32). A patch model also unfolds the dense patch grid,
scores every location (one shared Gaussian, or one per location) and upsamples the grid with the
detector's own :func:`~cutpaste_lib.localize.receptive_field_upsample` (traced into the graph; the
image size is fixed, so its shape arithmetic becomes constants).

Input: float32 images in [0, 1], shape (B, 3, H, W) at the detector's size (resizing stays
outside the graph, as ``cutpaste predict`` does it: PIL bilinear). Output: the score (B,), and for a
patch model also the heatmap (B, H, W). The eager detector computes the Mahalanobis distance in
float64; the graph in float32, hence the tolerance of :func:`verify`.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from cutpaste_lib.data import IMAGENET_MEAN, IMAGENET_STD
from cutpaste_lib.detector.detector import Detector
from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.localize import extract_patches

FORMATS = ("torchscript", "onnx")
DEFAULT_RTOL = 1e-3


def _whitening(mean: Tensor, factor: Tensor) -> tuple[Tensor, Tensor]:
    """mu and W = L^{-1} (float32) from the mean and Cholesky factor (any leading location axes)."""
    eye = torch.eye(factor.shape[-1], dtype=torch.float64).expand_as(factor)
    w = torch.linalg.solve_triangular(factor.double(), eye, upper=False)
    return mean.float().contiguous(), w.float().contiguous()


class ScoringGraph(nn.Module):
    """The detector's scoring as one module (see the module notes). Returns a score, or (score, map)."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.encoder = copy.deepcopy(detector.model.encoder).float().eval()
        self.patch = detector.kind == "patch"
        self.register_buffer("rgb_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("rgb_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        gaussian = detector.density.density if self.patch else detector.density
        self.l2 = bool(gaussian.normalize)
        mu, w = _whitening(gaussian.mean, gaussian.cholesky_factor)
        self.per_location = mu.ndim == 3
        self.register_buffer("mu", mu)
        self.register_buffer("w", w)
        if self.patch:
            pd = detector.density
            self.p, self.s = pd.grid.patch_size, pd.grid.stride
            self.gh, self.gw = pd.grid.shape
            self.upsample = pd.upsample  # the detector's own upsampling, traced into the graph

    def _distance(self, f: Tensor) -> Tensor:
        if self.l2:
            f = f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        d = f - self.mu
        if self.per_location:  # f (B, gh, gw, D), W (gh, gw, D, D)
            z = torch.einsum("bhwd,hwed->bhwe", d, self.w)
        else:
            z = d @ self.w.transpose(-1, -2)
        return (z * z).sum(-1)

    def forward(self, images: Tensor):
        x = (images - self.rgb_mean) / self.rgb_std
        if not self.patch:
            return self._distance(self.encoder(x).flatten(1))
        b = x.shape[0]
        patches = extract_patches(x, self.p, self.s).reshape(-1, 3, self.p, self.p)
        feats = self.encoder(patches).flatten(1).reshape(b, self.gh, self.gw, -1)
        grid = self._distance(feats)  # (B, gh, gw)
        return grid.flatten(1).amax(1), self.upsample(grid)


def _example(detector: Detector, batch: int = 2) -> Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(batch, 3, *detector.image_size, generator=g)


def export(detector: Detector, path: str | Path, fmt: str = "torchscript") -> Path:
    """Write the detector's :class:`ScoringGraph` as TorchScript (``torch.jit.trace``) or ONNX
    (``torch.onnx.export``, dynamic batch), atomically. ONNX needs the ``export`` extra."""
    from cutpaste_lib import io

    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    graph = ScoringGraph(detector).eval()
    example = _example(detector)
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # jit is "deprecated" but supported
            # the upsampling's crop reads the (fixed) map size: constant in the graph, as intended
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            traced = torch.jit.trace(graph, example)
            return io.atomic_write(path, lambda p: torch.jit.save(traced, str(p)))
    try:
        import onnx  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise CutPasteError(
            "ONNX export needs the onnx and onnxscript packages: pip install -e '.[export]'"
        ) from exc
    outputs = ["score", "heatmap"] if graph.patch else ["score"]

    def write(p: Path) -> None:
        program = torch.onnx.export(
            graph,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=outputs,
            dynamic_shapes={"images": {0: torch.export.Dim("batch", min=1)}},
            external_data=False,
            verbose=False,
        )
        program.save(str(p))

    return io.atomic_write(path, write)


def run_exported(path: str | Path, fmt: str, images: Tensor) -> tuple[Tensor, Tensor | None]:
    """Scores (and maps) of float [0, 1] images from an exported file (ONNX through onnxruntime)."""
    if fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            out = torch.jit.load(str(path), map_location="cpu")(images)
    else:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise CutPasteError(
                "checking an ONNX export needs onnxruntime: pip install -e '.[export]'"
            ) from exc
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = tuple(torch.from_numpy(o) for o in session.run(None, {"images": images.numpy()}))
        out = out if len(out) > 1 else out[0]
    if isinstance(out, tuple | list):
        return out[0].double(), out[1].float()
    return out.double(), None


def verify(
    detector: Detector, path: str | Path, fmt: str, images: Tensor, *, rtol: float = DEFAULT_RTOL
) -> dict[str, float]:
    """Compare the exported graph with the eager detector on ``images`` (uint8 (N, 3, H, W)).

    Returns the largest relative score difference and map difference (relative to the map's
    range), and whether the decisions agree. Raises :class:`CutPasteError` above ``rtol``.
    """
    eager_scores, eager_maps = detector.score(images)
    scores, maps = run_exported(path, fmt, images.float() / 255.0)
    rel = float(((scores - eager_scores).abs() / eager_scores.abs().clamp_min(1e-12)).max())
    report = {"images": int(images.shape[0]), "max_relative_score_error": rel}
    if eager_maps is not None:
        span = float(eager_maps.max() - eager_maps.min()) or 1.0
        report["max_map_error"] = float((maps - eager_maps).abs().max()) / span
    report["decisions_agree"] = bool(
        ((scores > detector.threshold.value) == (eager_scores > detector.threshold.value)).all()
    )
    worst = max(rel, report.get("max_map_error", 0.0))
    if worst > rtol:
        raise CutPasteError(
            f"exported {fmt} model differs from the detector by {worst:.2e} (relative) on "
            f"{report['images']} images, above the tolerance {rtol:g}"
        )
    return report
