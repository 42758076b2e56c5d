"""`cutpaste demo` end to end at toy size: every number it prints is traceable to the files it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cutpaste_lib import cli


@pytest.mark.slow
def test_demo_numbers_agree_with_the_cli_metrics_and_models_are_reused(
    synthetic_root, tmp_path, capsys
):
    out, models = tmp_path / "demo", tmp_path / "models"
    args = [
        "demo",
        "--data",
        str(synthetic_root),
        "--out",
        str(out),
        "--categories",
        "synth_grid",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--image-size",
        "32",
        "--models",
        str(models),
        "--protocol",
        "laptop",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    first = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    row = summary["rows"][0]
    assert [r["category"] for r in summary["rows"]] == ["synth_grid"]
    evaluate = json.loads((out / "synth_grid" / "evaluate" / "metrics.json").read_text())
    localize = json.loads((out / "synth_grid" / "localize" / "metrics.json").read_text())
    # the summary reports what the evaluate/localize commands computed from the course models
    assert row["image_auroc"] == evaluate["image_auroc"]
    assert row["pixel_auroc"] == localize["pixel_auroc"] and row["aupro"] == localize["aupro"]
    from cutpaste_lib import config
    from cutpaste_lib.course import untrained_model
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.evaluate import evaluate as evaluate_model
    from cutpaste_lib.train import load_checkpoint, proxy_confusion

    train_cache = load_cache(synthetic_root, "synth_grid", "train", 32)
    model, saved = load_checkpoint(Path(row["image_model"]) / "checkpoint.pt", device="cpu")
    assert (saved["steps"], saved["batch_size"], saved["image_size"]) == (2, 4, 32)
    # --batch-size and --steps set the patch model's too, and both train with the protocol's scars
    _, patch_saved = load_checkpoint(Path(row["patch_model"]) / "checkpoint.pt", device="cpu")
    assert (patch_saved["steps"], patch_saved["batch_size"]) == (2, 4)
    laptop = config.settings(protocol_name="laptop")
    assert saved["scar_reference"] == patch_saved["scar_reference"] == laptop.scar_reference
    confusion = proxy_confusion(
        model,
        train_cache,
        "3way",
        batches=8,
        batch_size=16,
        device="cpu",
        scar_reference=laptop.scar_reference,
    )  # the task measured is the one trained: the protocol's scar sizes
    assert row["proxy_accuracy"] == pytest.approx(confusion.trace() / confusion.sum())
    # the baseline column: the untrained encoder of the same architecture, evaluated the same way
    baseline = evaluate_model(
        untrained_model(laptop),
        train_cache,
        load_cache(synthetic_root, "synth_grid", "test", 32),
        device="cpu",
    )
    assert row["untrained_image_auroc"] == pytest.approx(baseline.image_auroc)
    for name in ("roc.png", "score_histogram.png", "tsne.png"):
        assert (out / "synth_grid" / "evaluate" / name).stat().st_size > 0
    assert (out / "synth_grid" / "localize" / "heatmaps.png").stat().st_size > 0
    text = (out / "summary.md").read_text()
    assert "untrained encoder" in text and "commit" in text and "laptop protocol" in text
    assert "ADAMW lr 0.001" in text and "head 1 x 512" in text  # the settings that trained it
    assert "trained in" in first and "== summary" in first
    # a second demo loads both course models instead of training them, and reports the same numbers
    assert cli.main(args) == 0
    assert "trained in" not in capsys.readouterr().out
    again = json.loads((out / "summary.json").read_text())["rows"][0]
    assert {k: again[k] for k in ("image_auroc", "pixel_auroc", "aupro", "proxy_accuracy")} == {
        k: row[k] for k in ("image_auroc", "pixel_auroc", "aupro", "proxy_accuracy")
    }


def test_demo_rejects_unknown_categories(synthetic_root, tmp_path, capsys):
    code = cli.main(
        [
            "demo",
            "--data",
            str(synthetic_root),
            "--out",
            str(tmp_path / "d"),
            "--categories",
            "bottle",
        ]
    )
    assert code == 2
    assert "bottle" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_demo_names_a_bad_protocol_and_an_unconfirmed_long_training(
    synthetic_root, tmp_path, monkeypatch, capsys
):
    from cutpaste_lib import course

    base = ["demo", "--data", str(synthetic_root), "--out", str(tmp_path / "d")]
    base += ["--models", str(tmp_path / "m"), "--categories", "synth_grid", "--device", "cpu"]
    monkeypatch.setenv("CUTPASTE_PROTOCOL", "weeks")
    assert cli.main(base) == 2
    assert "CUTPASTE_PROTOCOL='weeks' is not a protocol" in capsys.readouterr().err
    monkeypatch.delenv("CUTPASTE_PROTOCOL")
    monkeypatch.setattr(course, "estimate_seconds", lambda *a, **k: 30 * 86400.0)
    monkeypatch.delenv(course.CONFIRM_ENV, raising=False)
    assert cli.main([*base, "--protocol", "paper", "--image-size", "32", "--steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "30.0 days" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())  # nothing trained


def test_demo_runs_the_story_category_unless_told_otherwise(tmp_path):
    from cutpaste_lib.commands._demo_data import choose_categories
    from cutpaste_lib.config import STORY_CATEGORY

    synth = ["synth_carpet", "synth_grid", "synth_washer"]
    assert STORY_CATEGORY == "synth_carpet"  # notebooks 02-05 tell its story
    assert choose_categories(None, synth, tmp_path) == ["synth_carpet"]
    assert choose_categories(["all"], ["synth_washer", "synth_grid", "synth_carpet"], tmp_path) == [
        "synth_carpet",
        "synth_grid",
        "synth_washer",
    ]  # the synthetic order: texture, regular texture, aligned object
    assert choose_categories(["synth_washer"], synth, tmp_path) == ["synth_washer"]
    # a user's own folder without the story category: every category found, "all" too
    assert choose_categories(None, ["bottle", "screw"], tmp_path) == ["bottle", "screw"]
    assert choose_categories(["all"], ["bottle", "screw"], tmp_path) == ["bottle", "screw"]
    with pytest.raises(cli.UserError, match="--categories synth_gird not found"):
        choose_categories(["synth_gird"], synth, tmp_path)
