"""Localization: patch grid geometry, dense features, patch Gaussians, receptive-field upsampling, end to end.

A tiny deterministic stand-in encoder (channel means and standard deviations plus a fixed random
convolution, globally pooled) keeps these tests independent of the trained model and fast.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cutpaste_lib.data import ImageCache, normalize
from cutpaste_lib.density import ProvenanceError, cholesky, l2_normalize, ledoit_wolf, mahalanobis
from cutpaste_lib.localize import (
    PatchGrid,
    dense_features,
    extract_patches,
    fit_patch_density,
    gaussian_kernel,
    localize,
    receptive_field_upsample,
    resolve_density_mode,
    score_images,
)
from cutpaste_lib.localize.moments import StreamingMoments
from cutpaste_lib.localize.shared import fit_shared
from cutpaste_lib.metrics import pixel_auroc


class StandIn(nn.Module):
    """Pooled features of a patch: channel means, channel stds, 4 fixed random conv channels (D=10)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)  # must be used in eval mode (running statistics)

    def forward(self, x):
        conv = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        return torch.cat([x.mean((2, 3)), x.std((2, 3)), conv], 1)


def _noise_images(n, size, seed, base=None):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randint(-30, 31, (n, 3, size, size), generator=g)
    base = torch.full((n, 3, size, size), 110) if base is None else base.expand(n, 3, size, size)
    return (base + noise).clamp(0, 255).to(torch.uint8)


def _cache(images, masks, split, category=""):
    labels = masks.flatten(1).any(1).long()
    defects = ["square" if v else "good" for v in labels.tolist()]
    return ImageCache(images, masks, labels, defects, [None] * len(labels), category, split)


# ----------------------------------------------------------------------------- grid and features
def test_patch_grid_has_the_papers_57x57_shape_and_validates():
    assert PatchGrid((256, 256), 32, 4).shape == (57, 57)
    assert PatchGrid((256, 256), 64, 4).shape == (49, 49)
    assert PatchGrid((64, 80), 16, 4).shape == (13, 17)
    with pytest.raises(ValueError, match="patch_size"):
        PatchGrid((16, 16), 32, 4)


def test_patch_i_j_is_the_crop_at_stride_i_stride_j():
    images = torch.randn(2, 3, 20, 23)
    p, s = 6, 3
    patches = extract_patches(images, p, s)
    gh, gw = PatchGrid((20, 23), p, s).shape
    assert patches.shape == (2, gh, gw, 3, p, p)
    flat = patches.reshape(2, gh * gw, 3, p, p)  # the order a forward pass sees
    for i in range(gh):
        for j in range(gw):
            crop = images[:, :, s * i : s * i + p, s * j : s * j + p]
            assert torch.equal(patches[:, i, j], crop)
            assert torch.equal(flat[:, i * gw + j], crop)


