"""The MVTec-layout reader: metadata, formats, ordering, bad input, and the real bsdata set."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from cutpaste_lib.data import (
    MVTEC_CATEGORIES,
    build_cache,
    category_info,
    list_categories,
    load_cache,
    load_split,
    read_image,
    read_mask,
)
from cutpaste_lib.errors import DataNotFoundError, DatasetError

# ------------------------------------------------------------------ category metadata (the paper)


def test_category_table_follows_the_paper():
    assert len(MVTEC_CATEGORIES) == 15 == len(set(MVTEC_CATEGORIES))
    textures = {"carpet", "grid", "leather", "tile", "wood"}
    aligned = {
        "bottle",
        "cable",
        "capsule",
        "metal_nut",
        "pill",
        "toothbrush",
        "transistor",
        "zipper",
    }
    for name in MVTEC_CATEGORIES:
        info = category_info(name)
        assert info.kind == ("texture" if name in textures else "object"), name
        assert info.aligned == (name in aligned), name
    # free-pose objects share one Gaussian over all locations
    assert not category_info("hazelnut").aligned and not category_info("screw").aligned


def test_unknown_category_defaults_and_overrides():
    info = category_info("my_parts")
    assert (info.kind, info.aligned) == ("object", False)
    assert category_info("my_parts", kind="texture").kind == "texture"
    assert category_info("my_parts", aligned=True).aligned
    assert not category_info("bottle", aligned=False).aligned  # the table can be overridden
    with pytest.raises(ValueError, match="texture"):
        category_info("x", kind="fabric")


# ------------------------------------------------------------------ a hand-made dataset


def _save(path, array, mode=None, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(path, **kwargs)
    return path


def _rect_mask(h, w, top, left, bottom, right, value=255):
    mask = np.zeros((h, w), np.uint8)
    mask[top:bottom, left:right] = value
    return mask


@pytest.fixture
def jpg_root(tmp_path):
    """An MVTec-layout category of .jpg/.JPEG/.bmp/.tif/.png images of various sizes and modes."""
    rng = np.random.default_rng(0)
    cat = tmp_path / "root" / "parts"

    def rgb(h, w):
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)

    _save(cat / "train/good/b.jpg", rgb(30, 40))
    _save(cat / "train/good/a.JPEG", rgb(50, 50), mode="L")  # grayscale
    _save(cat / "train/good/c.jpeg", rgb(64, 20))  # tall and narrow
    _save(
        cat / "train/good/notes.TXT", rgb(2, 2), format="PNG"
    )  # an image, but not an image suffix
    _save(cat / "train/good/.hidden.jpg", rgb(8, 8))
    _save(cat / "test/good/000.bmp", rgb(40, 60), mode="RGBA")
    _save(cat / "test/good/001.tif", rgb(40, 60))
    _save(cat / "test/crack/000.jpg", rgb(40, 60))
    _save(cat / "test/crack/001.png", rgb(40, 60), mode="P")  # palette
    _save(cat / "ground_truth/crack/000_mask.png", _rect_mask(40, 60, 10, 20, 30, 40))
    _save(
        cat / "ground_truth/crack/001_mask.png", _rect_mask(40, 60, 0, 0, 4, 6, value=1)
    )  # 0/1 mask
    _save(cat / "test/a_cut/000.jpg", rgb(40, 60))
    _save(cat / "ground_truth/a_cut/000_mask.PNG", _rect_mask(40, 60, 20, 0, 40, 30))
    (cat / "readme.txt").write_text("ignored")
    (tmp_path / "root" / "not_a_category").mkdir()
    return tmp_path / "root"


def test_listing_is_sorted_and_filters_files(jpg_root):
    assert list_categories(jpg_root) == ["parts"]
    train = load_split(jpg_root, "parts", "train")
    assert [s.path.name for s in train] == ["a.JPEG", "b.jpg", "c.jpeg"]
    test = load_split(jpg_root, "parts", "test")
    assert [(s.defect, s.path.name, s.label) for s in test] == [
        ("good", "000.bmp", 0),
        ("good", "001.tif", 0),
        ("a_cut", "000.jpg", 1),
        ("crack", "000.jpg", 1),
        ("crack", "001.png", 1),
    ]
    assert test[2].mask_path.name == "000_mask.PNG"
    assert all(s.mask_path is None for s in test[:2])


def test_every_format_is_read_as_rgb_at_its_own_size(jpg_root):
    for s in load_split(jpg_root, "parts", "train") + load_split(jpg_root, "parts", "test"):
        image = read_image(s.path)
        assert image.mode == "RGB"
        with Image.open(s.path) as raw:
            assert image.size == raw.size
    gray = np.asarray(read_image(jpg_root / "parts/train/good/a.JPEG"))
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_sixteen_bit_tiff_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 256, dtype=np.uint16).reshape(16, 16)
    path = tmp_path / "deep.tif"
    Image.fromarray(ramp).save(path)
    gray = np.asarray(read_image(path))[..., 0].astype(int)
    assert np.abs(gray - np.round(ramp / 257.0)).max() <= 1


def test_cache_of_mixed_sizes(jpg_root):
    cache = load_cache(jpg_root, "parts", "test", (20, 30))
    assert cache.images.shape == (5, 3, 20, 30) and cache.masks.shape == (5, 1, 20, 30)
    # nearest resize of an exact 2x downscale: the 40x60 rectangle [10:30, 20:40] -> [5:15, 10:20]
    crack = cache.defects.index("crack")
    assert np.array_equal(cache.masks[crack, 0].numpy(), _rect_mask(20, 30, 5, 10, 15, 20) > 0)
    # a 0/1 mask is read as binary too: [0:4, 0:6] -> [0:2, 0:3]
    assert np.array_equal(cache.masks[crack + 1, 0].numpy(), _rect_mask(20, 30, 0, 0, 2, 3) > 0)
    assert not cache.masks[:2].any() and cache.labels.tolist() == [0, 0, 1, 1, 1]


def test_read_mask_binarises_noisy_masks(tmp_path):
    # JPEG-like noise around 0 and 255 must not flip pixels
    noisy = _rect_mask(16, 16, 4, 4, 12, 12).astype(int)
    noisy += np.random.default_rng(0).integers(-20, 21, noisy.shape)
    path = tmp_path / "noisy_mask.png"
    Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path)
    assert np.array_equal(read_mask(path, (16, 16)), _rect_mask(16, 16, 4, 4, 12, 12) > 0)


# ------------------------------------------------------------------ bad input


def test_missing_root_and_category(tmp_path, jpg_root):
    with pytest.raises(DataNotFoundError, match="dataset root not found"):
        load_split(tmp_path / "nowhere", "parts", "train")
    with pytest.raises(DataNotFoundError, match=r"categories found: parts"):
        load_split(jpg_root, "bottle", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataNotFoundError, match=r"categories found: none"):
        load_split(tmp_path / "empty", "bottle", "test")
    with pytest.raises(ValueError, match="split"):
        load_split(jpg_root, "parts", "val")


def test_missing_image_file(tmp_path):
    with pytest.raises(DataNotFoundError, match="gone.png"):
        read_image(tmp_path / "gone.png")


def test_empty_train_good(tmp_path):
    (tmp_path / "widget/train/good").mkdir(parents=True)
    (tmp_path / "widget/train/good/readme.md").write_text("no images here")
    with pytest.raises(DatasetError, match=r"no images in .*widget/train/good"):
        load_split(tmp_path, "widget", "train")


def test_defective_image_without_mask(jpg_root):
    (jpg_root / "parts/ground_truth/crack/001_mask.png").unlink()
    with pytest.raises(
        DatasetError, match=r"crack/001\.png has no mask \(expected .*001_mask\.png\)"
    ):
        load_split(jpg_root, "parts", "test")
    # image-level evaluation only: the image stays, labelled, without a mask; the others keep theirs
    samples = load_split(jpg_root, "parts", "test", require_masks=False)
    crack = {s.path.name: s for s in samples if s.defect == "crack"}
    assert crack["001.png"].label == 1 and crack["001.png"].mask_path is None
    assert all(
        s.mask_path is not None for s in samples if s.label == 1 and s.path.name != "001.png"
    )


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_image_names_the_file(jpg_root, damage):
    path = jpg_root / "parts/train/good/b.jpg"
    data = path.read_bytes()
    path.write_bytes(b"this is not an image" if damage == "garbage" else data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.jpg"):
        read_image(path)
    with pytest.raises(DatasetError, match=r"b\.jpg"):
        load_cache(jpg_root, "parts", "train", 16)


def test_mask_of_another_size(jpg_root):
    """Documented handling: same aspect ratio -> resized (nearest) with a warning; another aspect
    ratio -> error naming the mask (it probably belongs to another image)."""
    mask_path = jpg_root / "parts/ground_truth/crack/000_mask.png"
    _save(mask_path, _rect_mask(20, 30, 5, 10, 15, 20))  # half resolution, same rectangle
    samples = load_split(jpg_root, "parts", "test")
    with pytest.warns(UserWarning, match="resizing the mask"):
        cache = build_cache(samples, (40, 60), with_masks=True)
    crack = cache.defects.index("crack")
    assert np.array_equal(cache.masks[crack, 0].numpy(), _rect_mask(40, 60, 10, 20, 30, 40) > 0)

    _save(mask_path, _rect_mask(40, 40, 0, 0, 10, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DatasetError, match=r"000_mask\.png is 40x40 but its image is 60x40"):
            build_cache(samples, 32, with_masks=True)


def test_empty_sample_list():
    with pytest.raises(DatasetError, match="no images"):
        build_cache([], 32)


# ------------------------------------------------------------------ the real bsdata set


def test_real_bsdata_counts_and_masks(bsdata_root):
    assert list_categories(bsdata_root) == ["ball_screw"]
    train = load_split(bsdata_root, "ball_screw", "train")
    test = load_split(bsdata_root, "ball_screw", "test")
    assert len(train) == 225
    assert sum(s.defect == "good" for s in test) == 75
    pitting = [s for s in test if s.defect == "pitting"]
    assert len(pitting) == 120 and all(
        s.mask_path is not None and s.mask_path.is_file() for s in pitting
    )
    assert {s.defect for s in test} == {"good", "pitting"}
    # a few decoded images: masks are non-empty for pitting, empty for good
    subset = test[:2] + pitting[:3]
    cache = build_cache(subset, 64, with_masks=True)
    assert cache.images.shape == (5, 3, 64, 64)
    assert not cache.masks[:2].any() and all(cache.masks[i].any() for i in range(2, 5))
