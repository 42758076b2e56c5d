"""The synthetic generator: layout, determinism, atomic writes, exact masks, local defects."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from cutpaste_lib import config
from cutpaste_lib.data import (
    DEFECT_TYPES,
    SYNTHETIC_CATEGORIES,
    category_info,
    ensure_synthetic,
    generate_synthetic,
    list_categories,
    load_cache,
    load_split,
    render_sample,
)
from cutpaste_lib.data import synthetic as synthetic_module
from cutpaste_lib.data.synthetic import writer as synthetic_writer
from cutpaste_lib.errors import DataNotFoundError, DatasetError


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ layout, read back by the reader


def test_layout_counts_labels_and_masks(synthetic_root):
    """conftest: size=64, n_train=12, n_test_good=4, n_test_defect=2 per defect type."""
    assert list_categories(synthetic_root) == sorted(SYNTHETIC_CATEGORIES)
    for category in SYNTHETIC_CATEGORIES:
        train = load_split(synthetic_root, category, "train")
        test = load_split(synthetic_root, category, "test")
        assert len(train) == 12 and all(s.label == 0 and s.mask_path is None for s in train)
        defects = DEFECT_TYPES[category]
        assert len(defects) >= 4
        assert [s.defect for s in test] == ["good"] * 4 + [
            d for d in sorted(defects) for _ in range(2)
        ]
        for s in test:
            assert s.label == (s.defect != "good")
            if s.label:
                assert (
                    s.mask_path
                    == synthetic_root
                    / category
                    / "ground_truth"
                    / s.defect
                    / f"{s.path.stem}_mask.png"
                )
                mask = np.asarray(Image.open(s.mask_path))
                assert mask.shape == (64, 64) and set(np.unique(mask)) == {0, 255}
            with Image.open(s.path) as im:
                assert im.size == (64, 64) and im.mode == "RGB"


def test_cache_masks_match_files(synthetic_root):
    cache = load_cache(synthetic_root, "synth_washer", "test", 64)
    assert cache.masks is not None
    for i, path in enumerate(cache.paths):
        if cache.labels[i] == 0:
            assert not cache.masks[i].any()
        else:
            mask_file = (
                synthetic_root
                / "synth_washer"
                / "ground_truth"
                / cache.defects[i]
                / f"{path.stem}_mask.png"
            )
            expected = np.asarray(Image.open(mask_file)) == 255
            assert np.array_equal(cache.masks[i, 0].numpy(), expected)


def test_manifest_and_category_metadata(synthetic_root):
    manifest = json.loads((synthetic_root / "synthetic.json").read_text())
    assert manifest["size"] == 64 and manifest["n_train"] == 12 and manifest["seed"] == 0
    assert (
        category_info("synth_carpet").kind == "texture"
        and not category_info("synth_carpet").aligned
    )
    assert category_info("synth_grid").kind == "texture" and not category_info("synth_grid").aligned
    assert category_info("synth_washer").kind == "object" and category_info("synth_washer").aligned
    for category in SYNTHETIC_CATEGORIES:
        assert manifest["categories"][category]["defects"] == list(DEFECT_TYPES[category])


# ------------------------------------------------------------------ determinism and atomic writes


def test_same_seed_gives_byte_identical_files(tmp_path):
    kwargs = dict(
        categories=["synth_grid", "synth_washer"],
        size=32,
        n_train=2,
        n_test_good=1,
        n_test_defect=1,
    )
    a = _tree_digest(generate_synthetic(tmp_path / "a", seed=3, **kwargs))
    b = _tree_digest(generate_synthetic(tmp_path / "b", seed=3, **kwargs))
    c = _tree_digest(generate_synthetic(tmp_path / "c", seed=4, **kwargs))
    assert a == b
    images = [k for k in a if k.endswith(".png") and "ground_truth" not in k]
    assert all(a[k] != c[k] for k in images)  # another seed changes every image


def test_adding_a_category_does_not_change_the_others(tmp_path):
    kwargs = dict(size=32, n_train=2, n_test_good=1, n_test_defect=1, seed=0)
    one = _tree_digest(generate_synthetic(tmp_path / "one", categories=["synth_carpet"], **kwargs))
    all3 = _tree_digest(generate_synthetic(tmp_path / "all", **kwargs))
    assert all(all3[k] == v for k, v in one.items() if k.startswith("synth_carpet"))


def test_failure_leaves_nothing_behind(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = synthetic_writer._run_job

    def flaky(job, size):
        calls["n"] += 1
        if calls["n"] == 5:
            raise RuntimeError("disk full")
        return real(job, size)

    monkeypatch.setattr(synthetic_writer, "_run_job", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic(
            tmp_path / "out",
            categories=["synth_carpet"],
            size=32,
            n_train=4,
            n_test_good=1,
            n_test_defect=1,
        )
    assert list(tmp_path.iterdir()) == []  # neither the output nor the temporary folder


TINY = dict(categories=["synth_grid"], size=32, n_test_good=1, n_test_defect=1)


def test_existing_output_needs_overwrite(tmp_path):
    out = tmp_path / "out"
    generate_synthetic(out, n_train=1, **TINY)
    (out / "synth_grid" / "notes.txt").write_text("old")
    with pytest.raises(DatasetError, match="already exists"):
        generate_synthetic(out, n_train=2, **TINY)
    assert len(load_split(out, "synth_grid", "train")) == 1
    generate_synthetic(out, n_train=2, overwrite=True, **TINY)  # a dataset made here: replaced
    assert len(load_split(out, "synth_grid", "train")) == 2
    assert not (out / "synth_grid" / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old tree was cleaned up
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_synthetic(empty, n_train=1, overwrite=True, **TINY)  # an empty folder: replaced
    assert list_categories(empty) == ["synth_grid"]


@pytest.mark.parametrize("manifest", [None, '{"generator": "something else"}', "not json"])
def test_overwrite_never_deletes_a_folder_that_is_not_a_synthetic_dataset(tmp_path, manifest):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    if manifest is not None:
        (out / "synthetic.json").write_text(manifest)
    refused = r"mine is not a synthetic dataset made by cutpaste synth \(no synthetic.json "
    with pytest.raises(DatasetError, match=refused):
        generate_synthetic(out, n_train=1, overwrite=True, **TINY)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["notes.txt"] + (["synthetic.json"] if manifest else [])
    )
    assert (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder either


def test_overwrite_never_deletes_the_working_directory_or_a_parent(tmp_path, monkeypatch):
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    monkeypatch.chdir(here)
    for out in (Path("."), here, tmp_path / "a", Path("..")):
        with pytest.raises(DatasetError, match="working directory or a folder above it"):
            generate_synthetic(out, n_train=1, overwrite=True, **TINY)
    assert (
        here.is_dir() and list(here.iterdir()) == [] and list((tmp_path / "a").iterdir()) == [here]
    )


def test_a_failed_swap_puts_the_old_dataset_back(tmp_path, monkeypatch):
    out = tmp_path / "out"
    generate_synthetic(out, n_train=1, **TINY)
    before = _tree_digest(out)
    real_replace = synthetic_writer.os.replace

    def failing_replace(src, dst):
        if str(src).endswith(".partial"):  # the new dataset onto ``out``: fails
            raise OSError(16, "Device or resource busy")
        return real_replace(src, dst)

    monkeypatch.setattr(synthetic_writer.os, "replace", failing_replace)
    with pytest.raises(OSError, match="busy"):
        generate_synthetic(out, n_train=2, overwrite=True, **TINY)
    assert _tree_digest(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no .partial, no .old folder


def test_failure_removes_the_parent_folders_it_created(tmp_path, monkeypatch):
    def broken(job, size):
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic_writer, "_run_job", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        generate_synthetic(tmp_path / "new" / "deeper" / "out", n_train=1, **TINY)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (never writable)")
def test_unwritable_location_is_an_os_error_naming_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        generate_synthetic("/proc/nope", n_train=1, **TINY)
    assert info.value.filename == "/proc/nope"
    assert not Path("/proc/nope").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"categories": ["carpet"]}, "unknown synthetic categories"),
        ({"size": 8}, "at least 16"),
        ({"n_train": 0}, "at least 1"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        generate_synthetic(tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_render_sample_rejects_unknown_names():
    with pytest.raises(ValueError, match="synth_carpet"):
        render_sample("wood")
    with pytest.raises(ValueError, match="missing"):
        render_sample("synth_carpet", "missing")  # only the washer has missing parts


# ------------------------------------------------------------------ the defects


@pytest.mark.parametrize("size", [64, 128])
@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_mask_is_exactly_the_changed_region(category, size):
    """Against the clean twin (same seed): nothing changes outside the mask, and (almost) every mask
    pixel changes visibly (>= 10 grey levels in some channel): the mask is neither too small nor
    inflated. 'Almost': a foreign fibre or a scratch can by chance match the colour underneath."""
    for defect in DEFECT_TYPES[category]:
        visible = []
        for i in range(6):
            clean, empty = render_sample(category, "good", size=size, seed=(11, i))
            image, mask = render_sample(category, defect, size=size, seed=(11, i))
            assert not empty.any()
            diff = np.abs(image.astype(int) - clean.astype(int)).max(-1)
            assert not (diff[~mask] > 0).any(), (
                f"{category}/{defect}: pixels changed outside the mask"
            )
            assert 0.0005 < mask.mean() < 0.05, (
                f"{category}/{defect}: defect not local ({mask.mean():.4f})"
            )
            visible.append((diff[mask] >= 10).mean())
        assert min(visible) >= 0.9 and np.mean(visible) >= 0.97, f"{category}/{defect}: {visible}"


@pytest.mark.parametrize("category", SYNTHETIC_CATEGORIES)
def test_mean_brightness_does_not_separate_good_from_defective(category):
    """AUROC of the mean brightness, 60 good vs 60 defective images (independent seeds).

    Under 'no separation' the AUROC has standard deviation sqrt((n1+n2+1)/(12 n1 n2)) = 0.053, so
    the tolerance 0.2 is ~3.8 standard deviations: it fails for a real shift, not by chance. A
    second, deterministic check: against its clean twin, every defect type moves the mean
    brightness by less than half the spread of mean brightness among normal images."""
    size, n = 64, 60
    defects = DEFECT_TYPES[category]
    good = [render_sample(category, "good", size=size, seed=(21, i))[0].mean() for i in range(n)]
    bad = [
        render_sample(category, defects[i % len(defects)], size=size, seed=(22, i))[0].mean()
        for i in range(n)
    ]
    auc = roc_auc_score([0] * n + [1] * n, good + bad)
    assert abs(auc - 0.5) < 0.2, auc
    spread = np.std(good)
    for defect in defects:
        shifts = [
            render_sample(category, defect, size=size, seed=(23, i))[0].mean()
            - render_sample(category, "good", size=size, seed=(23, i))[0].mean()
            for i in range(5)
        ]
        assert abs(np.mean(shifts)) < 0.5 * spread, (defect, np.mean(shifts), spread)


def test_normal_images_vary_textures_drift_objects_stay_aligned():
    """Textures: the phase moves, so the average of many normal images is almost flat (its spatial
    std is a fraction of one image's). The aligned washer: the average keeps its structure."""
    ratios = {}
    for category in SYNTHETIC_CATEGORIES:
        images = np.stack(
            [render_sample(category, size=64, seed=(31, i))[0].mean(-1) for i in range(24)]
        )
        assert np.abs(images[0] - images[1]).mean() > 3  # two normal images are not copies
        ratios[category] = images.mean(0).std() / images.std(axis=(1, 2)).mean()
    assert ratios["synth_carpet"] < 0.35 and ratios["synth_grid"] < 0.35, ratios
    assert ratios["synth_washer"] > 0.85, ratios


# ------------------------------------------------------------------ ensure_synthetic


@pytest.fixture
def tiny_settings(monkeypatch):
    tiny = config.Settings(
        name="tiny",
        image_size=32,
        steps=1,
        batch_size=2,
        patch_size=16,
        dense_patch=8,
        dense_stride=4,
        synth_size=32,
        synth_train=2,
        patch_steps=1,
    )
    monkeypatch.setattr(config, "settings", lambda protocol_name=None: tiny)
    monkeypatch.delenv("CUTPASTE_DATA", raising=False)
    return tiny


def test_ensure_synthetic_generates_once(tmp_path, tiny_settings):
    root = ensure_synthetic(tmp_path / "data")
    assert list_categories(root) == sorted(SYNTHETIC_CATEGORIES)
    assert len(load_split(root, "synth_grid", "train")) == 2
    stamp = (root / "synthetic.json").stat().st_mtime_ns
    assert ensure_synthetic(root) == root
    assert (root / "synthetic.json").stat().st_mtime_ns == stamp  # not regenerated


def test_ensure_synthetic_regenerates_stale_data(tmp_path, tiny_settings):
    root = ensure_synthetic(tmp_path / "data")
    manifest = json.loads((root / "synthetic.json").read_text())
    manifest["version"] = -1
    (root / "synthetic.json").write_text(json.dumps(manifest))
    ensure_synthetic(root)
    assert (
        json.loads((root / "synthetic.json").read_text())["version"]
        == synthetic_module.GENERATOR_VERSION
    )


def test_ensure_synthetic_never_overwrites_foreign_data(tmp_path, tiny_settings):
    mine = tmp_path / "mine"
    (mine / "widget" / "train" / "good").mkdir(parents=True)
    assert ensure_synthetic(mine) == mine
    assert list_categories(mine) == ["widget"]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match="holds no dataset"):
        ensure_synthetic(tmp_path / "junk")


