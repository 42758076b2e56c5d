"""The real job of a grid cell: train a model, fit the Gaussian density, score (and localize)."""

from __future__ import annotations

from pathlib import Path

from cutpaste_lib.data import ImageCache, load_cache
from cutpaste_lib.errors import CheckpointError, CutPasteError
from cutpaste_lib.evaluate import evaluate
from cutpaste_lib.io import write_json
from cutpaste_lib.localize import localize
from cutpaste_lib.reproduce.grid import JobSpec
from cutpaste_lib.reproduce.scores import save_scores
from cutpaste_lib.train import TrainConfig, train

PATCH_METRICS = ("image_auroc", "pixel_auroc", "aupro")


def train_evaluate_job(spec: JobSpec) -> dict:
    """The real job: train -> Gaussian density on clean train embeddings -> image AUROC.

    Image models (``mode="image"``): :func:`cutpaste_lib.train.train` on the category's train
    images, then :func:`cutpaste_lib.evaluate.evaluate` (Ledoit-Wolf Gaussian fitted on the clean
    train embeddings only). Writes ``checkpoint.pt``/``config.json`` (by ``train``), ``scores.npz``
    (:func:`save_scores`, for the seed ensemble) and ``result.json`` into ``spec.job_dir``.

    Patch models (``mode="patch"``): trained on ``patch_size`` crops, then
    :func:`cutpaste_lib.localize.localize` with ``dense_patch``/``dense_stride`` gives pixel AUROC,
    AUPRO and the image AUROC of the max-of-map score (no score file: Table 1's ensemble uses
    image models only).

    A job killed mid-training resumes from its last checkpoint on the next run; a checkpoint from
    other settings is replaced.
    """
    size = spec.settings.image_size
    train_cache = load_cache(spec.data_root, spec.job.category, "train", size)
    test_cache = load_cache(spec.data_root, spec.job.category, "test", size)
    model = _train_or_resume(spec, train_cache)
    if spec.job.mode == "patch":
        return _localize_patch_model(spec, model, train_cache, test_cache)
    return _evaluate_image_model(spec, model, train_cache, test_cache)


def _train_or_resume(spec: JobSpec, train_cache: ImageCache):
    """The job's trained model: resumed from its checkpoint when it has one, else from scratch."""
    job, s = spec.job, spec.settings
    cfg = TrainConfig(
        variant=job.variant,
        encoder=s.encoder,
        steps=s.steps,
        batch_size=s.batch_size,
        image_size=s.image_size,
        patch_size=s.patch_size if job.mode == "patch" else None,
        seed=job.seed,
        device=spec.device,
        pretrained=s.pretrained,
        weights=s.weights,
        compile=s.compile,
    )
    if (spec.job_dir / "checkpoint.pt").is_file():
        try:
            return train(cfg, train_cache, out_dir=spec.job_dir, resume=True, progress=False).model
        except CheckpointError:  # other settings or a damaged file: train again from scratch
            pass
    return train(cfg, train_cache, out_dir=spec.job_dir, overwrite=True, progress=False).model


def _localize_patch_model(
    spec: JobSpec, model, train_cache: ImageCache, test_cache: ImageCache
) -> dict:
    """Dense patch scores of a patch model: pixel AUROC, AUPRO and the max-of-map image AUROC."""
    loc = localize(
        model,
        train_cache,
        test_cache,
        patch_size=spec.settings.dense_patch,
        stride=spec.settings.dense_stride,
        device=spec.device,
    )
    write_json(spec.job_dir / "result.json", {k: float(v) for k, v in loc.metrics.items()})
    missing = [m for m in PATCH_METRICS if m not in loc.metrics]
    if missing:
        raise CutPasteError(
            f"{spec.job.key}: localization gave no {missing} (test split without defects?)"
        )
    return {k: loc.metrics[k] for k in PATCH_METRICS}


def _evaluate_image_model(
    spec: JobSpec, model, train_cache: ImageCache, test_cache: ImageCache
) -> dict:
    """Image AUROC of an image model, and its per-image scores saved for the seed ensemble."""
    ev = evaluate(model, train_cache, test_cache, device=spec.device)
    root = Path(spec.data_root).resolve()
    names = [
        str(Path(p).resolve().relative_to(root))
        if Path(p).resolve().is_relative_to(root)
        else str(p)
        for p in test_cache.paths
    ]
    scores = save_scores(
        spec.job_dir / "scores.npz",
        test_scores=ev.scores,
        test_labels=ev.labels,
        test_names=names,
        train_scores=ev.train_scores,
    )
    write_json(spec.job_dir / "result.json", ev.summary())
    return {"image_auroc": ev.image_auroc, "scores": scores}
