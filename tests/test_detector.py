"""The detector: threshold statistics, the file format, predict, export, and their command lines.

The network is a small untrained CutPasteModel (ResNet-18 at 32 px): what is tested is that a
detector scores exactly as the evaluation that made it, not that the model is good.
"""

from __future__ import annotations

import csv
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch

from cutpaste_lib.data import load_cache
from cutpaste_lib.density import GaussianDensity
from cutpaste_lib.detector import (
    DETECTOR_FOLDS,
    Detector,
    DetectorFileError,
    detector_from_evaluation,
    detector_from_localization,
    f1_max_threshold,
    fit_detector,
    fpr_threshold,
    rates_at,
)
from cutpaste_lib.evaluate import evaluate
from cutpaste_lib.localize import localize
from cutpaste_lib.model import CutPasteModel

SIZE = 32


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return CutPasteModel(head_depth=1, head_width=32, embedding_dim=8).eval()


@pytest.fixture(scope="module")
def caches(synthetic_root):
    train = load_cache(synthetic_root, "synth_carpet", "train", SIZE)
    test = load_cache(synthetic_root, "synth_carpet", "test", SIZE)
    return train, test


@pytest.fixture(scope="module")
def image_detector(model, caches):
    train, test = caches
    result = evaluate(model, train, test)
    return detector_from_evaluation(model, result, image_size=SIZE, fpr=0.1), result


@pytest.fixture(scope="module")
def patch_detector(model, caches):
    train, test = caches
    result = localize(model, train, test, patch_size=16, stride=4, folds=DETECTOR_FOLDS)
    det = detector_from_localization(
        model, result, fpr=0.1, test_masks=test.masks, test_labels=test.labels
    )
    return det, result


# ----------------------------------------------------------------------------- thresholds
def test_threshold_is_the_order_statistic_with_the_exact_expected_rate():
    t = fpr_threshold(torch.arange(1.0, 200.0), fpr=0.01)  # 199 scores: rank ceil(200 * 0.99)
    assert (t.value, t.rank, t.expected_fpr, t.warning) == (198.0, 198, 0.01, None)
    assert t.low < t.expected_fpr < t.high
    t = fpr_threshold(torch.arange(1.0, 101.0), fpr=0.05)  # rank ceil(101 * 0.95) = 96
    assert (t.value, t.expected_fpr) == (96.0, pytest.approx(5 / 101))
    # too few normals for the asked rate: the largest score, a warning that says what to give
    t = fpr_threshold(torch.arange(12.0), fpr=0.01)
    assert t.value == 11.0 and t.expected_fpr == pytest.approx(1 / 13)
    assert "12 normal images cannot" in t.warning and "99" in t.warning
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="fpr"):
            fpr_threshold(torch.arange(10.0), fpr=bad)
    with pytest.raises(ValueError, match="finite"):
        fpr_threshold(torch.tensor([1.0, float("nan")]))


def test_fpr_threshold_on_cross_fitted_scores_is_calibrated_on_held_out_normals():
    # Repeat: fit a Gaussian on n normal feature vectors, fix the threshold on their cross-fitted
    # scores, count false positives among many new normals. The observed rates must average the
    # expected rate, and the stated 90 % interval must cover the rate about 90 % of the time.
    gen = torch.Generator().manual_seed(0)
    n, d, m, reps, fpr = 399, 2, 20_000, 200, 0.05
    observed, expected, covered = [], [], 0
    for _ in range(reps):
        train = torch.randn(n, d, generator=gen, dtype=torch.float64)
        new = torch.randn(m, d, generator=gen, dtype=torch.float64)
        g = GaussianDensity(normalize=False).fit_clean_features(train)
        t = fpr_threshold(g.cross_fitted_scores(train), fpr=fpr)
        rate = float((g.score(new) > t.value).double().mean())
        observed.append(rate)
        expected.append(t.expected_fpr)
        covered += t.low <= rate <= t.high
    observed = np.array(observed)
    # Beta(20, 380) has sd 0.0109; over 200 repetitions the mean has sd ~0.0008 (+ binomial noise)
    assert abs(observed.mean() - np.mean(expected)) < 0.0035, observed.mean()
    # coverage ~ Binomial(200, 0.9): sd 0.021
    assert 0.84 <= covered / reps <= 0.96, covered / reps


