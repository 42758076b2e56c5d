"""The reproduction grid: shards, resumable atomic CSV, merge, ensemble, tables, CLI.

Grid/CSV/shard/merge/table logic runs with a fast deterministic fake job; one small real
end-to-end job checks the default train -> evaluate pipeline.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cutpaste_lib import paper, reproduce
from cutpaste_lib.errors import CutPasteError, DataNotFoundError, DatasetError
from cutpaste_lib.reproduce import GridSettings, Job, JobSpec

TINY = GridSettings(
    steps=2, batch_size=2, image_size=32, patch_size=16, dense_patch=16, dense_stride=8
)
CALLS: list[str] = []


def roc_auc_score(labels, scores) -> float:
    # Imported lazily: worker processes import this module to find fake_job, keep that cheap.
    from sklearn.metrics import roc_auc_score

    return roc_auc_score(labels, scores)


def fake_job(spec: JobSpec) -> dict:
    """Deterministic per key: scores of 6 good + 4 defective test images, 20 train scores."""
    CALLS.append(spec.job.key)
    rng = np.random.default_rng(int(hashlib.sha256(spec.job.key.encode()).hexdigest()[:8], 16))
    labels = np.array([0] * 6 + [1] * 4)
    scale = 10.0 ** rng.integers(0, 4)  # models on very different score scales
    test = scale * (rng.normal(size=10) + 1.2 * labels)
    train = scale * rng.normal(size=20)
    path = reproduce.save_scores(
        spec.job_dir / "scores.npz",
        test_scores=test,
        test_labels=labels,
        test_names=[f"img{i}.png" for i in range(10)],
        train_scores=train,
    )
    out = {"image_auroc": roc_auc_score(labels, test), "scores": path}
    if spec.job.mode == "patch":
        out.update(pixel_auroc=0.5 + rng.random() / 2, aupro=rng.random())
    return out


def failing_job(spec: JobSpec) -> dict:
    if spec.job.seed == 1 and spec.job.variant == "scar":
        raise RuntimeError("simulated divergence")
    return fake_job(spec)


def make_root(tmp_path: Path, categories, *, test=("good", "crack")) -> Path:
    """MVTec layout with (empty, never decoded) image files: the fake jobs read no pixels, and
    run_grid's pre-flight only lists the test split (``test``: its folders)."""
    root = tmp_path / "data"
    for c in categories:
        (root / c / "train" / "good").mkdir(parents=True)
        (root / c / "test").mkdir()
        for defect in test:
            (root / c / "test" / defect).mkdir()
            (root / c / "test" / defect / "000.png").touch()
            if defect != "good":
                (root / c / "ground_truth" / defect).mkdir(parents=True)
                (root / c / "ground_truth" / defect / "000_mask.png").touch()
    return root


def keys(rows) -> list[tuple]:
    return sorted(reproduce.row_key(r) for r in rows)


# ------------------------------------------------------------------ grid and shards


def test_grid_order_counts_and_validation():
    jobs = reproduce.make_grid(
        ["bottle", "screw"], ["cutpaste", "3way"], [0, 1, 2], patch_variants=["3way"]
    )
    assert len(jobs) == 2 * 2 * 3 + 2 * 3
    assert jobs[0] == Job("bottle", "cutpaste", 0) and jobs[-1] == Job("screw", "3way", 2, "patch")
    assert len({j.key for j in jobs}) == len(jobs)
    with pytest.raises(ValueError, match="valid are cutpaste, scar, union, 3way"):
        reproduce.make_grid(["bottle"], ["three_way"], [0])
    with pytest.raises(ValueError, match="duplicate"):
        reproduce.make_grid(["bottle", "bottle"], ["scar"], [0])
    with pytest.raises(ValueError, match="seeds"):
        reproduce.make_grid(["bottle"], ["scar"], [-1])