def test_dense_feature_i_j_is_the_encoder_on_that_crop_across_chunks():
    enc = StandIn()
    enc.train()  # dense_features must switch to eval and back
    images = _noise_images(3, 24, seed=1)
    p, s = 8, 4
    # 7 patches per forward pass: chunks split images and mix two images in one pass
    feats = dense_features(enc, images, patch_size=p, stride=s, max_patches=7)
    assert enc.training
    gh, gw = PatchGrid((24, 24), p, s).shape
    assert feats.shape == (3, gh, gw, 10)
    enc.eval()
    x = normalize(images)
    crops = torch.stack(
        [
            x[n, :, s * i : s * i + p, s * j : s * j + p]
            for n in range(3)
            for i in range(gh)
            for j in range(gw)
        ]
    )
    with torch.no_grad():
        expected = enc(crops).reshape(3, gh, gw, 10)
    torch.testing.assert_close(feats, expected, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- densities
@pytest.mark.parametrize("n,d", [(300, 6), (40, 30)])
def test_streamed_ledoit_wolf_equals_the_batch_estimator(n, d):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, d) + 5.0
    moments = StreamingMoments()
    for k in range(0, n, 37):
        moments.update(x[k : k + 37])
    # two streams with different shifts, merged: the same estimate
    even, odd = StreamingMoments(), StreamingMoments()
    for k in range(0, n, 37):
        (even if (k // 37) % 2 == 0 else odd).update(x[k : k + 37])
    ref_cov, ref_shrink = ledoit_wolf(x)
    for m in (moments, even + odd, odd + even):
        mean, cov, shrink = m.finalize()
        torch.testing.assert_close(mean, x.mean(0))
        torch.testing.assert_close(cov, ref_cov, atol=1e-10, rtol=1e-8)
        torch.testing.assert_close(shrink, ref_shrink, atol=1e-10, rtol=1e-8)
    if n < d * 2:
        assert float(shrink) > 0  # the regime where shrinkage matters


def test_patch_gaussians_equal_independent_fits_per_location_and_shared():
    enc = StandIn()
    images = _noise_images(6, 16, seed=2)
    feats = l2_normalize(
        dense_features(enc, images, patch_size=8, stride=4).double()
    )  # (6, 3, 3, 10)
    per_loc = fit_patch_density(
        enc, images, patch_size=8, stride=4, mode="per-location", location_chunk=2
    )
    assert per_loc.density.cholesky_factor.dtype == torch.float32  # memory: float32 factors
    for i in range(3):
        for j in range(3):
            cov, _ = ledoit_wolf(feats[:, i, j])
            L = per_loc.density.cholesky_factor[i, j].double()
            torch.testing.assert_close(L @ L.T, cov, atol=1e-6, rtol=1e-4)
            torch.testing.assert_close(
                per_loc.density.mean[i, j].double(), feats[:, i, j].mean(0), atol=1e-6, rtol=0
            )
    shared = fit_patch_density(enc, images, patch_size=8, stride=4, mode="shared", max_patches=5)
    cov, _ = ledoit_wolf(feats.reshape(-1, 10))
    torch.testing.assert_close(shared.density.covariance, cov, atol=1e-9, rtol=1e-7)


def test_shared_fit_reencoding_equals_keeping_features():
    enc, images = StandIn(), _noise_images(5, 16, seed=2)
    kw = dict(patch_size=8, stride=4, max_patches=7, device=torch.device("cpu"))
    kept_density, kept_scores = fit_shared(enc, images, **kw)
    again_density, again_scores = fit_shared(enc, images, keep_bytes=0, **kw)  # two encodings
    torch.testing.assert_close(kept_scores, again_scores)
    torch.testing.assert_close(kept_density.cholesky_factor, again_density.cholesky_factor)


def test_training_scale_is_cross_fitted():
    enc = StandIn()
    images = _noise_images(6, 16, seed=2)
    feats = l2_normalize(dense_features(enc, images, patch_size=8, stride=4).double())
    for mode in ("per-location", "shared"):
        pd = fit_patch_density(enc, images, patch_size=8, stride=4, mode=mode)
        expected = torch.empty(6, 3, 3, dtype=torch.float64)
        for fit, score in (([0, 2, 4], [1, 3, 5]), ([1, 3, 5], [0, 2, 4])):
            if mode == "shared":
                x = feats[fit].reshape(-1, 10)
                cov, _ = ledoit_wolf(x)
                expected[score] = mahalanobis(feats[score], x.mean(0), cholesky(cov))
            else:
                x = feats[fit].permute(1, 2, 0, 3)  # (3, 3, 3 images, D)
                cov, _ = ledoit_wolf(x)
                y = feats[score].permute(1, 2, 0, 3)
                expected[score] = mahalanobis(y, x.mean(-2), cholesky(cov)).permute(2, 0, 1)
        maps = receptive_field_upsample(expected, patch_size=8, stride=4)
        assert pd.scale.mean == pytest.approx(float(maps.mean()), rel=1e-4)
        assert pd.scale.std == pytest.approx(float(maps.std()), rel=1e-3)
        assert pd.scale.image_mean == pytest.approx(
            float(expected.flatten(1).amax(1).mean()), rel=1e-4
        )


def test_density_mode_follows_category_metadata():
    assert resolve_density_mode("auto", "bottle") == "per-location"
    for name in ("carpet", "hazelnut", "screw", "my_own_parts"):
        assert resolve_density_mode("auto", name) == "shared"
    assert resolve_density_mode("shared", "bottle") == "shared"
    with pytest.raises(ValueError, match="density"):
        resolve_density_mode("both", "bottle")


def test_fit_refuses_test_or_defective_images():
    images = _noise_images(4, 16, seed=3)
    masks = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    with pytest.raises(ProvenanceError, match="test"):
        fit_patch_density(StandIn(), _cache(images, masks, "test"), patch_size=8)
    masks[0, :, 2:5, 2:5] = True
    with pytest.raises(ProvenanceError, match="defective"):
        fit_patch_density(StandIn(), _cache(images, masks, "train"), patch_size=8)


# ----------------------------------------------------------------------------- upsampling
def _placed(kernel, i, j, stride, size):
    out = torch.zeros(size, size)
    p = kernel.shape[0]
    out[stride * i : stride * i + p, stride * j : stride * j + p] = kernel
    return out


def test_upsampling_a_delta_paints_the_kernel_on_that_patch():
    p, s = 8, 2
    grid = torch.zeros(1, 9, 9)
    grid[0, 3, 5] = 1.0
    kernel = gaussian_kernel(p)
    size = 8 * s + p
    plain = receptive_field_upsample(grid, patch_size=p, stride=s, normalize=False)
    torch.testing.assert_close(plain[0], _placed(kernel * s**2 / kernel.sum(), 3, 5, s, size))
    coverage = receptive_field_upsample(
        torch.ones(1, 9, 9), patch_size=p, stride=s, normalize=False
    )
    normed = receptive_field_upsample(grid, patch_size=p, stride=s)
    torch.testing.assert_close(normed[0] * coverage[0], plain[0], atol=1e-6, rtol=1e-5)


def test_upsampling_is_translation_equivariant_linear_and_has_no_bias():
    p, s = 8, 4
    g = torch.Generator().manual_seed(0)
    grid = torch.randn(2, 12, 12, generator=g)
    for normalize_ in (False, True):

        def up(x, normalize_=normalize_):
            return receptive_field_upsample(x, patch_size=p, stride=s, normalize=normalize_)

        shifted = torch.roll(grid, shifts=(1, 2), dims=(1, 2))
        a, b = up(grid), up(shifted)
        # one cell down and two right = stride and 2*stride pixels, away from the wrapped border
        torch.testing.assert_close(
            b[:, 16 + s : 40, 16 + 2 * s : 40], a[:, 16 : 40 - s, 16 : 40 - 2 * s]
        )
        torch.testing.assert_close(
            up(3 * grid - grid.flip(0)), 3 * a - a.flip(0), atol=1e-5, rtol=1e-5
        )
        assert torch.count_nonzero(up(torch.zeros(1, 12, 12))) == 0  # zero bias
    const = receptive_field_upsample(torch.full((1, 12, 12), 2.5), patch_size=p, stride=s)
    torch.testing.assert_close(const, torch.full_like(const, 2.5))  # also at the border


def test_upsampling_size_paper_default_and_padding():
    assert receptive_field_upsample(torch.zeros(2, 57, 57)).shape == (2, 256, 256)
    grid = torch.arange(9.0).reshape(1, 3, 3)
    out = receptive_field_upsample(grid, patch_size=8, stride=4, image_size=(19, 18))  # 16 covered
    assert out.shape == (1, 19, 18)
    torch.testing.assert_close(out[0, 16:, :16], out[0, 15:16, :16].expand(3, 16))  # copied row
    torch.testing.assert_close(out[0, :16, 16:], out[0, :16, 15:16].expand(16, 2))


# ----------------------------------------------------------------------------- end to end
def _square_masks(n, size, seed):
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for k in range(n):
        r, c = torch.randint(0, size - 8, (2,), generator=g).tolist()
        masks[k, :, r : r + 8, c : c + 8] = True
    return masks


def test_localize_finds_bright_squares_on_a_texture():
    size = 32
    train = _cache(
        _noise_images(10, size, seed=4),
        torch.zeros(10, 1, size, size, dtype=torch.bool),
        "train",
        "carpet",
    )
    masks = torch.cat(
        [_square_masks(4, size, seed=5), torch.zeros(2, 1, size, size, dtype=torch.bool)]
    )
    images = _noise_images(6, size, seed=6)
    images = torch.where(masks.expand(-1, 3, -1, -1), torch.full_like(images, 230), images)
    test = _cache(images, masks, "test", "carpet")
    result = localize(StandIn(), train, test, patch_size=8, stride=2, max_patches=100)
    assert result.patch_density.mode == "shared"  # carpet: a texture
    assert result.maps.shape == (6, size, size)
    assert result.metrics["pixel_auroc"] > 0.95  # scrambled patches would give ~0.5
    assert result.metrics["aupro"] > 0.8
    assert result.metrics["image_auroc"] == 1.0
    torch.testing.assert_close(result.image_scores, result.patch_scores.flatten(1).amax(1))
    # the reported metrics are those of the returned maps and scores (AUPRO up to FPR 0.3)
    from cutpaste_lib.metrics import aupro, auroc, f1_max

    labels = torch.tensor([1, 1, 1, 1, 0, 0])
    assert result.metrics == pytest.approx(
        {
            "pixel_auroc": pixel_auroc(result.maps, masks),
            "aupro": aupro(result.maps, masks, fpr_limit=0.3),
            "pixel_f1_max": f1_max(result.maps, masks),
            "image_auroc": auroc(result.image_scores, labels),
        }
    )
    assert result.metrics["aupro"] != pytest.approx(aupro(result.maps, masks, fpr_limit=1.0))
    # each map depends on its own image only: scoring one image alone gives the same map
    _, alone = score_images(StandIn(), images[1:2], result.patch_density)
    torch.testing.assert_close(alone[0], result.maps[1], atol=1e-4, rtol=1e-4)
    # the display scale comes from cross-fitted training maps: clean test images sit near 0 on it
    z = result.patch_density.scale.standardize(result.maps[4:])
    assert abs(float(z.mean())) < 1.0
    # normalize=False: the paper's plain transposed convolution of the same patch scores
    plain = localize(
        StandIn(), train, test, patch_size=8, stride=2, max_patches=100, normalize=False
    )
    torch.testing.assert_close(plain.patch_scores, result.patch_scores)
    expected = receptive_field_upsample(
        plain.patch_scores, patch_size=8, stride=2, image_size=(size, size), normalize=False
    )
    torch.testing.assert_close(plain.maps, expected)
    corner_plain, corner = plain.maps[:, 0, 0].abs(), result.maps[:, 0, 0].abs()
    assert corner_plain.max() < 0.2 * corner.min()  # the plain form fades at the image corner


def test_per_location_density_catches_what_a_shared_one_cannot():
    # an aligned object: dark left half, bright right half; the defect is a large bright region on
    # the dark half, whose patches look like normal right-half patches, so only a per-location
    # Gaussian can flag it (measured: ~0.99 vs ~0.59 pixel AUROC).
    size = 32
    base = torch.full((1, 3, size, size), 60)
    base[..., size // 2 :] = 200
    train = _noise_images(12, size, seed=7, base=base)
    masks = torch.zeros(4, 1, size, size, dtype=torch.bool)
    masks[:, :, 4:28, 0:14] = True
    images = _noise_images(4, size, seed=8, base=base)
    images = torch.where(
        masks.expand(-1, 3, -1, -1), _noise_images(4, size, seed=9, base=torch.tensor(200)), images
    )
    kw = dict(patch_size=8, stride=4)
    per_loc = fit_patch_density(StandIn(), train, mode="per-location", **kw)
    shared = fit_patch_density(StandIn(), train, mode="shared", **kw)
    auc_loc = pixel_auroc(score_images(StandIn(), images, per_loc)[1], masks)
    auc_shared = pixel_auroc(score_images(StandIn(), images, shared)[1], masks)
    assert auc_loc > 0.9
    assert auc_loc > auc_shared + 0.1


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def patch_checkpoint(synthetic_root, tmp_path_factory):
    """A patch model trained for 2 steps on 32 px images, 16 px crops (enough to exercise the CLI)."""
    train_mod = pytest.importorskip("cutpaste_lib.train")
    from cutpaste_lib.data import load_cache

    cache = load_cache(synthetic_root, "synth_grid", "train", 32)
    config = train_mod.TrainConfig(
        steps=2,
        batch_size=2,
        image_size=32,
        patch_size=16,
        device="cpu",
        log_every=1,
        head_depth=1,
        head_width=32,
        embedding_dim=8,
    )
    out = tmp_path_factory.mktemp("patch_model")
    return train_mod.train(config, cache, out_dir=out, progress=False).checkpoint


def test_cli_localize_writes_metrics_and_figures(patch_checkpoint, synthetic_root, tmp_path):
    import json

    from cutpaste_lib.cli import main

    out = tmp_path / "loc"
    argv = [
        "localize",
        "--checkpoint",
        str(patch_checkpoint),
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--out",
        str(out),
        "--stride",
        "8",
        "--device",
        "cpu",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("pixel_auroc", "aupro", "pixel_f1_max", "image_auroc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["patch_size"] == 8  # half the 16 px training crop
    assert metrics["grid"] == [4, 4] and metrics["density"] == "shared"  # synth_grid: a texture
    assert (out / "heatmaps.png").stat().st_size > 0 and (
        out / "pixel_curves.png"
    ).stat().st_size > 0
    assert metrics["upsample"] == "average"
    # the CLI reports what the library computes for the same checkpoint and settings
    from cutpaste_lib.data import load_cache
    from cutpaste_lib.train import load_checkpoint

    model, _ = load_checkpoint(patch_checkpoint, device="cpu")
    train = load_cache(synthetic_root, "synth_grid", "train", 32)
    test = load_cache(synthetic_root, "synth_grid", "test", 32)
    lib = localize(model, train, test, patch_size=8, stride=8, device="cpu")
    assert {k: metrics[k] for k in lib.metrics} == pytest.approx(lib.metrics)
    # --density and --patch-size take effect
    loc_out = tmp_path / "per_location"
    argv[argv.index("--out") + 1] = str(loc_out)
    assert main([*argv, "--density", "per-location", "--patch-size", "16"]) == 0
    per_loc = json.loads((loc_out / "metrics.json").read_text())
    assert per_loc["density"] == "per-location" and per_loc["patch_size"] == 16
    assert per_loc["grid"] == [3, 3]  # (32 - 16) / 8 + 1
    lib = localize(
        model, train, test, patch_size=16, stride=8, density="per-location", device="cpu"
    )
    assert {k: per_loc[k] for k in lib.metrics} == pytest.approx(lib.metrics)
    # --upsample plain is not silently ignored: other maps, so other pixel metrics
    plain_out = tmp_path / "plain"
    argv[argv.index("--out") + 1] = str(plain_out)
    assert main([*argv, "--upsample", "plain"]) == 0
    plain = json.loads((plain_out / "metrics.json").read_text())
    assert plain["upsample"] == "plain" and plain["pixel_auroc"] != metrics["pixel_auroc"]
    assert plain["image_auroc"] == metrics["image_auroc"]  # the max of the score grid: unchanged


def test_cli_localize_bad_input_is_one_clear_error_and_writes_nothing(
    patch_checkpoint, synthetic_root, tmp_path, capsys
):
    from cutpaste_lib.cli import main

    out = tmp_path / "loc"
    base = [
        "localize",
        "--checkpoint",
        str(patch_checkpoint),
        "--data",
        str(synthetic_root),
        "--out",
        str(out),
    ]
    assert main([*base, "--category", "synth_grid", "--patch-size", "64", "--device", "cpu"]) == 2
    assert "--patch-size 64" in capsys.readouterr().err
    assert main([*base, "--category", "synth_grid", "--stride", "100", "--device", "cpu"]) == 2
    assert (
        "--stride 100 with 8 px patches on 32 px images gives a single patch"
        in capsys.readouterr().err
    )
    assert main([*base, "--category", "no_such_category", "--device", "cpu"]) == 2
    assert "no_such_category" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main([*base, "--category", "synth_grid", "--density", "both"])


def test_heatmap_gallery_layout_shared_scale_and_ground_truth_outline():
    """Images in columns (wrapped into bands), every overlay on the one training scale, the ground
    truth outlined on the heatmap only where there is a defect, empty slots removed."""
    import matplotlib.pyplot as plt

    from cutpaste_lib.localize import HeatmapScale
    from cutpaste_lib.viz.heatmaps import heatmap_gallery

    n = 7
    images = torch.zeros(n, 3, 24, 24, dtype=torch.uint8)
    masks = torch.zeros(n, 1, 24, 24, dtype=torch.bool)
    masks[2:, :, 6:12, 6:12] = True
    maps = torch.rand(n, 24, 24, generator=torch.Generator().manual_seed(0)) * 9
    defects = ["good", "good", "hole", "hole", "scratch", "scratch", "stain"]
    scale = HeatmapScale(1.0, 2.0, 3.5)
    fig = heatmap_gallery(images, masks, maps, defects, scale=scale, indices=range(n), columns=3)
    try:
        panels, bar = fig.axes[:-1], fig.axes[-1]
        assert len(panels) == 3 * n  # 3 bands of 3 columns = 9 slots, the 2 empty ones removed
        titles = [ax.get_title() for ax in panels]
        assert [t for t in titles if "#" in t] == [f"{d} #{i}" for i, d in enumerate(defects)]
        heat = [ax for ax in panels if ax.get_title().startswith("heatmap")]
        assert len(heat) == n
        for i, ax in enumerate(heat):
            assert ax.images[-1].get_clim() == (0.0, 3.5)  # same colours for every image
            assert bool(ax.collections) == bool(masks[i].any())  # outline only where defective
            z = (maps[i] - scale.mean) / scale.std
            assert ax.get_title() == f"heatmap (max {round(float(z.max()), 1) + 0.0:.1f})"
        assert bar.get_ylim()[1] == pytest.approx(3.5)
        # first image of band 2 sits below the heatmap of the first column of band 1
        first, fourth = panels[titles.index("good #0")], panels[titles.index("hole #3")]
        assert fourth.get_position().y0 < first.get_position().y0
        assert fourth.get_position().x0 == pytest.approx(first.get_position().x0)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="columns"):
        heatmap_gallery(images, masks, maps, defects, scale=scale, columns=0)