def test_two_fold_thresholds_are_too_low_with_fewer_images_than_dimensions_ten_folds_are_not():
    # Fewer images (100) than dimensions (256), a decaying spectrum as real features have: a
    # Ledoit-Wolf Gaussian of half the images scores new normals lower than the full one, so a
    # threshold on two-fold scores flags far more new normals than asked (measured: 0.13-0.17
    # for 0.05); ten folds (each fit on 90 % of the images) come back to the target (0.047-0.066),
    # in-sample scores are much worse still.
    gen = torch.Generator().manual_seed(0)
    d, n, fpr = 256, 100, 0.05
    scale = torch.arange(1, d + 1, dtype=torch.float64).rsqrt()
    rates = {"in-sample": [], 2: [], 10: []}
    for _ in range(20):
        train = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
        new = torch.randn(4000, d, generator=gen, dtype=torch.float64) * scale
        g = GaussianDensity(normalize=False).fit_clean_features(train)
        s = g.score(new)
        for key in rates:
            ref = g.score(train) if key == "in-sample" else g.cross_fitted_scores(train, folds=key)
            rates[key].append(float((s > fpr_threshold(ref, fpr=fpr).value).double().mean()))
    mean = {k: float(np.mean(v)) for k, v in rates.items()}
    assert mean[2] > 2 * fpr and mean["in-sample"] > mean[2], mean
    assert 0.6 * fpr < mean[10] < 1.6 * fpr, mean


def test_f1_max_threshold_matches_sklearn_and_rates_are_hand_checked():
    from sklearn.metrics import precision_recall_curve

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.normal(size=300) + labels * 1.2
    best = f1_max_threshold(scores, labels)
    p, r, _ = precision_recall_curve(labels, scores)
    f1 = np.where(p + r > 0, 2 * p * r / np.maximum(p + r, 1e-12), 0)
    assert best["f1"] == pytest.approx(f1.max())
    assert rates_at(best["threshold"], scores, labels)["f1"] == pytest.approx(best["f1"])
    r = rates_at(0.5, [0.1, 0.6, 0.7, 0.2, 0.9], [0, 0, 1, 1, 1])
    assert r == pytest.approx(
        {"threshold": 0.5, "fpr": 0.5, "recall": 2 / 3, "precision": 2 / 3, "f1": 2 / 3}
    )
    with pytest.raises(ValueError, match="both"):
        f1_max_threshold([0.1, 0.2], [0, 0])


# ----------------------------------------------------------------------------- detector
def test_image_detector_round_trips_and_scores_as_evaluate(image_detector, caches, tmp_path):
    det, result = image_detector
    _, test = caches
    path = det.save(tmp_path / "d.pt")
    loaded = Detector.load(path)
    pred = loaded.predict(test.images)
    torch.testing.assert_close(pred.scores, result.scores, rtol=1e-12, atol=0)  # float64 rounding
    assert loaded.threshold == det.threshold
    ten_fold = result.density.cross_fitted_scores(result.train, folds=DETECTOR_FOLDS)
    torch.testing.assert_close(loaded.train_scores, ten_fold.double(), rtol=1e-12, atol=0)
    assert torch.equal(pred.decisions, pred.scores > det.threshold.value)
    # one image at a time gives the batch's scores; paths decode as the cache did
    alone = torch.cat([loaded.predict(test.images[i : i + 1]).scores for i in range(3)])
    torch.testing.assert_close(alone, pred.scores[:3], rtol=1e-5, atol=0)  # fp32 conv, batch 1
    from_files = loaded.predict([str(p) for p in test.paths])
    torch.testing.assert_close(from_files.scores, pred.scores, rtol=0, atol=0)
    # normalised: 0.5 exactly at the threshold, monotone; percentile: share of normals below
    at = loaded.normalize(torch.tensor([det.threshold.value]))
    assert float(at) == pytest.approx(0.5)
    order = torch.argsort(pred.scores)
    assert bool((pred.normalized[order].diff() >= 0).all())
    ref = det.train_scores
    expected = torch.tensor([100.0 * float((ref < s).double().mean()) for s in pred.scores])
    torch.testing.assert_close(pred.percentiles, expected.double())
    # the labelled report holds both thresholds' rates
    lab = det.info["labelled"]
    assert lab["f1_max"]["f1"] >= lab["at_fpr_threshold"]["f1"]