@pytest.mark.parametrize("n", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_the_grid(n):
    jobs = reproduce.make_grid(list(paper.CATEGORIES), ["cutpaste", "scar", "3way"], range(5))
    parts = [reproduce.select_shard(jobs, i, n) for i in range(n)]
    flat = [j.key for p in parts for j in p]
    assert len(flat) == len(set(flat)) == len(jobs)
    assert set(flat) == {j.key for j in jobs}
    # 225 jobs hashed into n buckets: none may be wildly off the fair share (binomial, > 5 sd).
    share = len(jobs) / n
    assert all(abs(len(p) - share) < 5 * np.sqrt(share) + 1 for p in parts)


def test_shard_membership_is_stable_across_processes_and_grid_growth():
    jobs = reproduce.make_grid(["carpet", "screw"], ["scar", "3way"], range(3))
    here = [j.key for j in reproduce.select_shard(jobs, 1, 3)]
    code = (
        "from cutpaste_lib import reproduce as r; "
        "jobs = r.make_grid(['carpet', 'screw'], ['scar', '3way'], range(3)); "
        "print('|'.join(j.key for j in r.select_shard(jobs, 1, 3)))"
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    there = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert there.stdout.strip().split("|") == here
    # Adding seeds never moves an existing job to another shard (resume-safe).
    bigger = reproduce.make_grid(["carpet", "screw"], ["scar", "3way"], range(5))
    assert set(here) <= {j.key for j in reproduce.select_shard(bigger, 1, 3)}


@pytest.mark.parametrize("text", ["1/0", "3/3", "-1/3", "a/b", "1/2/3", "2"])
def test_bad_shard_specs(text):
    with pytest.raises(ValueError, match="bad shard"):
        reproduce.parse_shard(text)
    assert reproduce.parse_shard("0/4") == (0, 4) and reproduce.parse_shard("3/4") == (3, 4)


# ------------------------------------------------------------------ running and resuming


def test_run_writes_one_row_per_job_and_rerun_skips_everything(tmp_path):
    root = make_root(tmp_path, ["screw", "carpet"])
    out = tmp_path / "out"
    CALLS.clear()
    res = reproduce.run_grid(
        root,
        out,
        variants=["scar", "3way"],
        seeds=[0, 1],
        settings=TINY,
        patch=True,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    assert (res.ran, res.skipped) == (12, 0)
    rows = reproduce.read_results(res.csv)
    assert len(rows) == 12 and len(CALLS) == 12
    by_key = {reproduce.row_key(r): r for r in rows}
    carpet = by_key[("carpet", "scar", "image", 1)]
    expected = fake_job(JobSpec(Job("carpet", "scar", 1), root, tmp_path / "x", TINY, "cpu"))
    assert carpet["image_auroc"] == expected["image_auroc"]
    assert carpet["kind"] == "texture" and by_key[("screw", "3way", "patch", 0)]["kind"] == "object"
    assert carpet["data_kind"] == "mvtec" and carpet["steps"] == 2 and carpet["pretrained"] is False
    assert (res.csv.parent / carpet["scores"]).is_file()
    assert by_key[("screw", "3way", "patch", 1)]["pixel_auroc"] is not None
    assert by_key[("screw", "3way", "image", 1)]["pixel_auroc"] is None

    CALLS.clear()
    again = reproduce.run_grid(
        root,
        out,
        variants=["scar", "3way"],
        seeds=[0, 1],
        settings=TINY,
        patch=True,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    assert (again.ran, again.skipped, CALLS) == (0, 12, [])
    assert res.csv.read_bytes() == again.csv.read_bytes()


def test_failed_jobs_leave_the_others_saved_and_a_rerun_retries_only_them(tmp_path):
    root = make_root(tmp_path, ["bottle"])
    out = tmp_path / "out"
    with pytest.raises(
        CutPasteError, match=r"1 of 6 jobs failed: bottle/scar/image/seed1: RuntimeError"
    ):
        reproduce.run_grid(
            root,
            out,
            variants=["cutpaste", "scar"],
            seeds=[0, 1, 2],
            settings=TINY,
            device="cpu",
            job=failing_job,
            progress=False,
        )
    assert len(reproduce.read_results(out / "results.csv")) == 5
    CALLS.clear()
    res = reproduce.run_grid(
        root,
        out,
        variants=["cutpaste", "scar"],
        seeds=[0, 1, 2],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    assert CALLS == ["bottle/scar/image/seed1"] and res.ran == 1 and len(res.rows) == 6


KILL_SCRIPT = """
import os
from cutpaste_lib import reproduce

def dying_job(spec):
    if spec.job.seed == 2:
        os._exit(9)  # a kill: no cleanup, no exception handling
    return {{"image_auroc": 0.5 + spec.job.seed / 10}}

settings = reproduce.GridSettings(steps=2, batch_size=2, image_size=32, patch_size=16, dense_patch=16, dense_stride=8)
reproduce.run_grid({root!r}, {out!r}, variants=["3way"], seeds=[0, 1, 2, 3], settings=settings,
                   device="cpu", job=dying_job, progress=False)
"""


def test_a_killed_run_leaves_a_valid_csv_and_resumes(tmp_path):
    root = make_root(tmp_path, ["grid"])
    out = tmp_path / "out"
    script = KILL_SCRIPT.format(root=str(root), out=str(out))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True
    )
    assert proc.returncode == 9, proc.stderr
    rows = reproduce.read_results(out / "results.csv")
    assert keys(rows) == [("grid", "3way", "image", 0), ("grid", "3way", "image", 1)]
    assert [r["image_auroc"] for r in sorted(rows, key=reproduce.row_key)] == [0.5, 0.6]
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    CALLS.clear()
    res = reproduce.run_grid(
        root,
        out,
        variants=["3way"],
        seeds=[0, 1, 2, 3],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    assert sorted(CALLS) == ["grid/3way/image/seed2", "grid/3way/image/seed3"]
    assert len(res.rows) == 4 and len(set(keys(res.rows))) == 4


def test_a_crash_while_writing_keeps_the_previous_csv(tmp_path, monkeypatch):
    root = make_root(tmp_path, ["tile"])
    out = tmp_path / "out"
    res = reproduce.run_grid(
        root,
        out,
        variants=["scar"],
        seeds=[0, 1],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    before = res.csv.read_bytes()
    row = dict(res.rows[0], seed=7)

    def broken_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(reproduce.results.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        reproduce.append_result(res.csv, row)
    assert res.csv.read_bytes() == before
    assert [p.name for p in out.iterdir() if p.suffix == ".tmp"] == []


def test_rerun_with_other_settings_is_refused(tmp_path):
    root = make_root(tmp_path, ["tile"])
    out = tmp_path / "out"
    reproduce.run_grid(
        root,
        out,
        variants=["scar"],
        seeds=[0],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    other = GridSettings(steps=3, batch_size=2, image_size=32, patch_size=16, dense_patch=16)
    with pytest.raises(CutPasteError, match="other settings.*steps=2.*steps=3.*another --out"):
        reproduce.run_grid(
            root,
            out,
            variants=["scar"],
            seeds=[0],
            settings=other,
            device="cpu",
            job=fake_job,
            progress=False,
        )


def test_unknown_category_lists_the_valid_ones(tmp_path):
    root = make_root(tmp_path, ["tile", "screw"])
    with pytest.raises(DataNotFoundError, match=r"\['wood'\].*valid are tile, screw"):
        reproduce.run_grid(root, tmp_path / "o", categories=["wood"], device="cpu", job=fake_job)


def test_test_splits_without_both_classes_are_refused_before_any_training(tmp_path):
    root = make_root(tmp_path, ["tile"])
    make_root(tmp_path, ["screw"], test=("good",))  # no defective test images
    make_root(tmp_path, ["carpet"], test=("crack",))  # no good test images
    make_root(tmp_path, ["wood"], test=())  # an empty test folder
    CALLS.clear()
    with pytest.raises(DatasetError, match="needs good and defective test images") as info:
        reproduce.run_grid(
            root,
            tmp_path / "o",
            variants=["scar"],
            seeds=[0],
            settings=TINY,
            device="cpu",
            job=fake_job,
            progress=False,
        )
    message = str(info.value)
    assert f"screw: no defective images in {root / 'screw' / 'test'}" in message
    assert f"carpet: no good images in {root / 'carpet' / 'test' / 'good'}" in message
    assert f"wood: no test images in {root / 'wood' / 'test'}" in message
    assert "tile" not in message  # every problem at once, and only the problems
    assert CALLS == [] and not (tmp_path / "o").exists()
    # the categories that have both classes run
    res = reproduce.run_grid(
        root,
        tmp_path / "o",
        categories=["tile"],
        variants=["scar"],
        seeds=[0],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    assert res.ran == 1 and CALLS == ["tile/scar/image/seed0"]


def test_two_worker_processes_give_the_same_rows_as_one(tmp_path):
    root = make_root(tmp_path, ["wood"])
    kw = dict(
        variants=["cutpaste", "3way"],
        seeds=[0, 1],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    one = reproduce.run_grid(root, tmp_path / "one", **kw)
    two = reproduce.run_grid(root, tmp_path / "two", workers=2, **kw)
    strip = ("seconds", "finished_at", "scores")
    a = sorted(
        ({k: v for k, v in r.items() if k not in strip} for r in one.rows), key=reproduce.row_key
    )
    b = sorted(
        ({k: v for k, v in r.items() if k not in strip} for r in two.rows), key=reproduce.row_key
    )
    assert a == b and len(a) == 4


def test_plan_workers_one_process_per_visible_gpu(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(
        reproduce.workers.config,
        "resolve_device",
        lambda d: torch.device("cuda" if d in (None, "auto") else d),
    )
    assert reproduce.plan_workers("auto", None) == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert reproduce.plan_workers("cuda", 2) == ["cuda:0", "cuda:1"]
    assert reproduce.plan_workers("cuda:3", None) == ["cuda:3"]  # an explicit GPU: in-process


@pytest.mark.gpu
def test_plan_workers_on_this_gpu_machine():
    import torch

    n = torch.cuda.device_count()
    assert reproduce.plan_workers("auto", None) == (
        [f"cuda:{i}" for i in range(n)] if n > 1 else ["cuda"]
    )


def test_plan_workers_on_cpu():
    assert reproduce.plan_workers("cpu", None) == ["cpu"]
    assert reproduce.plan_workers("cpu", 3) == ["cpu", "cpu", "cpu"]
    with pytest.raises(ValueError, match="workers"):
        reproduce.plan_workers("cpu", 0)


# ------------------------------------------------------------------ shards and merge


def test_shards_merge_into_the_full_grid_and_conflicts_are_errors(tmp_path):
    root = make_root(tmp_path, ["pill", "zipper"])
    kw = dict(
        variants=["cutpaste", "scar"],
        seeds=[0, 1, 2],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    full = reproduce.run_grid(root, tmp_path / "full", **kw)
    shard_csvs = [
        reproduce.run_grid(root, tmp_path / "shards", shard=f"{i}/3", **kw).csv for i in range(3)
    ]
    assert len({p.name for p in shard_csvs}) == 3  # shards may share a folder
    merged = reproduce.merge_results(
        shard_csvs + shard_csvs[:1], tmp_path / "merged"
    )  # a duplicate
    rows = reproduce.read_results(merged)
    assert keys(rows) == keys(full.rows)
    full_by = {reproduce.row_key(r): r["image_auroc"] for r in full.rows}
    assert all(full_by[reproduce.row_key(r)] == r["image_auroc"] for r in rows)
    assert all((merged.parent / r["scores"]).is_file() for r in rows)  # paths rebased

    # The same job with another result in a second CSV: a conflict naming the job.
    bad = tmp_path / "bad.csv"
    with open(shard_csvs[0], newline="") as fh:
        raw = list(csv.DictReader(fh))
    raw[0]["image_auroc"] = "0.123"
    with open(bad, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=reproduce.COLUMNS)
        w.writeheader()
        w.writerows(raw)
    job = "/".join(raw[0][c] for c in reproduce.KEY_COLUMNS)
    with pytest.raises(CutPasteError, match=f"conflicting results for job {job}"):
        reproduce.merge_results([shard_csvs[0], bad], tmp_path / "m2")
    assert not (tmp_path / "m2" / "results.csv").exists()


def test_foreign_csv_is_rejected(tmp_path):
    p = tmp_path / "x.csv"
    p.write_text("a,b\n1,2\n")
    with pytest.raises(CutPasteError, match="not a reproduce results CSV"):
        reproduce.read_results(p)
    p.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")  # binary, not UTF-8
    with pytest.raises(CutPasteError, match=r"x.csv is not a reproduce results CSV: not UTF-8"):
        reproduce.read_results(p)


def test_merge_of_header_only_csvs_writes_nothing(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(reproduce.COLUMNS) + "\n")
    assert reproduce.read_results(empty) == []
    with pytest.raises(CutPasteError, match="no results to tabulate: .*empty.csv holds no rows"):
        reproduce.merge_results([empty], tmp_path / "m" / "deeper")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv"]


# ------------------------------------------------------------------ ensemble and tables


def test_ensemble_standardises_with_training_statistics(tmp_path):
    labels = np.array([0, 0, 0, 1, 1])
    names = [f"{i}.png" for i in range(5)]
    # Model a separates perfectly on a small scale; model b is noise on a 1000x larger scale.
    a_test, a_train = np.array([0.0, 0.1, 0.2, 1.0, 1.1]), np.array([0.0, 0.1, 0.2])
    b_test, b_train = np.array([50.0, 30.0, 10.0, 20.0, 40.0]), np.array([0.0, 100.0, 200.0])
    fa = reproduce.save_scores(
        tmp_path / "a.npz",
        test_scores=a_test,
        test_labels=labels,
        test_names=names,
        train_scores=a_train,
    )
    fb = reproduce.save_scores(
        tmp_path / "b.npz",
        test_scores=b_test,
        test_labels=labels,
        test_names=names,
        train_scores=b_train,
    )
    z = (a_test - a_train.mean()) / a_train.std(ddof=1) + (b_test - b_train.mean()) / b_train.std(
        ddof=1
    )
    expected = roc_auc_score(labels, z / 2)
    assert reproduce.ensemble_auroc([fa, fb]) == pytest.approx(expected, abs=1e-12)
    # Averaging raw scores would let model b's large scale dominate: a different answer.
    assert expected == 1.0 and roc_auc_score(labels, a_test + b_test) == 0.5
    fc = reproduce.save_scores(
        tmp_path / "c.npz",
        test_scores=a_test,
        test_labels=labels,
        test_names=[f"other{i}" for i in range(5)],
        train_scores=a_train,
    )
    with pytest.raises(CutPasteError, match="disagree on the test images"):
        reproduce.ensemble_auroc([fa, fc])


def _rows(category, variant, values, *, mode="image", data_kind="mvtec", kind="texture", **extra):
    base = dict(
        mode=mode,
        pixel_auroc=None,
        aupro=None,
        encoder="resnet18",
        pretrained=False,
        steps=100,
        batch_size=8,
        image_size=64,
        patch_size=32,
        dense_patch=16,
        dense_stride=4,
        data_kind=data_kind,
        kind=kind,
        scores=None,
        seconds=1.0,
        device="cpu (x86_64)",
        commit="abc123",
        finished_at="2026-11-26T05:00:00Z",
    )
    return [
        dict(base, category=category, variant=variant, seed=s, image_auroc=v, **extra)
        for s, v in enumerate(values)
    ]


def _cells(md: str, first: str) -> list[str]:
    line = next(x for x in md.splitlines() if x.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_table1_mean_se_paper_and_delta_by_hand():
    rows = _rows("carpet", "cutpaste", [0.90, 0.92]) + _rows("grid", "cutpaste", [0.80, 0.80, 0.83])
    rows += _rows("screw", "cutpaste", [0.60], kind="object")
    md = reproduce.format_tables(rows)
    # carpet: mean 91.0, sd sqrt(2) -> se 1.0; paper 67.9 -> +23.1
    assert _cells(md, "carpet") == ["carpet", "91.0 ± 1.0", "67.9", "+23.1"]
    # grid: mean 81.0, sd sqrt(3) -> se 1.0; paper 99.9 -> -18.9
    assert _cells(md, "grid") == ["grid", "81.0 ± 1.0", "99.9", "-18.9"]
    assert _cells(md, "screw") == ["screw", "60.0", "54.4", "+5.6"]  # one seed: no error bar
    # texture mean: (91 + 81) / 2 = 86.0, se sqrt(1 + 1) / 2 = 0.7; paper (67.9 + 99.9) / 2 = 83.9
    assert _cells(md, "**texture mean**") == ["**texture mean**", "86.0 ± 0.7", "83.9", "+2.1"]
    assert _cells(md, "**object mean**")[1:] == ["60.0", "54.4", "+5.6"]
    assert "from scratch" in md and "**steps**: 100" in md and "abc123" in md and "2026-11-26" in md
    assert "**data**: MVTec AD" in md and "Table 2" not in md and "2104.04015" in md


def test_synthetic_results_never_show_paper_numbers_and_table2_appears_with_patch_models():
    rows = _rows("synth_grid", "3way", [0.7, 0.8], data_kind="synthetic")
    patch = _rows("synth_grid", "3way", [0.6, 0.7], mode="patch", data_kind="synthetic")
    rows += [dict(r, pixel_auroc=px, aupro=0.5) for r, px in zip(patch, [0.9, 0.95])]
    md = reproduce.format_tables(rows)
    assert _cells(md, "synth_grid")[:4] == ["synth_grid", "75.0 ± 5.0", "—", "—"]
    assert "not MVTec AD categories" in md and "## Table 2" in md
    table2 = md.split("## Table 2")[1]
    assert _cells(table2, "synth_grid") == [
        "synth_grid",
        "92.5 ± 2.5",
        "—",
        "—",
        "50.0 ± 0.0",
        "65.0 ± 5.0",
    ]


def test_tables_refuse_mixed_protocols():
    rows = _rows("carpet", "scar", [0.9]) + [dict(r, steps=7) for r in _rows("grid", "scar", [0.9])]
    with pytest.raises(CutPasteError, match="different settings"):
        reproduce.format_tables(rows)


def test_write_tables_with_ensemble_column(tmp_path):
    root = make_root(tmp_path, ["screw"])
    res = reproduce.run_grid(
        root,
        tmp_path / "out",
        variants=["3way"],
        seeds=[0, 1, 2],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    path = reproduce.write_tables(res.csv, tmp_path / "out")
    md = path.read_text()
    files = [res.csv.parent / r["scores"] for r in res.rows]
    ens = reproduce.ensemble_auroc(files) * 100
    assert _cells(md, "screw")[4:] == [f"{ens:.1f}", "88.7", f"{ens - 88.7:+.1f}"]
    assert "Ensemble (3-way seeds)" in md


# ------------------------------------------------------------------ CLI


def test_cli_validates_flags(tmp_path, capsys):
    from cutpaste_lib import cli

    root = make_root(tmp_path, ["tile"])
    with pytest.raises(SystemExit):
        cli.main(
            ["reproduce", "--data", str(root), "--out", str(tmp_path / "o"), "--variants", "bogus"]
        )
    assert "invalid choice: 'bogus'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["reproduce", "--data", str(root), "--out", str(tmp_path / "o"), "--shard", "4/4"])
    assert "bad shard '4/4'" in capsys.readouterr().err
    code = cli.main(
        ["reproduce", "--data", str(root), "--out", str(tmp_path / "o"), "--categories", "wood"]
    )
    assert code == 2 and "valid are tile" in capsys.readouterr().err
    code = cli.main(["reproduce", "--out", str(tmp_path / "o")])
    assert code == 2 and "--data ROOT is required" in capsys.readouterr().err
    base = ["reproduce", "--data", str(root), "--out", str(tmp_path / "o")]
    for extra, message in (
        (["--patch-size", "16"], "--patch-size needs --patch"),
        (
            ["--patch", "--image-size", "32"],
            "--patch with --image-size 32 needs --patch-size <= 32",
        ),
        (
            ["--patch", "--image-size", "32", "--patch-size", "48"],
            "--patch-size 48 is larger than --image-size 32",
        ),
        (
            ["--patch", "--patch-size", "300"],
            "--patch-size 300 is larger than the paper preset's --image-size 256",
        ),
    ):
        assert cli.main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cutpaste reproduce: error: {message}")
        assert err.count("\n") == 1 and "GridSettings" not in err and "patch_size" not in err
    assert not (tmp_path / "o").exists()


def test_cli_image_size_without_patch_is_not_limited_by_patch_sizes(tmp_path, monkeypatch):
    from cutpaste_lib import cli

    root = make_root(tmp_path, ["tile"])
    seen = {}

    def fake_run_grid(data, out, **kw):
        seen.update(kw)
        return reproduce.GridResult(tmp_path / "none.csv", [], ran=0, skipped=0)

    monkeypatch.setattr(reproduce, "run_grid", fake_run_grid)
    base = ["reproduce", "--data", str(root), "--out", str(tmp_path / "o"), "--no-progress"]

    def settings(*extra):
        assert cli.main([*base, *extra]) == 0
        return seen["settings"]

    # without --patch the unused patch sizes shrink to the image: no error about a patch model
    assert settings("--image-size", "32") == dataclasses.replace(
        GridSettings.paper(), image_size=32, patch_size=32, dense_patch=32
    )
    assert settings("--image-size", "16", "--preset", "demo") == dataclasses.replace(
        GridSettings.demo(), image_size=16, patch_size=16, dense_patch=16
    )
    # runs that were valid before record exactly what they recorded before
    assert settings() == GridSettings.paper()
    assert settings("--preset", "demo") == GridSettings.demo()
    assert settings("--image-size", "128") == dataclasses.replace(
        GridSettings.paper(), image_size=128
    )
    assert settings("--patch", "--patch-size", "16") == dataclasses.replace(
        GridSettings.paper(), patch_size=16
    )
    # with --patch the crop must fit; the dense patch (no flag) falls back to the crop
    assert settings("--patch", "--image-size", "24", "--patch-size", "16") == dataclasses.replace(
        GridSettings.paper(), image_size=24, patch_size=16, dense_patch=16
    )


def test_cli_forwards_compile_and_sizes_to_the_grid(tmp_path, monkeypatch):
    from cutpaste_lib import cli

    root = make_root(tmp_path, ["tile"])
    seen = {}

    def fake_run_grid(data, out, **kw):
        seen.update(kw)
        raise SystemExit(0)  # stop before any training

    monkeypatch.setattr(reproduce, "run_grid", fake_run_grid)
    base = ["reproduce", "--data", str(root), "--out", str(tmp_path / "o"), "--device", "cpu"]
    for extra, expected in (([], False), (["--compile"], True)):
        with pytest.raises(SystemExit):
            cli.main([*base, "--steps", "7", *extra])
        assert seen["settings"].compile is expected and seen["settings"].steps == 7
    (tmp_path / "x.csv").write_text("category\n")
    code = cli.main(
        ["reproduce", "--merge", str(tmp_path / "x.csv"), "--out", str(tmp_path / "m"), "--compile"]
    )
    assert code == 2 and not (tmp_path / "m").exists()


def test_cli_forwards_the_grid_flags(tmp_path, monkeypatch):
    from cutpaste_lib import cli

    root = make_root(tmp_path, ["tile", "leather"])
    seen = {}

    def fake_run_grid(data, out, **kw):
        seen.update(kw, data=data, out=out)
        raise SystemExit(0)  # stop before any training

    monkeypatch.setattr(reproduce, "run_grid", fake_run_grid)
    base = ["reproduce", "--data", str(root), "--out", str(tmp_path / "o"), "--device", "cpu"]
    with pytest.raises(SystemExit):
        cli.main(
            [
                *base,
                "--categories",
                "tile",
                "--variants",
                "scar",
                "--seed-list",
                "3",
                "7",
                "--shard",
                "1/2",
                "--workers",
                "2",
                "--patch",
                "--steps",
                "5",
                "--batch-size",
                "4",
                "--image-size",
                "96",
                "--patch-size",
                "32",
            ]
        )
    assert list(seen["categories"]) == ["tile"] and list(seen["variants"]) == ["scar"]
    assert list(seen["seeds"]) == [3, 7] and tuple(seen["shard"]) == (1, 2)
    assert seen["workers"] == 2 and seen["patch"]
    s = seen["settings"]
    assert (s.steps, s.batch_size, s.image_size, s.patch_size) == (5, 4, 96, 32)
    with pytest.raises(SystemExit):
        cli.main([*base, "--seeds", "3"])
    assert list(seen["seeds"]) == [0, 1, 2] and not seen["patch"]
    assert list(seen["variants"]) == list(reproduce.TABLE1_VARIANTS)


def test_cli_merge(tmp_path, capsys):
    from cutpaste_lib import cli

    root = make_root(tmp_path, ["leather"])
    res = reproduce.run_grid(
        root,
        tmp_path / "a",
        variants=["3way"],
        seeds=[0, 1],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    code = cli.main(
        ["reproduce", "--merge", str(res.csv), "--out", str(tmp_path / "m"), "--steps", "3"]
    )
    assert code == 2 and "takes no grid flags (got --steps)" in capsys.readouterr().err
    assert (
        cli.main(["reproduce", "--merge", str(res.csv), str(res.csv), "--out", str(tmp_path / "m")])
        == 0
    )
    assert keys(reproduce.read_results(tmp_path / "m" / "results.csv")) == keys(res.rows)
    assert (tmp_path / "m" / "tables.md").is_file() and (tmp_path / "m" / "table1.png").is_file()


def test_cli_merge_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys):
    from cutpaste_lib import cli

    binary = tmp_path / "scores.npz"
    binary.write_bytes(bytes(range(256)))
    empty = tmp_path / "empty.csv"
    empty.write_text(",".join(reproduce.COLUMNS) + "\n")
    out = tmp_path / "m"
    for inputs, message in (
        ([binary], f"{binary} is not a reproduce results CSV: not UTF-8 text"),
        ([empty], f"no results to tabulate: {empty} holds no rows"),
    ):
        assert cli.main(["reproduce", "--merge", *map(str, inputs), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cutpaste reproduce: error: {message}") and err.count("\n") == 1
        assert not out.exists()  # no results.csv, no .results.csv.lock, no folder
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert cli.main(["reproduce", "--merge", str(empty), "--out", str(out)]) == 2
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_cli_merge_that_fails_on_the_tables_removes_what_it_wrote(tmp_path, capsys):
    from cutpaste_lib import cli

    root = make_root(tmp_path, ["leather"])
    res = reproduce.run_grid(
        root,
        tmp_path / "a",
        variants=["3way"],
        seeds=[0, 1],
        settings=TINY,
        device="cpu",
        job=fake_job,
        progress=False,
    )
    (tmp_path / "a" / res.rows[0]["scores"]).write_bytes(b"garbage")  # the ensemble reads it
    out = tmp_path / "new" / "m"
    assert cli.main(["reproduce", "--merge", str(res.csv), "--out", str(out)]) == 2
    assert "corrupt or foreign score file" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    # merging into a folder that already holds results: the old files come back as they were
    old = tmp_path / "old"
    old.mkdir()
    (old / "results.csv").write_text("the previous merge\n")
    (old / "notes.txt").write_text("mine\n")
    assert cli.main(["reproduce", "--merge", str(res.csv), "--out", str(old)]) == 2
    assert sorted(p.name for p in old.iterdir()) == ["notes.txt", "results.csv"]
    assert (old / "results.csv").read_text() == "the previous merge\n"


# ------------------------------------------------------------------ the real job, tiny


@pytest.mark.slow
def test_real_train_evaluate_localize_job_end_to_end(synthetic_root, tmp_path):
    for module in ("cutpaste_lib.train", "cutpaste_lib.evaluate", "cutpaste_lib.localize"):
        pytest.importorskip(module, reason=f"{module} has not landed in this checkout")
    from cutpaste_lib.data import load_split

    settings = GridSettings(
        steps=2, batch_size=2, image_size=32, patch_size=16, dense_patch=16, dense_stride=8
    )
    out = tmp_path / "real"
    kw = dict(categories=["synth_grid"], settings=settings, device="cpu", progress=False)
    reproduce.run_grid(synthetic_root, out, variants=["3way"], seeds=[0, 1], **kw)
    res = reproduce.run_grid(synthetic_root, out, variants=[], seeds=[0], patch=True, **kw)
    rows = {(r["mode"], r["seed"]): r for r in res.rows}
    assert set(rows) == {("image", 0), ("image", 1), ("patch", 0)}
    n_train = len(load_split(synthetic_root, "synth_grid", "train"))
    test = load_split(synthetic_root, "synth_grid", "test")
    for seed in (0, 1):
        row = rows[("image", seed)]
        assert row["data_kind"] == "synthetic" and row["kind"] == "texture" and row["steps"] == 2
        saved = reproduce.load_scores(out / row["scores"])
        # The reported AUROC is that of the saved per-image scores; the density saw the train images only.
        assert row["image_auroc"] == pytest.approx(
            roc_auc_score(saved["test_labels"], saved["test_scores"])
        )
        assert len(saved["train_scores"]) == n_train and len(saved["test_scores"]) == len(test)
        assert (out / Job("synth_grid", "3way", seed).rel_dir / "checkpoint.pt").is_file()
    patch = rows[("patch", 0)]
    assert 0.0 <= patch["pixel_auroc"] <= 1.0 and 0.0 <= patch["aupro"] <= 1.0
    md = reproduce.write_tables(res.csv, out).read_text()
    assert "## Table 2" in md and "Ensemble (3-way seeds)" in md and "synthetic" in md
    before = res.csv.read_bytes()
    again = reproduce.run_grid(synthetic_root, out, variants=["3way"], seeds=[0, 1], **kw)
    assert again.ran == 0 and res.csv.read_bytes() == before


def test_union_table5_only_compares_whole_groups():
    rows = [r for c in paper.TEXTURES for r in _rows(c, "union", [0.95, 0.97])]
    rows += _rows("screw", "union", [0.90, 0.92], kind="object")
    md = reproduce.format_tables(rows).split("## Table 5")[1]
    assert _cells(md, "texture mean") == [
        "texture mean",
        "96.0 ± 0.4",
        "97.3",
        "-1.3",
    ]  # se: sqrt(5 * 1.0**2) / 5
    assert _cells(md, "object mean")[2:] == [
        "—",
        "—",
    ]  # one object of ten: the paper's 92.8 does not apply
    assert _cells(md, "all mean")[2:] == ["—", "—"]


def test_figure_draws_paper_points_only_for_mvtec_results():
    from cutpaste_lib.viz.reproduce import plot_ours_vs_paper

    rows = _rows("screw", "3way", [0.80, 0.84], kind="object") + _rows("carpet", "3way", [0.9, 0.9])

    def plotted(fig):  # the y values of every marker series, ours (with error bars) first
        return [
            sorted(round(float(y), 6) for y in line.get_ydata())
            for line in fig.axes[0].lines
            if line.get_marker() in ("o", "D")
        ]

    fig = plot_ours_vs_paper(rows, variant="3way")
    # ours: carpet 90 and screw 82 (mean of 80, 84); the paper's Table 1 values: 93.1 and 86.3
    assert plotted(fig) == [[82.0, 90.0], [86.3, 93.1]]
    synthetic = [dict(r, data_kind="synthetic") for r in rows]
    fig = plot_ours_vs_paper(synthetic, variant="3way")
    assert plotted(fig) == [[82.0, 90.0]]
