"""Tests for cutpaste_lib.augment: references (torchvision jitter, F.pad), exact geometry, statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from scipy import stats

from cutpaste_lib import augment as A
from cutpaste_lib.augment import proxy_params
from cutpaste_lib.augment.batched_paste import paste_windows
from cutpaste_lib.augment.draws import Draws, draw, map_arrays
from cutpaste_lib.augment.geometry import half_extents


def gen(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def textures(b: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Random colourful images: almost every pixel changes under jitter or a move."""
    return torch.rand(b, 3, h, w, generator=gen(seed))


# ====== colour jitter against torchvision ======


def test_adjust_hue_matches_torchvision_including_grey_and_saturated_pixels():
    x = textures(6, 9, 13)
    x[:, :, 0] = 0.5  # grey row: hue undefined, must stay grey
    x[:, 0, 1] = 1.0  # saturated red channel
    shifts = torch.linspace(-0.5, 0.5, 6)
    ours = A.adjust_hue(x, shifts.view(-1, 1, 1))
    ref = torch.stack([TF.adjust_hue(x[i], float(s)) for i, s in enumerate(shifts)])
    torch.testing.assert_close(ours, ref, atol=2e-6, rtol=0)


def test_batched_jitter_matches_torchvision_colorjitter_per_image():
    x = textures(12, 10, 14, seed=1)
    factors, order = A.sample_jitter(
        12, generator=gen(0), brightness=0.4, contrast=0.4, saturation=0.4, hue=0.3
    )
    ours = A.jitter_batched(x, factors, order)
    ref = torch.stack([A.jitter_one(x[i], factors[i], order[i]) for i in range(12)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # jitter_one really is torchvision's ops in the sampled order
    i = 3
    y = x[i]
    for op in order[i].tolist():
        fn = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[op]
        y = fn(y, float(factors[i, op]))
    torch.testing.assert_close(ref[i], y, atol=0, rtol=0)


def test_block_jitter_uses_each_patch_mean_and_ignores_padding():
    x = textures(6, 6, 7, seed=2)
    factors, order = A.sample_jitter(
        6, generator=gen(1), brightness=0.3, contrast=0.5, saturation=0.3, hue=0.2
    )
    factors[5] = torch.tensor([1.0, 1.0, 1.0, 0.0])  # identity factors leave an image unchanged
    # each image's 42 pixels as one block, followed by 20 entries of padding holding garbage
    blocks = torch.cat([x.reshape(6, 3, 42, 1), torch.full((6, 3, 20, 1), 0.97)], dim=2)
    valid = (torch.arange(62) < 42).view(1, 1, 62, 1).expand(6, 1, 62, 1)
    out = A.jitter_blocks(blocks, valid, factors, order)
    ours = out[:, :, :42].reshape(6, 3, 6, 7)
    ref = torch.stack([A.jitter_one(x[i], factors[i], order[i]) for i in range(6)])
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert torch.equal(ours[5], x[5])


def test_batched_jitter_without_hue_promise_equals_full_computation():
    x = textures(8, 9, 11, seed=3)
    factors, order = A.sample_jitter(
        8, generator=gen(2), brightness=0.3, contrast=0.3, saturation=0.3, hue=0.0
    )
    a = A.jitter_batched(x, factors, order, hue=False)
    b = A.jitter_batched(x, factors, order)
    assert torch.equal(a, b)


@pytest.mark.parametrize("mags", [(0.1, 0.1, 0.1, 0.1), (0.4, 0.0, 0.3, 0.5), (1.5, 0.2, 0.0, 0.0)])
def test_jitter_factors_are_the_bounds_applied_column_by_column(mags):
    """The CPU path (two whole-tensor ops) gives bit for bit the per-column arithmetic."""
    f, _ = A.sample_jitter(
        37, generator=gen(11), brightness=mags[0], contrast=mags[1], saturation=mags[2], hue=mags[3]
    )
    u = torch.rand((37, 4), generator=gen(11))
    low = (max(0.0, 1 - mags[0]), max(0.0, 1 - mags[1]), max(0.0, 1 - mags[2]), -mags[3])
    high = (1 + mags[0], 1 + mags[1], 1 + mags[2], mags[3])
    ref = torch.stack([lo + (hi - lo) * u[:, k] for k, (lo, hi) in enumerate(zip(low, high))], 1)
    assert torch.equal(f, ref)
    assert torch.equal(
        f[:, [m == 0 for m in mags]],
        ref.new_tensor([[v for v, m in zip((1.0, 1.0, 1.0, 0.0), mags) if m == 0]]).expand(37, -1),
    )


def test_jitter_order_matters_and_is_a_permutation():
    _, order = A.sample_jitter(2000, generator=gen(3))
    assert torch.equal(order.sort(dim=1).values, torch.arange(4).expand(2000, 4))
    # each op is first about 1/4 of the time (chi-square, 3 dof)
    counts = torch.bincount(order[:, 0], minlength=4).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    # and the whole order is uniform over the 24 permutations (a rotated fixed order is not)
    code = (order * torch.tensor([64, 16, 4, 1])).sum(1).numpy()
    perms = np.unique(code, return_counts=True)[1]
    assert len(perms) == 24 and stats.chisquare(perms).pvalue > 1e-3
    # the order matters: brightness then contrast differs from contrast then brightness
    x = torch.rand(1, 3, 8, 8, generator=gen(30))
    factors = torch.tensor([[1.1, 0.9, 1.0, 0.0]])
    a = A.jitter_batched(x, factors, torch.tensor([[0, 1, 2, 3]]), hue=False)
    b = A.jitter_batched(x, factors, torch.tensor([[1, 0, 2, 3]]), hue=False)
    assert not torch.allclose(a, b)


def test_jitter_factor_ranges_follow_colorjitter():
    f, _ = A.sample_jitter(
        4000, generator=gen(4), brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1
    )
    for k, (lo, hi) in enumerate([(0.9, 1.1), (0.9, 1.1), (0.9, 1.1), (-0.1, 0.1)]):
        assert stats.kstest(f[:, k].numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


# ====== one sampler, two implementations ======


@pytest.mark.parametrize("size", [(40, 72), (72, 40)])
@pytest.mark.parametrize("kind", ["cutpaste", "scar"])
def test_batched_and_per_image_give_the_same_pixels(kind, size):
    x = textures(6, *size, seed=5)
    fn = A.cutpaste if kind == "cutpaste" else A.scar
    for seed in range(2):
        kw = {"scale": 1.0} if kind == "scar" else {}
        a = fn(x, generator=gen(seed), **kw)
        b = fn(x, generator=gen(seed), implementation="per_image", **kw)
        assert torch.equal(a.masks, b.masks)
        torch.testing.assert_close(a.images, b.images, atol=1e-5, rtol=0)


@pytest.mark.parametrize("variant", A.VARIANTS)
@pytest.mark.parametrize("patch_size", [None, 24])
def test_proxy_batch_batched_equals_per_image(variant, patch_size):
    x = textures(4, 32, 48, seed=6)
    a = A.make_proxy_batch(x, variant, generator=gen(7), patch_size=patch_size)
    b = A.make_proxy_batch(
        x, variant, generator=gen(7), patch_size=patch_size, implementation="per_image"
    )
    k = A.num_classes(variant)
    side = (patch_size, patch_size) if patch_size else (32, 48)
    assert a.images.shape == (k * 4, 3, *side) and a.masks.shape == (k * 4, 1, *side)
    assert torch.equal(a.labels, b.labels) and torch.equal(a.masks, b.masks)
    torch.testing.assert_close(a.images, b.images, atol=1e-5, rtol=0)


# ====== masks are the pasted pixels ======


def test_cutpaste_mask_is_the_pasted_rectangle_and_holds_the_jittered_source():
    x = textures(16, 48, 80, seed=8)
    p = A.sample_cutpaste_params(16, (48, 80), generator=gen(9))
    out, masks = A.paste_batched(x, p)
    changed = (out != x).any(dim=1, keepdim=True)
    assert not (changed & ~masks).any(), "a pixel outside the mask changed"
    for i in range(16):
        h, w = int(p.height[i]), int(p.width[i])
        sy, sx = int(p.src_y[i] - h / 2), int(p.src_x[i] - w / 2)
        dy, dx = int(p.dst_y[i] - h / 2), int(p.dst_x[i] - w / 2)
        expected = torch.zeros(48, 80, dtype=torch.bool)
        expected[dy : dy + h, dx : dx + w] = True
        assert torch.equal(masks[i, 0], expected)
        patch = TF.adjust_brightness(x[i, :, sy : sy + h, sx : sx + w], 1.0)  # a copy
        for op in p.order[i].tolist():
            fn = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)[op]
            patch = fn(patch, float(p.factors[i, op]))
        torch.testing.assert_close(out[i, :, dy : dy + h, dx : dx + w], patch, atol=1e-5, rtol=0)
    # on random textures nearly every pasted pixel really changes (the mask is not inflated)
    assert (changed & masks).sum() >= 0.98 * masks.sum()


def test_scar_changes_only_masked_pixels_and_nearly_all_of_them():
    x = textures(32, 64, 64, seed=10)
    out, masks = A.scar(x, generator=gen(11), scale=1.0)
    changed = (out != x).any(dim=1, keepdim=True)
    assert not (changed & ~masks).any()
    assert (changed & masks).sum() >= 0.98 * masks.sum()
    assert (masks.flatten(1).sum(1) > 0).all()


# ====== distributions (Kolmogorov-Smirnov over thousands of draws) ======


def loguniform_cdf(lo: float, hi: float):
    return lambda a: np.clip((np.log(a) - math.log(lo)) / (math.log(hi) - math.log(lo)), 0, 1)


def two_interval_cdf(lo: float, hi: float):
    def cdf(a):
        a = np.asarray(a, dtype=float)
        low = 0.5 * np.clip((a - lo) / (1 - lo), 0, 1)
        return low + 0.5 * np.clip((a - 1) / (hi - 1), 0, 1)

    return cdf


def test_cutpaste_area_and_aspect_distributions_match_the_paper():
    p = A.sample_cutpaste_params(4000, (256, 256), generator=gen(12))
    h, w = p.height.numpy(), p.width.numpy()  # the realised (rounded) patch sides
    area = h * w / 256**2
    assert stats.kstest(area, stats.uniform(0.02, 0.13).cdf).pvalue > 1e-3
    aspect = w / h
    assert stats.kstest(aspect, loguniform_cdf(0.3, 3.3)).pvalue > 1e-3
    assert area.min() >= 0.019 and area.max() <= 0.151
    # negative control: the same test rejects the other aspect sampling
    assert stats.kstest(aspect, two_interval_cdf(0.3, 3.3)).pvalue < 1e-6


def test_two_interval_aspect_sampling():
    a = A.sample_aspect((4000,), generator=gen(13), aspect_sampling="two_interval").numpy()
    assert stats.kstest(a, two_interval_cdf(0.3, 3.3)).pvalue > 1e-3
    assert stats.kstest(a, loguniform_cdf(0.3, 3.3)).pvalue < 1e-6
    assert abs((a < 1).mean() - 0.5) < 0.04


def test_realised_masks_match_the_sampled_rectangles():
    x = textures(32, 48, 72, seed=14)
    p = A.sample_cutpaste_params(32, (48, 72), generator=gen(15))
    _, masks = A.paste_batched(x, p)
    m = masks[:, 0]
    rows, cols = m.any(dim=2), m.any(dim=1)
    assert torch.equal(m.flatten(1).sum(1).float(), p.height * p.width)
    assert torch.equal(rows.sum(1).float(), p.height) and torch.equal(cols.sum(1).float(), p.width)


@pytest.mark.parametrize("size", [(48, 160), (160, 48), (64, 64)])
def test_patches_always_inside_the_image(size):
    H, W = size
    p = A.sample_cutpaste_params(3000, size, generator=gen(16))
    for c, s, n in (
        (p.src_y, p.height, H),
        (p.dst_y, p.height, H),
        (p.src_x, p.width, W),
        (p.dst_x, p.width, W),
    ):
        assert (c - s / 2 >= 0).all() and (c + s / 2 <= n).all()
    q = A.sample_scar_params(3000, size, generator=gen(17), scale=1.0)
    theta = torch.deg2rad(q.angle)
    ey = 0.5 * (theta.sin().abs() * q.width + theta.cos().abs() * q.height)
    ex = 0.5 * (theta.cos().abs() * q.width + theta.sin().abs() * q.height)
    assert (q.dst_y - ey >= 0).all() and (q.dst_y + ey <= H).all()
    assert (q.dst_x - ex >= 0).all() and (q.dst_x + ex <= W).all()
    assert (q.src_y - q.height / 2 >= 0).all() and (q.src_x + q.width / 2 <= W).all()


def test_scar_parameter_distributions():
    q = A.sample_scar_params(4000, (256, 256), generator=gen(18), scale=1.0)
    for values, (lo, hi) in ((q.width, (2, 16)), (q.height, (10, 25)), (q.angle, (-45, 45))):
        assert stats.kstest(values.numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3


def test_scar_scales_with_resolution():
    assert A.scar_scale((256, 256)) == 1.0 and A.scar_scale((64, 64)) == 0.25
    q = A.sample_scar_params(2000, (64, 64), generator=gen(19), scale=A.scar_scale((64, 64)))
    assert q.height.max() <= 25 * 0.25 and q.height.min() >= 10 * 0.25
    assert q.width.min() >= 1.0  # 2 * 0.25 = 0.5 px is raised to one pixel


def test_scar_reference_sizes_scars_as_for_that_resolution():
    # 64 px with scar_reference=128 draws the scars the paper's ranges give a 128 px image
    B = 500
    small = A.sample_proxy_params(B, (64, 64), "3way", generator=gen(23), scar_reference=128)
    large = A.sample_proxy_params(B, (128, 128), "3way", generator=gen(23))
    for field in ("height", "width", "angle"):
        torch.testing.assert_close(
            getattr(small.paste, field)[B:], getattr(large.paste, field)[B:], rtol=0, atol=0
        )
    assert small.paste.width[B:].min() >= 1.0 and small.paste.height[B:].max() <= 12.5
    # and the pasted pixels follow: about four times the area of the default scaling
    x = textures(400, 64, 64, seed=24)
    area = {
        ref: A.make_proxy_batch(x, "scar", generator=gen(25), scar_reference=ref)
        .masks[400:]
        .float()
        .sum(dim=(1, 2, 3))
        .mean()
        .item()
        for ref in (256, 128)
    }
    assert 2.5 < area[128] / area[256] < 4.5, area
    with pytest.raises(ValueError, match="scar_reference"):
        A.make_proxy_batch(x[:2], "scar", generator=gen(25), scar_reference=0)


def test_scar_width_length_rotation_recovered_from_the_mask():
    x = textures(48, 72, 88, seed=20)
    q = A.sample_scar_params(48, (72, 88), generator=gen(21), scale=1.0)
    _, masks = A.paste_batched(x, q)
    for i in range(48):
        ys, xs = torch.nonzero(masks[i, 0], as_tuple=True)
        pts = torch.stack([xs.float(), ys.float()], dim=1)
        cov = torch.cov(pts.T)
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        w_est, l_est = (12 * evals).sqrt().tolist()  # uniform rectangle: variance = side^2 / 12
        l, w = float(q.height[i]), float(q.width[i])
        assert abs(len(xs) - l * w) <= 2 * (l + w) + 4, "area of a rasterised rectangle"
        assert (
            abs(l_est - max(l, w)) < 1.6 and abs(w_est - min(l, w)) < 1.6
        )  # width may exceed length
        if l - w > 6:  # the long axis is well defined
            vx, vy = evecs[:, 1].tolist()
            if vy < 0:
                vx, vy = -vx, -vy
            angle = math.degrees(math.atan2(vx, vy))  # long axis (sin t, cos t) with rows downwards
            assert abs(angle - float(q.angle[i])) < 6


# ====== proxy batches ======


def test_three_way_labels_line_up_with_images():
    x = textures(8, 48, 48, seed=22)
    batch = A.make_proxy_batch(x, "3way", generator=gen(23), whole_image_aug=None)
    assert batch.labels.tolist() == [0] * 8 + [1] * 8 + [2] * 8
    normal, cp, sc = batch.images.split(8)
    mn, mc, ms = batch.masks.split(8)
    assert torch.equal(normal, x) and not mn.any()
    area = mc.flatten(1).float().mean(1)
    assert (area >= 0.019).all() and (area <= 0.16).all()  # CutPaste: 2-15 % of the image
    assert (ms.flatten(1).float().mean(1) < 0.02).all()  # Scar: thin (at most ~16x25 px at 256)
    for imgs, m in ((cp, mc), (sc, ms)):
        assert torch.equal(imgs * ~m, x * ~m)


def test_whole_image_augmentation_is_shared_by_all_views_of_an_original():
    x = textures(6, 40, 40, seed=24)
    batch = A.make_proxy_batch(x, "3way", generator=gen(25))
    normal, cp, sc = batch.images.split(6)
    assert not torch.equal(normal, x)  # the whole-image augmentation did something
    for imgs, m in zip((cp, sc), batch.masks.split(6)[1:]):
        assert torch.equal(imgs * ~m, normal * ~m)


def test_patch_mode_crops_first_then_pastes_inside_the_crop():
    x = textures(5, 64, 64, seed=26)
    batch = A.make_proxy_batch(
        x, "cutpaste", generator=gen(27), patch_size=32, whole_image_aug=None
    )
    normal, aug = batch.images.split(5)
    for i in range(5):  # each normal crop is a window of its original
        windows = x[i].unfold(1, 32, 1).unfold(2, 32, 1)  # (3, 33, 33, 32, 32)
        hits = (windows == normal[i][:, None, None]).all(0).all(-1).all(-1)
        assert hits.sum() >= 1
    area = batch.masks.split(5)[1].flatten(1).float().mean(1)
    assert (area >= 0.019).all() and (area <= 0.16).all()  # area relative to the crop


def test_union_mixes_cutpaste_and_scar_half_and_half():
    x = textures(300, 32, 32, seed=28)
    batch = A.make_proxy_batch(x, "union", generator=gen(29), whole_image_aug=None)
    assert batch.labels.tolist() == [0] * 300 + [1] * 300
    area = batch.masks[300:].flatten(1).float().mean(1)
    # at 32 px a scar covers at most ~8 px (< 0.8 %), a CutPaste patch at least ~1.5 %
    is_cutpaste = area > 0.011
    assert ((area < 0.008) | (area > 0.014)).all()
    assert stats.binomtest(int(is_cutpaste.sum()), 300, 0.5).pvalue > 1e-3


def test_whole_image_translation_reflects_like_pad():
    x = textures(1, 6, 5, seed=30)
    none = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    p = A.WholeImageParams(torch.tensor([2]), torch.tensor([-1]), none, torch.arange(4)[None])
    out = A.apply_whole_image(x, p)
    ref = torch.nn.functional.pad(x, (1, 1, 2, 2), mode="reflect")[:, :, 0:6, 2:7]
    assert torch.equal(out, ref)
    assert torch.equal(
        out[0, :, 2], x[0, :, 0, [1, 2, 3, 4, 3]]
    )  # hand-made: row 0 shifted, mirrored


def test_same_seed_same_batch_different_seed_different_batch():
    x = textures(4, 32, 40, seed=31)
    a = A.make_proxy_batch(x, "3way", generator=gen(1))
    b = A.make_proxy_batch(x, "3way", generator=gen(1))
    c = A.make_proxy_batch(x, "3way", generator=gen(2))
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images) and not torch.equal(a.masks, c.masks)


def test_num_classes_and_variants():
    assert A.VARIANTS == ("cutpaste", "scar", "union", "3way")
    assert [A.num_classes(v) for v in A.VARIANTS] == [2, 2, 2, 3]
    with pytest.raises(ValueError, match="unknown variant 'cut'"):
        A.num_classes("cut")


# ====== fixed shapes: the window bound ======


def _windows(p, size):
    """The (sh, sw) windows the batched kernel scans, from the data (the reference)."""
    _, _, inside, P = paste_windows(p, size, None)
    return P, inside


@pytest.mark.parametrize("size", [(256, 256), (64, 64), (48, 200)])
@pytest.mark.parametrize("sampling", ["log_uniform", "two_interval"])
def test_window_bound_covers_every_cutpaste_draw(size, sampling):
    p = A.sample_cutpaste_params(4000, size, generator=gen(20), aspect_sampling=sampling)
    needed, inside = _windows(p, size)
    bound = A.paste_window_bound(size, area_ratio=A.CUTPASTE_AREA)
    assert needed <= bound
    # the bound is not wildly loose: the largest window drawn uses most of it
    assert needed >= 0.75 * bound or size == (48, 200)
    assert int(inside.sum(1).max()) <= 0.15 * size[0] * size[1] * 1.1


@pytest.mark.parametrize("scale", [0.25, 1.0, 2.0])
def test_window_bound_covers_every_scar_draw(scale):
    size = (256, 256)
    p = A.sample_scar_params(4000, size, generator=gen(21), scale=scale)
    needed, _ = _windows(p, size)
    bound = A.paste_window_bound(
        size, scar_width=A.SCAR_WIDTH, scar_length=A.SCAR_LENGTH, scale=scale
    )
    assert needed <= bound <= 2.0 * needed


def test_fixed_bound_gives_the_same_pixels_and_a_too_small_one_is_refused():
    x = textures(8, 64, 64, seed=22)
    p = A.sample_scar_params(8, (64, 64), generator=gen(23), scale=1.0)
    a = A.paste_batched(x, p)
    b = A.paste_batched(
        x,
        p,
        max_pixels=A.paste_window_bound(
            (64, 64), scar_width=A.SCAR_WIDTH, scar_length=A.SCAR_LENGTH
        ),
    )
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    with pytest.raises(ValueError, match="max_pixels=4"):
        A.paste_batched(x, p, max_pixels=4)


def test_bad_inputs_give_clear_errors():
    x = textures(2, 16, 16)
    with pytest.raises(TypeError, match="float in \\[0, 1\\]"):
        A.cutpaste((x * 255).to(torch.uint8), generator=gen(0))
    with pytest.raises(ValueError, match="\\(B, 3, H, W\\)"):
        A.scar(x[:, :1], generator=gen(0))
    with pytest.raises(TypeError, match="torch.Generator"):
        A.cutpaste(x, generator=0)
    with pytest.raises(ValueError, match="patch_size"):
        A.make_proxy_batch(x, "3way", generator=gen(0), patch_size=17)
    with pytest.raises(ValueError, match="area_ratio"):
        A.cutpaste(x, generator=gen(0), area_ratio=(0.2, 0.1))
    with pytest.raises(ValueError, match="two_interval"):
        A.sample_aspect(
            (3,), generator=gen(0), aspect_ratio=(1.5, 3), aspect_sampling="two_interval"
        )


def test_move_params_keeps_structure_values_and_none():
    g = gen(40)
    p = A.sample_proxy_params(4, (32, 32), "union", generator=g, patch_size=16)
    q = A.move_params(p, torch.device("cpu"))
    assert (
        type(q) is A.ProxyParams
        and type(q.paste) is A.PasteParams
        and type(q.whole) is A.WholeImageParams
    )
    for a, b in zip(
        [*p.paste, *p.whole, p.crop, p.is_cutpaste], [*q.paste, *q.whole, q.crop, q.is_cutpaste]
    ):
        assert a.dtype == b.dtype and torch.equal(a, b)
    r = A.move_params(p._replace(whole=None, crop=None), torch.device("cpu"))
    assert r.whole is None and r.crop is None
    # NumPy leaves (the CPU samplers' own arrays) are packed the same way, into tensors
    s = A.move_params(map_arrays(p, lambda t: t.numpy()), torch.device("cpu"))
    assert type(s) is A.ProxyParams and all(isinstance(t, torch.Tensor) for t in _leaves(s))
    _assert_same_draws(p, s)


@pytest.mark.parametrize("variant", A.VARIANTS)
def test_parameters_asked_for_another_device_are_the_same_numbers(monkeypatch, variant):
    """``device=`` sends the CPU samplers' arrays in one packed copy per dtype: the same values
    as drawing then moving, and the generator advances the same. (The move is forced here:
    this machine may have no second device.)"""
    g1, g2 = gen(41), gen(41)
    b = A.move_params(
        A.sample_proxy_params(6, (64, 64), variant, generator=g2, patch_size=32), "cpu"
    )
    monkeypatch.setattr(proxy_params, "_same_device", lambda a, b: False)
    a = A.sample_proxy_params(6, (64, 64), variant, generator=g1, patch_size=32, device="cpu")
    _assert_same_draws(a, b)
    assert torch.equal(g1.get_state(), g2.get_state())


# ====== one sampler, two array back-ends ======


def _leaves(node):
    if isinstance(node, torch.Tensor):
        return [node]
    if node is None:
        return [None]
    return [leaf for child in node for leaf in _leaves(child)]


def _assert_same_draws(a, b):
    for x, y in zip(_leaves(a), _leaves(b), strict=True):
        assert (x is None and y is None) or (x.dtype == y.dtype and torch.equal(x, y))


def _both_backends(sample):
    """``sample(generator, host_arithmetic)`` with NumPy arithmetic on one draw, then torch
    arithmetic piece by piece (the path of GPU generators), each from seed 77; also the
    generators' final states."""
    out = []
    for host in (True, False):
        g = gen(77)
        out.append((sample(g, host), g.get_state()))
    return out


@pytest.mark.parametrize("variant", A.VARIANTS)
@pytest.mark.parametrize(
    "size,patch_size,sampling",
    [
        ((256, 256), None, "log_uniform"),
        ((40, 200), None, "two_interval"),
        ((96, 128), 32, "log_uniform"),
    ],
)
def test_cpu_draws_give_the_same_parameters_with_numpy_or_torch_arithmetic(
    variant, size, patch_size, sampling
):
    """CPU training draws a batch's numbers with one torch.rand and does the arithmetic in NumPy;
    that must equal, bit for bit and in the generator state it leaves, a torch.rand per piece and
    torch arithmetic (what a GPU generator runs), or seeds would mean two different things."""
    (p, state_p), (q, state_q) = _both_backends(
        lambda g, host: A.sample_proxy_params(
            33,
            size,
            variant,
            generator=g,
            patch_size=patch_size,
            aspect_sampling=sampling,
            host_arithmetic=host,
        ),
    )
    _assert_same_draws(p, q)
    assert torch.equal(state_p, state_q)


@pytest.mark.parametrize(
    "sample",
    [
        lambda g, host: A.sample_cutpaste_params(
            50, (37, 91), generator=g, aspect_sampling="two_interval", host_arithmetic=host
        ),
        lambda g, host: A.sample_scar_params(
            50, (64, 48), generator=g, scale=0.7, jitter=0.3, host_arithmetic=host
        ),
        lambda g, host: A.sample_jitter(
            50, generator=g, brightness=0.5, contrast=0.0, hue=0.2, host_arithmetic=host
        ),
        lambda g, host: A.sample_aspect((7, 9), generator=g, host_arithmetic=host),
        lambda g, host: A.sample_crop(50, (64, 80), 24, generator=g, host_arithmetic=host),
        lambda g, host: A.WholeImageAug(translate=0.2, hue=0.1).sample(
            50, (64, 80), generator=g, host_arithmetic=host
        ),
    ],
    ids=["cutpaste", "scar", "jitter", "aspect", "crop", "whole"],
)
def test_each_public_sampler_is_the_same_with_numpy_or_torch_arithmetic(sample):
    (p, state_p), (q, state_q) = _both_backends(sample)
    _assert_same_draws(p, q)
    assert torch.equal(state_p, state_q)


def test_host_arithmetic_is_an_argument_and_gives_the_same_proxy_batch():
    """No module switch: the caller picks the arithmetic per call, and the pixels do not change."""
    x = textures(4, 48, 48, seed=3)
    a = A.make_proxy_batch(x, "3way", generator=gen(12), patch_size=32)
    b = A.make_proxy_batch(x, "3way", generator=gen(12), patch_size=32, host_arithmetic=False)
    for s, t in zip(a, b, strict=True):
        assert torch.equal(s, t)


def test_draws_count_what_the_body_reads_in_declaration_order():
    """A sampler's budget is its declaration: one draw of ``count`` numbers, sliced piece by
    piece in order (nested and ``within`` pieces included), equals a torch.rand per piece."""
    layout = Draws(a=(3,), inner=Draws(b=(), c=(2,)).within(4), d=())
    assert [s for s in layout.shapes((5,))] == [(5, 3), (5, 4), (5, 4, 2), (5,)]
    assert layout.count((5,)) == 15 + 20 + 40 + 5
    one, pieces = draw(gen(0), layout, (5,)), draw(gen(0), layout, (5,), host_arithmetic=False)
    flat = torch.rand(layout.count((5,)), generator=gen(0))
    assert np.array_equal(one.a, flat[:15].view(5, 3).numpy())
    for x, y in (
        (one.a, pieces.a),
        (one.inner.b, pieces.inner.b),
        (one.inner.c, pieces.inner.c),
        (one.d, pieces.d),
    ):
        assert torch.equal(torch.from_numpy(x), y)
    with pytest.raises(AttributeError, match="no piece 'e'"):
        _ = one.e


@pytest.mark.gpu
def test_cuda_images_with_cpu_drawn_parameters_match_the_cpu_batch():
    """Training draws parameters on the CPU: the same seed gives the same batch on either device."""
    x = textures(8, 64, 64, seed=33)
    a = A.make_proxy_batch(x, "3way", generator=gen(6))
    b = A.make_proxy_batch(x.cuda(), "3way", generator=gen(6))
    assert b.images.is_cuda and torch.equal(a.labels, b.labels.cpu())
    assert (a.masks != b.masks.cpu()).float().mean() < 1e-3  # cos/sin may differ in the last bit
    both = (a.masks & b.masks.cpu()).expand(-1, 3, -1, -1)
    assert ((a.images - b.images.cpu()).abs()[both] > 1e-4).float().mean() < 1e-2
    torch.testing.assert_close(a.images[:8], b.images[:8].cpu(), atol=1e-5, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("variant", A.VARIANTS)
@pytest.mark.parametrize("sampler", ["cpu", "cuda"])
def test_cuda_proxy_batch_never_waits_for_the_device(variant, sampler):
    x = textures(8, 64, 64, seed=31).cuda()
    g = gen(5, sampler)
    A.make_proxy_batch(x, variant, generator=g)  # warm-up (first-call allocations)
    torch.cuda.set_sync_debug_mode("error")  # any host-device sync raises
    try:
        A.make_proxy_batch(x, variant, generator=g)
        A.make_proxy_batch(x, variant, generator=g, patch_size=32)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
def test_cuda_batch_is_reproducible_and_matches_cpu_for_the_same_parameters():
    x = textures(8, 64, 64, seed=32).cuda()
    a = A.make_proxy_batch(x, "3way", generator=gen(3, "cuda"))
    b = A.make_proxy_batch(x, "3way", generator=gen(3, "cuda"))
    assert torch.equal(a.images, b.images) and a.images.device.type == "cuda"
    p = A.sample_scar_params(8, (64, 64), generator=gen(4, "cuda"), scale=1.0)
    gpu = A.paste_batched(x, p)
    cpu = A.paste_batched(x.cpu(), A.PasteParams(*(f.cpu() for f in p)))
    # cos/sin may differ in the last bit between devices: allow a few boundary pixels to differ
    gpu_masks = gpu.masks.cpu()
    assert (gpu_masks != cpu.masks).float().mean() < 1e-3
    both = (gpu_masks & cpu.masks).expand(-1, 3, -1, -1)
    differ = (gpu.images.cpu() - cpu.images).abs()[both] > 1e-4
    assert differ.float().mean() < 1e-2


# ====== figures ======


def test_specified_densities_integrate_to_one_and_match_the_cdfs():
    from cutpaste_lib.viz.augment import loguniform_density, two_interval_density

    a = np.linspace(0.25, 3.5, 40001)
    for density, cdf in (
        (loguniform_density, loguniform_cdf(0.3, 3.3)),
        (two_interval_density, two_interval_cdf(0.3, 3.3)),
    ):
        values = density(a)
        assert abs(np.trapezoid(values, a) - 1) < 1e-3
        mid = a <= 2.0
        assert abs(np.trapezoid(values[mid], a[mid]) - cdf(2.0)) < 1e-3


def test_proxy_grid_has_one_row_per_view_and_mask():
    from cutpaste_lib.viz.augment import plot_proxy_batch

    batch = A.make_proxy_batch(textures(3, 16, 16), "3way", generator=gen(0))
    fig = plot_proxy_batch(batch, n=2)
    assert len(fig.axes) == (3 + 2) * 2  # normal, CutPaste + mask, Scar + mask; 2 columns
    assert [fig.axes[2 * r].get_ylabel() for r in range(5)] == [
        "normal",
        "CutPaste",
        "CutPaste mask",
        "Scar",
        "Scar mask",
    ]


# ------------------------------------------------------------------ where patches go


def _uniform_pit(corner: np.ndarray, room: np.ndarray, seed: int) -> np.ndarray:
    """Probability-integral transform of a discrete uniform on {0..room}: exactly U(0, 1)."""
    jitter = np.random.default_rng(seed).random(corner.shape)
    return (corner + jitter) / (room + 1)


def test_cutpaste_cut_and_paste_corners_are_uniform_and_independent():
    H, W = 96, 160  # non-square: a swapped axis would leave the range
    p = A.sample_cutpaste_params(4000, (H, W), generator=torch.Generator().manual_seed(21))
    h, w = p.height.numpy(), p.width.numpy()
    for k, (centre, side, size) in enumerate(
        ((p.src_y, h, H), (p.src_x, w, W), (p.dst_y, h, H), (p.dst_x, w, W))
    ):
        corner = centre.numpy() - side / 2
        assert np.allclose(corner, np.round(corner)) and corner.min() >= 0
        assert (corner <= size - side).all()
        u = _uniform_pit(np.round(corner), size - side, seed=k)
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    # cut and paste positions are drawn independently: not the same place, not correlated
    moved = (p.src_y != p.dst_y) | (p.src_x != p.dst_x)
    assert float(moved.float().mean()) > 0.95
    assert abs(np.corrcoef(p.src_y, p.dst_y)[0, 1]) < 0.1
    assert abs(np.corrcoef(p.src_x, p.dst_x)[0, 1]) < 0.1


def test_scar_paste_centre_is_uniform_over_the_positions_that_fit():
    H, W = 96, 160
    q = A.sample_scar_params(4000, (H, W), generator=torch.Generator().manual_seed(22))
    ey, ex = (t.numpy() for t in half_extents(q.height, q.width, q.angle))
    for centre, ext, size in ((q.dst_y.numpy(), ey, H), (q.dst_x.numpy(), ex, W)):
        u = (centre - ext) / (size - 2 * ext)
        assert u.min() >= 0 and u.max() <= 1
        assert stats.kstest(u, "uniform").pvalue > 1e-3
    for centre, side, size in (
        (q.src_y.numpy(), q.height.numpy(), H),
        (q.src_x.numpy(), q.width.numpy(), W),
    ):
        assert stats.kstest((centre - side / 2) / (size - side), "uniform").pvalue > 1e-3


def test_patch_crops_and_whole_image_shifts_are_uniform_over_their_ranges():
    corners = A.sample_crop(4000, (64, 80), 24, generator=torch.Generator().manual_seed(23)).numpy()
    for axis, positions in ((0, 64 - 24 + 1), (1, 80 - 24 + 1)):  # rows 0..40, columns 0..56
        counts = np.bincount(corners[:, axis], minlength=positions)
        assert len(counts) == positions and counts.min() > 0
        assert stats.chisquare(counts).pvalue > 1e-3
    shifts = A.WholeImageAug().sample(4000, (256, 256), generator=torch.Generator().manual_seed(24))
    for s in (shifts.shift_y.numpy(), shifts.shift_x.numpy()):
        assert s.min() == -16 and s.max() == 16  # 1/16 of 256 px
        assert stats.chisquare(np.bincount(s + 16, minlength=33)).pvalue > 1e-3


def test_compiled_must_be_a_caller_owned_compiler():
    """A bare flag would need a hidden module cache of compiled functions: refused by name."""
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 32, 32)
    for flag in (True, "default"):
        with pytest.raises(TypeError, match="ProxyCompiler"):
            A.make_proxy_batch(images, "3way", generator=g, compiled=flag)
    compiler = A.ProxyCompiler("default")
    assert compiler.mode == "default" and A.ProxyCompiler.for_device("cpu").mode == "default"