def test_patch_detector_round_trips_maps_and_masks(patch_detector, caches, tmp_path):
    det, result = patch_detector
    _, test = caches
    loaded = Detector.load(det.save(tmp_path / "p.pt"))
    pred = loaded.predict(test.images)
    torch.testing.assert_close(pred.scores, result.image_scores.double(), rtol=0, atol=0)
    torch.testing.assert_close(pred.maps, result.maps, rtol=0, atol=0)
    assert torch.equal(pred.masks, pred.maps > det.pixel_threshold.value)
    # the pixel threshold is the FPR rule on the cross-fitted training maps' maxima
    assert det.pixel_threshold == fpr_threshold(det.train_map_max, 0.1)
    assert loaded.density.scale == det.density.scale and loaded.density.mode == "shared"


def test_with_fpr_moves_the_threshold_monotonically(image_detector):
    det, _ = image_detector
    values = [det.with_fpr(r).threshold.value for r in (0.1, 0.3, 0.6)]
    assert values[0] >= values[1] >= values[2] and values[0] > values[2]


def test_fit_detector_refuses_test_images_and_fits_per_location(model, caches):
    from cutpaste_lib.density import ProvenanceError

    train, test = caches
    with pytest.raises(ProvenanceError):
        fit_detector(model, test)
    det = fit_detector(model, train, kind="patch", patch_size=16, density="per-location")
    assert det.density.mode == "per-location" and det.density.density.mean.ndim == 3
    assert det.density.folds == DETECTOR_FOLDS
    # a patch density with two-fold training maps cannot fix a threshold
    from cutpaste_lib.detector import detector_from_patch_density
    from cutpaste_lib.localize import fit_patch_density

    with pytest.raises(ValueError, match="10 folds"):
        detector_from_patch_density(model, fit_patch_density(model, train, patch_size=16))


@pytest.mark.parametrize("mode", ["shared", "per-location"])
def test_ten_fold_patch_density_deploys_the_same_gaussians_as_two_fold(model, caches, mode):
    from cutpaste_lib.localize import fit_patch_density

    train, _ = caches
    two = fit_patch_density(model, train, patch_size=16, mode=mode)
    ten = fit_patch_density(model, train, patch_size=16, mode=mode, folds=DETECTOR_FOLDS)
    # only the cross-fitted training maps differ; the Gaussians of all images are the same
    torch.testing.assert_close(ten.density.mean, two.density.mean, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(
        ten.density.cholesky_factor, two.density.cholesky_factor, rtol=1e-6, atol=1e-9
    )
    assert (ten.folds, two.folds) == (DETECTOR_FOLDS, 2)
    assert not torch.equal(ten.train_image_scores, two.train_image_scores)


def test_wrong_size_tensor_is_a_clear_error(image_detector):
    det, _ = image_detector
    with pytest.raises(ValueError, match="detector works at"):
        det.predict(torch.zeros(1, 3, SIZE + 1, SIZE, dtype=torch.uint8))


# ----------------------------------------------------------------------------- file format
def test_tampered_foreign_and_pickled_files_are_refused(image_detector, tmp_path, synthetic_root):
    det, _ = image_detector
    path = det.save(tmp_path / "d.pt")
    data = torch.load(path, weights_only=True)
    data["model"]["encoder.conv1.weight"][0, 0, 0, 0] += 1.0  # edit one weight, keep the digest
    torch.save(data, tmp_path / "edited.pt")
    with pytest.raises(DetectorFileError, match="modified or damaged"):
        Detector.load(tmp_path / "edited.pt")
    data = torch.load(path, weights_only=True)
    data["threshold"]["value"] = -1.0  # a lowered threshold is tampering too
    torch.save(data, tmp_path / "lowered.pt")
    with pytest.raises(DetectorFileError, match="modified"):
        Detector.load(tmp_path / "lowered.pt")
    data = torch.load(path, weights_only=True)
    data["version"] = 99
    torch.save(data, tmp_path / "future.pt")
    with pytest.raises(DetectorFileError, match="format version 99"):
        Detector.load(tmp_path / "future.pt")
    torch.save({"format": "cutpaste-checkpoint", "model": {}}, tmp_path / "ckpt.pt")
    with pytest.raises(DetectorFileError, match="'cutpaste-checkpoint' file, not a detector"):
        Detector.load(tmp_path / "ckpt.pt")
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DetectorFileError, match="cannot read detector"):
        Detector.load(tmp_path / "truncated.pt")
    with pytest.raises(DetectorFileError, match="no detector at"):
        Detector.load(tmp_path / "absent.pt")
    # a pickle that would run code is refused without running it
    marker = tmp_path / "ran"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(_Evil(str(marker)), f)
    torch.save({"format": "cutpaste-detector", "x": _Evil(str(marker))}, tmp_path / "evil2.pt")
    assert not marker.exists()
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(DetectorFileError, match="cannot read detector"):
            Detector.load(tmp_path / name)
    assert not marker.exists()
    assert zipfile.is_zipfile(path)  # the real file is a plain torch zip archive


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# ----------------------------------------------------------------------------- export
@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("kind", ["image", "patch", "per-location"])
def test_exported_graph_matches_the_eager_detector(fmt, kind, model, caches, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="ONNX export needs the export extra")
        pytest.importorskip("onnxscript", reason="ONNX export needs the export extra")
    from cutpaste_lib.detector.export import export, run_exported, verify

    train, test = caches
    if kind == "image":
        det = fit_detector(model, train)
    else:
        det = fit_detector(
            model,
            train,
            kind="patch",
            patch_size=16,
            density="shared" if kind == "patch" else "per-location",
        )
    path = export(det, tmp_path / f"d.{fmt}", fmt)
    report = verify(det, path, fmt, test.images)
    assert report["max_relative_score_error"] < 1e-4 and report["decisions_agree"]
    scores, maps = run_exported(
        path, fmt, test.images[:1].float() / 255
    )  # batch size other than traced
    eager, eager_maps = det.score(test.images[:1])
    torch.testing.assert_close(scores, eager, rtol=1e-4, atol=0)
    if kind != "image":
        assert maps.shape == (1, SIZE, SIZE) and report["max_map_error"] < 1e-4
        torch.testing.assert_close(maps, eager_maps, rtol=1e-4, atol=1e-3)
    if kind == "image":  # a detector that scores otherwise fails the check against this file
        other = fit_detector(model, train.subset(range(8)))
        with pytest.raises(Exception, match="differs from the detector"):
            verify(other, path, fmt, test.images)


