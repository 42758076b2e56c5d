"""ImageCache, build_cache/load_cache and ImageNet normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

from cutpaste_lib.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Sample,
    build_cache,
    denormalize,
    load_cache,
    load_split,
    normalize,
    render_sample,
)


@pytest.fixture
def image_files(tmp_path):
    paths = []
    for i, (category, size) in enumerate(
        [("synth_grid", 96), ("synth_carpet", 80), ("synth_washer", 96)]
    ):
        image, _ = render_sample(category, size=size, seed=i)
        path = tmp_path / f"{i}.png"
        Image.fromarray(image).save(path)
        paths.append(path)
    return paths


def test_resize_matches_torchvision_antialiased_bilinear(image_files):
    """The cache resizes like torchvision's resize(antialias=True) (within one grey level)."""
    samples = [Sample(p, 0, "good", None) for p in image_files]
    cache = build_cache(samples, (48, 40))
    for i, path in enumerate(image_files):
        source = torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1)
        reference = TF.resize(source, [48, 40], antialias=True)
        diff = (cache.images[i].int() - reference.int()).abs()
        assert diff.max() <= 1 and diff.float().mean() < 0.05


def test_cache_fields(synthetic_root):
    cache = load_cache(synthetic_root, "synth_carpet", "test", 32)
    samples = load_split(synthetic_root, "synth_carpet", "test")
    assert len(cache) == len(samples) and cache.image_size == (32, 32)
    assert cache.images.dtype == torch.uint8 and cache.images.shape == (len(samples), 3, 32, 32)
    assert cache.masks.dtype == torch.bool and cache.masks.shape == (len(samples), 1, 32, 32)
    assert cache.labels.dtype == torch.int64 and cache.labels.tolist() == [s.label for s in samples]
    assert cache.defects == [s.defect for s in samples] and cache.paths == [s.path for s in samples]
    assert (cache.category, cache.split) == ("synth_carpet", "test")
    assert all(cache.masks[i].any() == bool(cache.labels[i]) for i in range(len(cache)))
    train = load_cache(synthetic_root, "synth_carpet", "train", 32)
    assert train.masks is None and train.labels.sum() == 0


def test_subset_and_to(synthetic_root):
    cache = load_cache(synthetic_root, "synth_grid", "test", 16)
    idx = [5, 0, 7]
    sub = cache.subset(idx)
    assert torch.equal(sub.images, cache.images[idx]) and torch.equal(sub.masks, cache.masks[idx])
    assert sub.defects == [cache.defects[i] for i in idx] and sub.paths == [
        cache.paths[i] for i in idx
    ]
    bad = cache.subset(cache.labels == 1)
    assert len(bad) == int(cache.labels.sum()) and bad.labels.min() == 1
    assert torch.equal(cache.subset(slice(0, 4)).images, cache.images[:4])
    assert torch.equal(cache.subset(torch.tensor([2, 3])).labels, cache.labels[2:4])
    moved = cache.to("cpu")
    assert moved.images.device.type == "cpu" and torch.equal(moved.images, cache.images)


def test_threads_do_not_change_the_result(synthetic_root):
    samples = load_split(synthetic_root, "synth_washer", "test")
    one = build_cache(samples, 24, with_masks=True, num_workers=1)
    four = build_cache(samples, 24, with_masks=True, num_workers=4)
    assert torch.equal(one.images, four.images) and torch.equal(one.masks, four.masks)


def test_normalize_known_values():
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    assert torch.allclose(
        normalize(mean.expand(2, 3, 4, 4).clone()), torch.zeros(2, 3, 4, 4), atol=1e-6
    )
    white = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    assert torch.allclose(normalize(white), ((1 - mean) / std).expand(1, 3, 2, 2), atol=1e-6)
    images = torch.randint(0, 256, (3, 3, 5, 7), dtype=torch.uint8)
    as_uint8, as_float = normalize(images), normalize(images.float() / 255)
    assert as_uint8.dtype == torch.float32 and torch.allclose(as_uint8, as_float, atol=1e-6)
    assert normalize(images[0]).shape == (3, 5, 7)  # a single image works too


def test_denormalize_inverts_normalize():
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(denormalize(normalize(x)), x, atol=1e-6)
    assert denormalize(torch.full((1, 3, 2, 2), 100.0)).max() == 1.0  # clamped for display


def test_normalize_rejects_wrong_channels():
    with pytest.raises(ValueError, match="3, H, W"):
        normalize(torch.zeros(2, 1, 8, 8))


@pytest.mark.gpu
def test_cache_on_gpu_matches_cpu(synthetic_root):
    cpu = load_cache(synthetic_root, "synth_grid", "test", 32)
    gpu = load_cache(synthetic_root, "synth_grid", "test", 32, device="cuda")
    assert gpu.images.is_cuda and gpu.masks.is_cuda and gpu.labels.is_cuda
    assert torch.equal(gpu.images.cpu(), cpu.images) and torch.equal(gpu.masks.cpu(), cpu.masks)
    x = normalize(gpu.images)
    assert x.is_cuda and torch.allclose(x.cpu(), normalize(cpu.images), atol=1e-6)
    assert gpu.subset([0, 1]).images.is_cuda and gpu.to("cpu").images.device.type == "cpu"
