"""`cutpaste demo` end to end at toy size: every number it prints is traceable to the files it wrote."""

from __future__ import annotations

import csv
import json

import pytest

from cutpaste_lib import cli


@pytest.mark.slow
def test_demo_numbers_agree_with_the_grid_csv_and_the_cli_metrics(synthetic_root, tmp_path, capsys):
    out = tmp_path / "demo"
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
        "--image-size",
        "32",
        "--device",
        "cpu",
    ]
    assert cli.main(args) == 0
    summary = json.loads((out / "summary.json").read_text())["rows"]
    assert [r["category"] for r in summary] == ["synth_grid"]
    row = summary[0]
    evaluate = json.loads((out / "synth_grid" / "evaluate" / "metrics.json").read_text())
    localize = json.loads((out / "synth_grid" / "localize" / "metrics.json").read_text())
    with open(out / "reproduce" / "results.csv", newline="") as f:
        grid = {(r["variant"], r["mode"]): r for r in csv.DictReader(f)}
    # the grid job and the evaluate/localize commands computed the same numbers from the same checkpoints
    assert (
        row["image_auroc"]
        == evaluate["image_auroc"]
        == pytest.approx(float(grid["3way", "image"]["image_auroc"]))
    )
    assert (
        row["pixel_auroc"]
        == localize["pixel_auroc"]
        == pytest.approx(float(grid["3way", "patch"]["pixel_auroc"]))
    )
    assert row["aupro"] == localize["aupro"] == pytest.approx(float(grid["3way", "patch"]["aupro"]))
    # the proxy accuracy is the diagonal of the confusion matrix of the saved image model
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.train import load_checkpoint, proxy_confusion

    ckpt = out / "reproduce" / "jobs" / "synth_grid" / "3way-image" / "seed0" / "checkpoint.pt"
    model, _ = load_checkpoint(ckpt, device="cpu")
    confusion = proxy_confusion(
        model,
        load_cache(synthetic_root, "synth_grid", "train", 32),
        "3way",
        batch_size=8,
        device="cpu",
    )
    assert row["proxy_accuracy"] == pytest.approx(confusion.trace() / confusion.sum())
    for name in ("roc.png", "score_histogram.png", "tsne.png"):
        assert (out / "synth_grid" / "evaluate" / name).stat().st_size > 0
    assert (out / "synth_grid" / "localize" / "heatmaps.png").stat().st_size > 0
    assert "synth_grid" in (out / "summary.md").read_text()
    assert (out / "reproduce" / "tables.md").is_file()
    assert "== summary" in capsys.readouterr().out


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
