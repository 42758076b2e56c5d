"""Evaluation: feature extraction, image AUROC vs scikit-learn, per-defect AUROC, t-SNE, the CLI."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score
from torch import nn

from cutpaste_lib.density import Embeddings, ProvenanceError, l2_normalize
from cutpaste_lib.errors import DatasetError
from cutpaste_lib.evaluate import (
    evaluate_embeddings,
    extract_features,
    image_auroc,
    per_defect_auroc,
    tsne_points,
)


class TinyEncoder(nn.Module):
    """Conv + BatchNorm (so eval vs train mode matters) + global average pool."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )


def _images(n=7, size=12, seed=0):
    return torch.randint(
        0, 256, (n, 3, size, size), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8
    )


def test_extract_features_matches_manual_eval_forward():
    from cutpaste_lib.data import normalize

    model, images = TinyEncoder(), _images()
    model.encoder[1].running_mean.fill_(0.3)  # eval-mode BN uses these, train-mode BN would not
    model.train()
    feats = extract_features(model, images, batch_size=3)
    assert model.training, "the caller's mode must be restored"
    model.eval()
    with torch.no_grad():
        expected = model.encoder(normalize(images))
    assert feats.dtype == torch.float32 and feats.device.type == "cpu"
    assert torch.allclose(feats, expected, atol=1e-6)
    # uint8 and float-in-[0, 1] inputs give the same features; batch size does not matter.
    assert torch.allclose(
        extract_features(model, images.float() / 255, batch_size=7), feats, atol=1e-6
    )


def test_extract_features_reads_image_cache():
    from cutpaste_lib.data import ImageCache

    model, images = TinyEncoder(), _images(5)
    cache = ImageCache(
        images=images,
        masks=None,
        labels=torch.zeros(5, dtype=torch.int64),
        defects=["good"] * 5,
        paths=[f"{i}.png" for i in range(5)],
        category="toy",
        split="train",
    )
    assert torch.equal(extract_features(model, cache), extract_features(model, images))
    with pytest.raises(ValueError, match="ImageCache"):
        extract_features(model, torch.zeros(3, 1, 8, 8))


def test_image_auroc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(1)
    scores = torch.randint(0, 6, (80,), generator=g).double()  # many ties
    labels = torch.randint(0, 2, (80,), generator=g)
    assert image_auroc(scores, labels) == pytest.approx(
        roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12
    )


def test_per_defect_auroc_hand_case():
    scores = torch.tensor([0.1, 0.2, 0.3, 0.9, 0.25, 0.05])
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    defects = ["good", "good", "good", "crack", "crack", "hole"]
    out = per_defect_auroc(scores, labels, defects)
    # crack: 0.9 beats all 3 good, 0.25 beats 2 of 3 -> 5/6; hole: 0.05 beats none -> 0.
    assert out == {"crack": pytest.approx(5 / 6), "hole": pytest.approx(0.0)}