def test_ensure_synthetic_honours_cutpaste_data(tmp_path, tiny_settings, monkeypatch):
    real = tmp_path / "mvtec"
    (real / "bottle" / "train" / "good").mkdir(parents=True)
    monkeypatch.setenv("CUTPASTE_DATA", str(real))
    assert ensure_synthetic() == real
    assert not (real / "synthetic.json").exists()
    monkeypatch.setenv("CUTPASTE_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataNotFoundError, match="absent"):
        ensure_synthetic()


# ------------------------------------------------------------------ figures of the data (viz/data.py)


def test_mask_outline_and_overlay():
    from cutpaste_lib.viz.data import DEFECT_COLOR, mask_outline, mask_overlay

    mask = np.zeros((10, 12), bool)
    mask[3:6, 4:9] = True  # 3 x 5 rectangle
    ring = mask_outline(mask)
    assert not (ring & mask).any() and ring.sum() == 5 * 7 - 3 * 5  # the 8-neighbour ring outside
    image = np.random.default_rng(0).random((10, 12, 3)).astype(np.float32)
    out = mask_overlay(image, mask, alpha=0.5)
    untouched = ~(mask | ring)
    assert np.array_equal(out[untouched], image[untouched])
    assert np.allclose(out[mask], 0.5 * image[mask] + 0.5 * np.asarray(DEFECT_COLOR))
    assert np.allclose(out[ring], DEFECT_COLOR)


def test_gallery_shows_every_defect_type(synthetic_root):
    import matplotlib.pyplot as plt

    from cutpaste_lib.viz.data import plot_gallery

    fig = plot_gallery(synthetic_root, n_good=2, image_size=32)
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    expected = []
    for category in sorted(SYNTHETIC_CATEGORIES):
        expected += ["good", "good", *sorted(DEFECT_TYPES[category])]
    assert titles == expected
    plt.close(fig)


# ------------------------------------------------------------------ the command line


def test_cutpaste_synth_cli(tmp_path, capsys):
    from cutpaste_lib.cli import main

    out = tmp_path / "synth"
    argv = [
        "synth",
        "--out",
        str(out),
        "--categories",
        "synth_grid",
        "--size",
        "32",
        "--n-train",
        "3",
    ]
    assert main(argv + ["--n-test-good", "2", "--n-test-defect", "1"]) == 0
    assert "synth_grid: 3 train, 2 good + 4 defective test" in capsys.readouterr().out
    assert list_categories(out) == ["synth_grid"]
    assert main(argv) == 2  # exists, no --overwrite: one clear line, nothing changed
    assert "already exists" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(tmp_path / "x"), "--size", "-3"])
    assert exit_info.value.code == 2 and "--size" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    assert main(argv + ["--n-train", "4", "--overwrite"]) == 0  # a synth dataset: replaced
    assert len(load_split(out, "synth_grid", "train")) == 4
    capsys.readouterr()


def test_cutpaste_synth_cli_overwrite_keeps_foreign_folders(tmp_path, capsys, monkeypatch):
    from cutpaste_lib.cli import main

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    argv = ["synth", "--categories", "synth_grid", "--size", "16", "--n-train", "1", "--overwrite"]
    assert main(argv + ["--out", str(mine)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cutpaste synth: error: ")
    assert f"{mine} is not a synthetic dataset made by cutpaste synth" in err
    assert (mine / "notes.txt").read_text() == "mine"
    monkeypatch.chdir(mine)
    assert main(argv + ["--out", "."]) == 2
    assert "working directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no ..*.old folder
    assert [p.name for p in mine.iterdir()] == ["notes.txt"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc (never writable)")
def test_cutpaste_synth_cli_unwritable_out_is_one_line(capsys):
    from cutpaste_lib.cli import main

    argv = ["synth", "--out", "/proc/nope", "--categories", "synth_grid", "--size", "16"]
    assert main(argv + ["--n-train", "1"]) == 2
    err = capsys.readouterr().err
    assert err == "cutpaste synth: error: cannot create /proc/nope: No such file or directory\n"