# ----------------------------------------------------------------------------- command line
def _train_checkpoint(synthetic_root, out):
    from cutpaste_lib.cli import main

    rc = main(
        [
            "train",
            "--data",
            str(synthetic_root),
            "--category",
            "synth_carpet",
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--image-size",
            str(SIZE),
            "--head-depth",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert rc == 0
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, tmp_path_factory):
    """A 2-step image model trained through the command line, once for these tests."""
    return _train_checkpoint(synthetic_root, tmp_path_factory.mktemp("run"))


def _evaluate_argv(ckpt, root, out) -> list[str]:
    return [
        "evaluate",
        "--checkpoint",
        str(ckpt),
        "--data",
        str(root),
        "--category",
        "synth_carpet",
        "--out",
        str(out),
        "--tsne-images",
        "0",
    ]


def test_cli_evaluate_save_detector_then_predict_a_folder_with_bad_files(
    synthetic_root, tmp_path, capsys, checkpoint
):
    from cutpaste_lib.cli import main

    det_path = tmp_path / "det.pt"
    argv = _evaluate_argv(checkpoint, synthetic_root, tmp_path / "ev")
    assert main([*argv, "--save-detector", str(det_path), "--fpr", "0.1"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["detector"]["threshold"]["target_fpr"] == 0.1
    with open(tmp_path / "ev" / "scores.csv") as f:
        expected = {r["path"]: float(r["score"]) for r in csv.DictReader(f)}
    folder = tmp_path / "new"
    (folder / "sub").mkdir(parents=True)
    from PIL import Image

    good = [p for p in expected if "/good/" in p][:2]
    Image.open(good[0]).save(folder / "a.png")
    Image.open(good[1]).convert("L").save(folder / "sub" / "gray.png")  # grayscale, in a subfolder
    Image.open(good[1]).convert("RGBA").resize((50, 70)).save(folder / "odd.png")  # RGBA, odd size
    (folder / "broken.png").write_bytes(b"not an image")
    capsys.readouterr()
    rc = main(
        [
            "predict",
            "--detector",
            str(det_path),
            str(folder),
            str(tmp_path / "missing.jpg"),
            "--out",
            str(tmp_path / "pred"),
        ]
    )
    err = capsys.readouterr().err
    assert rc == 1 and "broken.png" in err and "missing.jpg" in err
    with open(tmp_path / "pred" / "predictions.csv") as f:
        rows = {r["path"]: r for r in csv.DictReader(f)}
    assert len(rows) == 5
    assert rows[str(folder / "broken.png")]["decision"] == "error"
    assert rows[str(tmp_path / "missing.jpg")]["error"] == "not found"
    assert float(rows[str(folder / "a.png")]["score"]) == pytest.approx(expected[good[0]], rel=1e-8)
    for name in ("a.png", "sub/gray.png", "odd.png"):
        assert rows[str(folder / name)]["decision"] in ("good", "defective")
    summary = json.loads((tmp_path / "pred" / "summary.json").read_text())
    assert summary["images_scored"] == 3 and len(summary["unreadable"]) == 2
    assert summary["source"]["checkpoint"] == str(checkpoint.resolve())


def test_cli_flags_of_the_detector_commands_fail_clearly(
    synthetic_root, tmp_path, capsys, image_detector, checkpoint
):
    from cutpaste_lib.cli import main

    base = _evaluate_argv(checkpoint, synthetic_root, tmp_path / "ev")
    assert main([*base, "--fpr", "0.05"]) == 2
    assert "add --save-detector" in capsys.readouterr().err
    assert main([*base, "--density", "kde", "--save-detector", str(tmp_path / "k.pt")]) == 2
    assert "needs a Gaussian density" in capsys.readouterr().err
    assert not (tmp_path / "ev").exists()
    with pytest.raises(SystemExit):
        main([*base, "--save-detector", str(tmp_path / "d.pt"), "--fpr", "1.5"])
    assert "--fpr" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--detector", str(checkpoint.parent), "x.png"])
    assert "is a folder" in capsys.readouterr().err
    assert main(["predict", "--detector", str(checkpoint), str(tmp_path)]) == 2
    assert "not a detector" in capsys.readouterr().err
    det, _ = image_detector
    det_path = det.save(tmp_path / "d.pt")
    assert main(["predict", "--detector", str(det_path), str(tmp_path / "nothing")]) == 2
    assert "no readable image" in capsys.readouterr().err
    assert main(["export", "--detector", str(det_path), "--images", "a.png"]) == 2
    assert "add --verify" in capsys.readouterr().err
    out = tmp_path / "d.torchscript.pt"
    assert main(["export", "--detector", str(det_path), "--verify"]) == 0
    assert out.is_file() and "decisions agree: True" in capsys.readouterr().out


def test_cli_fit_on_a_folder_of_normals_equals_fit_detector_on_the_same_images(
    synthetic_root, tmp_path, capsys, checkpoint
):
    from cutpaste_lib.cli import main
    from cutpaste_lib.train import load_checkpoint

    def fit(*normal, out, extra=()):
        argv = ["fit", "--checkpoint", str(checkpoint), "--normal", *map(str, normal)]
        return main([*argv, "--out", str(out), *extra])

    normals = synthetic_root / "synth_carpet" / "train" / "good"
    out = tmp_path / "fitted.pt"
    assert fit(normals, out=out, extra=("--fpr", "0.2")) == 0
    assert "image detector" in capsys.readouterr().out
    det = Detector.load(out)
    model, _ = load_checkpoint(checkpoint)
    ref = fit_detector(model, load_cache(synthetic_root, "synth_carpet", "train", SIZE), fpr=0.2)
    torch.testing.assert_close(det.train_scores, ref.train_scores, rtol=1e-9, atol=0)
    assert det.threshold.value == pytest.approx(ref.threshold.value, rel=1e-9)
    assert det.info["normal_images"] == len(list(normals.glob("*.png")))
    # a bad file among the normals: refused, naming it, and nothing written
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"no")
    assert fit(normals, tmp_path / "bad", out=tmp_path / "no.pt") == 2
    assert "x.png" in capsys.readouterr().err and not (tmp_path / "no.pt").exists()
    assert fit(*sorted(normals.glob("*.png"))[:3], out=tmp_path / "no.pt") == 2
    assert "at least 6" in capsys.readouterr().err