def _toy_embeddings(n_train=40, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    train = Embeddings.clean_train(torch.randn(n_train, d, generator=g) + 2.0, category="toy")
    good = torch.randn(10, d, generator=g) + 2.0
    bad = torch.randn(6, d, generator=g) + 2.0
    bad[:, 0] += 4.0
    feats = torch.cat([good, bad])
    labels = torch.tensor([0] * 10 + [1] * 6)
    defects = ("good",) * 10 + ("shift",) * 6
    return train, Embeddings(feats, labels, defects, "test", "toy")


def test_evaluate_embeddings_equals_sklearn_pipeline():
    train, test = _toy_embeddings()
    result = evaluate_embeddings(train, test)
    ref = LedoitWolf().fit(l2_normalize(train.features.double()).numpy())
    ref_scores = ref.mahalanobis(l2_normalize(test.features.double()).numpy())
    assert np.allclose(result.scores.numpy(), ref_scores, rtol=1e-6)
    assert result.image_auroc == pytest.approx(roc_auc_score(test.labels.numpy(), ref_scores))
    summary = result.summary()
    assert (
        summary["n_train"] == 40
        and summary["n_test_good"] == 10
        and summary["n_test_defective"] == 6
    )
    assert 0.0 <= summary["image_auroc"] <= 1.0 and set(summary["per_defect_auroc"]) == {"shift"}
    assert (
        summary["density"]["method"] == "ledoit_wolf" and 0 < summary["density"]["shrinkage"] <= 1
    )


def test_evaluate_embeddings_refuses_swapped_splits():
    train, test = _toy_embeddings()
    with pytest.raises(ProvenanceError):
        evaluate_embeddings(test, test)
    good_only = Embeddings(test.features[:10], test.labels[:10], test.defects[:10], "test", "toy")
    with pytest.raises(DatasetError, match="both good and defective"):
        evaluate_embeddings(train, good_only)


def test_tsne_separates_distant_clusters():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(30, 8, generator=g), torch.randn(25, 8, generator=g)
    a[:, 0] += 10
    b[:, 1] += 10  # different directions: they stay apart after L2 normalisation
    points = tsne_points({"a": a, "b": b}, seed=0, max_iter=500)
    assert points["a"].shape == (30, 2) and points["b"].shape == (25, 2)
    allp = np.concatenate([points["a"], points["b"]])
    lab = np.array([0] * 30 + [1] * 25)
    dist = ((allp[:, None] - allp[None]) ** 2).sum(-1) + np.eye(55) * 1e9
    assert (lab[dist.argmin(1)] == lab).all()  # every point's nearest neighbour is in its own group


def test_embed_augmented_is_refused_by_fit():
    pytest.importorskip("cutpaste_lib.augment")
    from cutpaste_lib.data import ImageCache
    from cutpaste_lib.density import GaussianDensity
    from cutpaste_lib.evaluate import embed_augmented

    images = _images(6, 32)
    cache = ImageCache(
        images=images,
        masks=None,
        labels=torch.zeros(6, dtype=torch.int64),
        defects=["good"] * 6,
        paths=[f"{i}.png" for i in range(6)],
        category="toy",
        split="train",
    )
    emb = embed_augmented(TinyEncoder(), cache, "cutpaste")
    assert emb.augmentation == "cutpaste" and emb.split == "train"
    assert not torch.allclose(
        emb.features, extract_features(TinyEncoder(), images)
    )  # images were changed
    with pytest.raises(ProvenanceError, match="augmented"):
        GaussianDensity().fit(emb)


# -------------------------------------------------- CLI on a tiny trained checkpoint


@pytest.fixture(scope="module")
def tiny_checkpoint(synthetic_root, tmp_path_factory):
    train_mod = pytest.importorskip("cutpaste_lib.train")
    from cutpaste_lib.data import load_cache

    out = tmp_path_factory.mktemp("ckpt")
    cfg = train_mod.TrainConfig(
        steps=2, batch_size=4, image_size=32, device="cpu", log_every=1, seed=0
    )
    cache = load_cache(synthetic_root, "synth_grid", "train", 32)
    result = train_mod.train(cfg, cache, out_dir=out, progress=False)
    return result.checkpoint


def test_cli_evaluate_writes_metrics(tiny_checkpoint, synthetic_root, tmp_path, capsys):
    from cutpaste_lib.cli import main
    from cutpaste_lib.data import load_split

    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--tsne-images",
        "4",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    with open(out / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    labels = np.array([int(r["label"]) for r in rows])
    scores = np.array([float(r["score"]) for r in rows])
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert 0.0 <= metrics["image_auroc"] <= 1.0
    test = load_split(synthetic_root, "synth_grid", "test")
    assert metrics["n_test"] == len(test) == len(rows)
    assert set(metrics["per_defect_auroc"]) == {s.defect for s in test if s.label == 1}
    assert metrics["n_train"] == len(load_split(synthetic_root, "synth_grid", "train"))
    assert (
        metrics["checkpoint_config"]["image_size"] == 32
        and metrics["density"]["method"] == "ledoit_wolf"
    )
    assert {"roc.png", "score_histogram.png", "tsne.png"} <= {p.name for p in out.iterdir()}
    assert "ALL" in capsys.readouterr().out


def test_cli_bad_checkpoint_path(synthetic_root, tmp_path, capsys):
    from cutpaste_lib.cli import main

    base = [
        "evaluate",
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--out",
        str(tmp_path / "o"),
    ]
    with pytest.raises(SystemExit) as exc:
        main([*base, "--checkpoint", str(tmp_path / "missing.pt")])
    assert exc.value.code == 2 and "missing.pt" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    assert main([*base, "--checkpoint", str(corrupt), "--device", "cpu"]) == 2
    assert "corrupt.pt" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def _copy_category(src, dst, category="synth_grid"):
    import shutil

    shutil.copytree(src / category, dst / category)
    return dst / category


def test_cli_evaluate_needs_no_masks_and_refuses_one_training_image(
    tiny_checkpoint, synthetic_root, tmp_path, capsys
):
    import shutil

    from cutpaste_lib.cli import main

    root = tmp_path / "data"
    cat = _copy_category(synthetic_root, root)
    argv = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--data",
        str(root),
        "--category",
        "synth_grid",
        "--device",
        "cpu",
        "--tsne-images",
        "0",
    ]
    with_masks = tmp_path / "with_masks"
    assert main([*argv, "--out", str(with_masks)]) == 0
    # image-level evaluation of data labelled by folder only: no ground_truth/ at all
    shutil.rmtree(cat / "ground_truth")
    no_masks = tmp_path / "no_masks"
    assert main([*argv, "--out", str(no_masks)]) == 0
    a = json.loads((with_masks / "metrics.json").read_text())
    b = json.loads((no_masks / "metrics.json").read_text())
    assert a["image_auroc"] == b["image_auroc"] and a["n_test"] == b["n_test"]
    # one training image: one line naming the folder, nothing written
    for extra in sorted((cat / "train" / "good").iterdir())[1:]:
        extra.unlink()
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(cat / "train" / "good") in err and "at least 2" in err
    assert not (tmp_path / "one").exists()


def test_cli_evaluate_density_and_image_size_flags_take_effect(
    tiny_checkpoint, synthetic_root, tmp_path
):
    from cutpaste_lib.cli import main
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.evaluate import evaluate
    from cutpaste_lib.train import load_checkpoint

    out = tmp_path / "kde48"
    argv = [
        "evaluate",
        "--checkpoint",
        str(tiny_checkpoint),
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--out",
        str(out),
        "--device",
        "cpu",
        "--tsne-images",
        "0",
        "--density",
        "kde",
        "--image-size",
        "48",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["density"]["method"] == "kde" and metrics["image_size"] == 48
    with open(out / "scores.csv") as f:
        cli_scores = np.array([float(r["score"]) for r in csv.DictReader(f)])
    model, _ = load_checkpoint(tiny_checkpoint, device="cpu")
    train48 = load_cache(synthetic_root, "synth_grid", "train", 48)
    test48 = load_cache(synthetic_root, "synth_grid", "test", 48)
    lib = evaluate(model, train48, test48, density="kde", device="cpu")
    np.testing.assert_allclose(cli_scores, lib.scores.numpy(), rtol=1e-5)
    assert metrics["image_auroc"] == pytest.approx(lib.image_auroc)
