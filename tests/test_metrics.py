"""Metrics against scikit-learn and against hand-made maps whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from cutpaste_lib.metrics import aupro, auroc, f1_max, pixel_auroc, pro_curve


# ----------------------------------------------------------------------------- AUROC
def test_auroc_hand_case_with_a_tie():
    # positives 0.8, 0.5 ; negatives 0.5, 0.1: pairs (0.8>0.5),(0.8>0.1),(0.5=0.5 -> 1/2),(0.5>0.1)
    assert auroc([0.8, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx(3.5 / 4, abs=0)


@pytest.mark.parametrize("levels", [3, 17, None])
def test_pixel_auroc_equals_sklearn_including_ties(levels):
    rng = np.random.default_rng(levels or 0)
    masks = rng.random((5, 1, 24, 24)) < 0.15
    maps = rng.normal(size=masks.shape) + 1.2 * masks
    if levels is not None:  # quantise: many ties, also across the two classes
        maps = np.round(maps * levels / 4) / levels
    expected = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(expected, abs=1e-12)
    assert pixel_auroc(torch.from_numpy(maps).float(), torch.from_numpy(masks)) == pytest.approx(
        roc_auc_score(masks.ravel(), maps.astype(np.float32).ravel()), abs=1e-12
    )


def test_auroc_is_invariant_to_monotone_transforms_and_flips_with_sign():
    rng = np.random.default_rng(1)
    s, y = rng.normal(size=200), rng.random(200) < 0.3
    a = auroc(s, y)
    assert auroc(np.exp(3 * s), y) == pytest.approx(a, abs=1e-12)
    assert auroc(-s, y) == pytest.approx(1 - a, abs=1e-12)


def test_auroc_rejects_bad_input():
    with pytest.raises(ValueError, match="one class"):
        auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        auroc([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="0 and 1"):
        auroc([0.1, 0.2], [0, 2])
    with pytest.raises(ValueError, match="shape"):
        pixel_auroc(np.zeros((2, 4, 4)), np.zeros((2, 4, 5), bool))


# ----------------------------------------------------------------------------- F1-max
def test_f1_max_hand_case():
    # thresholds 0.9 / 0.8 / 0.7 / 0.6 -> F1 = 2/3, 1/2, 4/5, 2/3
    assert f1_max(np.array([0.9, 0.8, 0.7, 0.6]), np.array([1, 0, 1, 0])) == pytest.approx(0.8)


def test_f1_max_equals_sklearn_precision_recall_curve_with_ties():
    rng = np.random.default_rng(2)
    masks = rng.random((4, 16, 16)) < 0.2
    maps = np.round(rng.normal(size=masks.shape) + masks, 1)
    p, r, _ = precision_recall_curve(masks.ravel(), maps.ravel())
    with np.errstate(invalid="ignore", divide="ignore"):
        expected = np.nanmax(2 * p * r / (p + r))
    assert f1_max(maps, masks) == pytest.approx(expected, abs=1e-12)


# ----------------------------------------------------------------------------- AUPRO
def _image_with_two_regions():
    """12x9 image: two 2x2 defect regions A and B, exactly 100 defect-free pixels."""
    mask = np.zeros((12, 9), bool)
    mask[1:3, 1:3] = True  # A
    mask[8:10, 5:7] = True  # B
    return mask


def test_aupro_perfect_and_inverted_maps():
    mask = _image_with_two_regions()
    assert aupro(mask.astype(float), mask) == pytest.approx(1.0, abs=1e-12)
    # every normal pixel above every defect pixel: PRO is 0 until FPR = 1
    assert aupro(1.0 - mask, mask) == pytest.approx(0.0, abs=1e-12)


def test_aupro_regions_ranked_in_a_known_order():
    mask = _image_with_two_regions()
    ok = np.flatnonzero(~mask.ravel())
    m = np.zeros(mask.size)
    m[mask.ravel() & (np.arange(mask.size) < 40)] = 10.0  # region A (rows 1-2)
    m[ok[:10]] = 9.0  # 10 of 100 normal pixels: FPR 0.1
    m[mask.ravel() & (np.arange(mask.size) >= 40)] = 8.0  # region B
    m = m.reshape(mask.shape)
    # curve (0,0) -> (0,.5) -> (.1,.5) -> (.1,1) -> (1,1): area to 0.3 = .1*.5 + .2*1 = .25
    assert aupro(m, mask) == pytest.approx(0.25 / 0.3, abs=1e-12)
    fpr, pro, thr = pro_curve(m, mask)
    np.testing.assert_allclose(fpr, [0, 0, 0.1, 0.1, 1])
    np.testing.assert_allclose(pro, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 10, 9, 8, 0])


def test_aupro_interpolates_a_tied_segment_at_the_limit():
    mask = _image_with_two_regions()
    flat, ok = mask.ravel(), np.flatnonzero(~mask.ravel())
    m = np.zeros(mask.size)
    m[flat & (np.arange(mask.size) < 40)] = 10.0  # A first
    m[ok[:10]] = 9.0  # FPR 0.1
    m[flat & (np.arange(mask.size) >= 40)] = 5.0  # B tied with 40 normal pixels:
    m[ok[10:50]] = 5.0  # one straight segment (0.1, 0.5) -> (0.5, 1.0), crossing 0.3 at 0.75
    m = m.reshape(mask.shape)
    assert aupro(m, mask) == pytest.approx((0.1 * 0.5 + 0.2 * (0.5 + 0.75) / 2) / 0.3, abs=1e-12)
    # with the limit at 1 the whole curve counts: .05 + .4*.75 + .5*1
    assert aupro(m, mask, fpr_limit=1.0) == pytest.approx(0.05 + 0.3 + 0.5, abs=1e-12)


def test_aupro_averages_regions_not_pixels():
    mask = np.zeros((11, 10), bool)
    mask[0, 0] = True  # region A: 1 pixel
    mask[5:8, 5:8] = True  # region B: 9 pixels; 100 normal pixels
    m = np.zeros(mask.shape)
    m[0, 0] = 10.0
    ok = np.flatnonzero(~mask.ravel())
    m.ravel()[ok[:30]] = 9.0  # FPR reaches 0.3 before B is found
    m[5:8, 5:8] = 1.0
    # Only A (one of two regions) is found below FPR 0.3: PRO = 0.5 although 1/10 of defect pixels.
    assert aupro(m, mask) == pytest.approx(0.5, abs=1e-12)


def test_aupro_uses_8_connectivity_and_separates_images():
    mask = np.zeros((10, 10), bool)
    mask[0, 0:2] = True
    mask[1, 2] = True  # touches (0, 1) diagonally only
    m = np.zeros(mask.shape)
    m[0, 0:2] = 2.0  # 2 of the 3 pixels found before any normal pixel
    m[1, 2] = -1.0  # after every normal pixel
    assert aupro(m, mask) == pytest.approx(2 / 3, abs=1e-12)  # one region of 3 pixels
    assert aupro(m, mask, connectivity=4) == pytest.approx(0.5, abs=1e-12)  # two regions

    masks = np.zeros((2, 10, 10), bool)
    masks[0, 0, 0] = True
    masks[1, 0:2, 0:2] = True  # same position, another image: a separate region
    maps = masks.astype(float)
    maps[1] = -1.0 * masks[1]  # image 2: its region below every normal pixel (all at 0)
    assert aupro(maps, masks) == pytest.approx(0.5, abs=1e-12)


def _pro_curve_by_loops(maps, masks, thresholds):
    regions = [
        (lab == k)
        for m in masks
        for lab, n in [ndimage.label(m, np.ones((3, 3)))]
        for k in range(1, n + 1)
    ]
    region_maps = [
        mp for mp, m in zip(maps, masks) for _ in range(ndimage.label(m, np.ones((3, 3)))[1])
    ]
    fpr = [((maps >= t) & ~masks).sum() / (~masks).sum() for t in thresholds]
    pro = [
        np.mean([(mp[r] >= t).mean() for mp, r in zip(region_maps, regions)]) for t in thresholds
    ]
    return np.array(fpr), np.array(pro)


def test_pro_curve_matches_a_loop_over_thresholds_and_regions():
    rng = np.random.default_rng(3)
    masks = np.zeros((3, 20, 20), bool)
    masks[0, 2:6, 3:9] = True
    masks[0, 12:14, 12:19] = True
    masks[2, 5:15, 5:7] = True
    maps = np.round(
        ndimage.gaussian_filter(masks.astype(float), (0, 2, 2)) + rng.normal(0, 0.1, masks.shape), 2
    )
    fpr, pro, thr = pro_curve(torch.from_numpy(maps[:, None]), torch.from_numpy(masks[:, None]))
    ref_fpr, ref_pro = _pro_curve_by_loops(maps, masks, thr[1:])
    np.testing.assert_allclose(fpr[1:], ref_fpr, atol=1e-12)
    np.testing.assert_allclose(pro[1:], ref_pro, atol=1e-12)
    # the area, by a dense independent integration of the same piecewise-linear curve
    grid = np.linspace(0, 0.3, 300_001)
    curve = np.interp(grid, fpr, pro)
    ref = np.sum((curve[1:] + curve[:-1]) / 2 * np.diff(grid)) / 0.3
    assert aupro(maps, masks) == pytest.approx(ref, abs=1e-4)


def test_aupro_rejects_bad_input():
    with pytest.raises(ValueError, match="no defect region"):
        aupro(np.zeros((2, 4, 4)), np.zeros((2, 4, 4), bool))
    with pytest.raises(ValueError, match="fpr_limit"):
        aupro(np.zeros((1, 4, 4)), np.eye(4, dtype=bool)[None], fpr_limit=0.0)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        aupro(np.zeros(4), np.zeros(4, bool))
