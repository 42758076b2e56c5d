"""Grad-CAM: against pytorch-grad-cam, exact hand-made cases, finite differences, batch == single."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from cutpaste_lib.errors import CutPasteError
from cutpaste_lib.gradcam import (
    GradCAMError,
    LayerNotFoundError,
    anomaly_score_target,
    grad_cam,
    gradcam_maps,
    gradcam_metrics,
    logit_target,
    minmax_per_image,
    parse_target,
    resolve_layer,
)

# ---------------------------------------------------------------- tiny models


class TinyNet(nn.Module):
    """conv-BN-ReLU stem, a stride-2 ``layer4``, average pooling and a 3-way linear classifier."""

    def __init__(self, num_classes: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU())
        self.layer4 = nn.Sequential(
            nn.Conv2d(6, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU()
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc: nn.Module = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.layer4(self.stem(x))).flatten(1))


class Output(NamedTuple):
    logits: torch.Tensor
    features: torch.Tensor
    embedding: torch.Tensor


class TinyCutPaste(nn.Module):
    """Same shape of API as CutPasteModel: ``.encoder`` (fc = Identity) and a ModelOutput-like tuple."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.encoder = TinyNet(width=width)
        self.encoder.fc = nn.Identity()
        self.head = nn.Sequential(
            nn.Linear(width, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 4)
        )
        self.classifier = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> Output:
        features = self.encoder(x)
        embedding = self.head(features)
        return Output(self.classifier(embedding), features, embedding)


def _randomise_bn(model: nn.Module, seed: int = 0) -> None:
    """Running statistics far from (0, 1), so train-mode BatchNorm would give different maps."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


class QuadraticDensity:
    """Hand-made Gaussian score: L2-normalise, then (x - mu)^T P (x - mu) with a fixed SPD P."""

    def __init__(self, dim: int, seed: int = 0, dtype=torch.float64) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mean = F.normalize(torch.randn(dim, generator=g, dtype=dtype), dim=0)
        a = torch.randn(dim, dim, generator=g, dtype=dtype)
        self.precision = a @ a.T / dim + torch.eye(dim, dtype=dtype)

    def score(self, features: torch.Tensor) -> torch.Tensor:
        d = F.normalize(features.to(self.mean.dtype), dim=1) - self.mean
        return torch.einsum("bi,ij,bj->b", d, self.precision, d)


def _no_hooks(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        for m in model.modules()
    )


def _fd_weights(model, x, layer_module, score_fn, eps=1e-6):
    """alpha_k = mean_ij dy/dA_kij by central finite differences on the layer's output (float64)."""
    delta: dict[str, torch.Tensor | None] = {"d": None}

    def hook(module, inputs, output):
        return output if delta["d"] is None else output + delta["d"]

    handle = layer_module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            act = {}
            h2 = layer_module.register_forward_hook(lambda m, i, o: act.setdefault("a", o.clone()))
            model(x)
            h2.remove()
            a = act["a"]
            grad = torch.zeros_like(a)
            for idx in np.ndindex(*a.shape[1:]):
                e = torch.zeros_like(a)
                e[(slice(None), *idx)] = eps
                delta["d"] = e
                up = score_fn(model(x))
                delta["d"] = -e
                down = score_fn(model(x))
                grad[(slice(None), *idx)] = (up - down) / (2 * eps)
            delta["d"] = None
    finally:
        handle.remove()
    weights = grad.mean(dim=(2, 3))
    return weights, torch.relu(torch.einsum("bc,bchw->bhw", weights, a))


# ---------------------------------------------------------------- exact cases


def test_exact_linear_case():
    """y = sum_k w_k mean_ij A_kij, so alpha_k = w_k / (h w) and L = ReLU(sum_k w_k A_k / (h w))."""
    torch.manual_seed(0)
    model = TinyNet().double()
    _randomise_bn(model)
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    # The logit is linear in the pooled layer4 output: the exact answer is known.
    res = grad_cam(model, x, logit_target(2), layer="layer4", upsample=False)
    model.eval()
    with torch.no_grad():
        a = model.layer4(model.stem(x))
    w = model.fc.weight[2].detach()
    hw = a.shape[2] * a.shape[3]
    torch.testing.assert_close(res.weights.double(), w.expand(3, -1) / hw, rtol=1e-5, atol=1e-7)
    expected = torch.relu(torch.einsum("c,bchw->bhw", w, a) / hw)
    torch.testing.assert_close(res.low_res.double(), expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(res.scores.double(), model(x)[:, 2].detach(), rtol=1e-5, atol=1e-6)
    assert res.layer == "layer4"


def test_upsampling_is_bilinear_to_input_size_and_non_negative():
    torch.manual_seed(1)
    model = TinyNet()
    x = torch.randn(2, 3, 20, 12)
    res = grad_cam(model, x, logit_target(0), layer="layer4")
    assert res.maps.shape == (2, 20, 12) and res.low_res.shape == (2, 10, 6)
    assert bool((res.maps >= 0).all()) and bool((res.low_res >= 0).all())
    ref = F.interpolate(res.low_res[:, None], size=(20, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(res.maps, ref[:, 0])


# ---------------------------------------------------------------- pytorch-grad-cam reference


@pytest.mark.parametrize(
    ("net", "layer", "size"),
    [("tiny", "layer4", 32), ("resnet18", "layer3", 64), ("resnet18", "layer4", 96)],
)
def test_logit_target_matches_pytorch_grad_cam(net, layer, size):
    pgc = pytest.importorskip("pytorch_grad_cam", reason="grad-cam (dev dependency) not installed")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(4)
    model = TinyNet() if net == "tiny" else resnet18(num_classes=3)
    _randomise_bn(model)
    x = torch.randn(3, 3, size, size)
    ours = grad_cam(model, x, logit_target(1), layer=layer)
    with pgc.GradCAM(model=model, target_layers=[model.get_submodule(layer)]) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 3)
    # They rescale every map to [0, 1] (and resize with cv2, the same half-pixel bilinear rule).
    assert ((ours.low_res.flatten(1) > 0).sum(1) >= 3).all(), (
        "degenerate case: (nearly) all-zero map"
    )
    np.testing.assert_allclose(minmax_per_image(ours.maps).numpy(), theirs, atol=2e-4)


# ---------------------------------------------------------------- anomaly-score target


def test_anomaly_score_target_matches_finite_differences():
    torch.manual_seed(3)
    model = TinyCutPaste(width=4).double()
    _randomise_bn(model)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    density = QuadraticDensity(dim=4)
    target = anomaly_score_target(density)
    res = grad_cam(model, x, target, layer="layer4", upsample=False)
    assert res.layer == "encoder.layer4"
    model.eval()
    w_fd, cam_fd = _fd_weights(model, x, model.encoder.layer4, lambda o: density.score(o.features))
    torch.testing.assert_close(res.weights.double(), w_fd, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(res.low_res.double(), cam_fd, rtol=1e-4, atol=1e-8)
    with torch.no_grad():
        torch.testing.assert_close(
            res.scores.double(), density.score(model(x).features), rtol=1e-6, atol=0
        )


def test_anomaly_score_target_flows_through_the_l2_normalisation():
    """Scaling the pooled features does not change a score computed on L2-normalised features, so
    the gradient must be orthogonal to the features: sum_k alpha_k * mean_ij A_k = 0 when the
    layer is the one just before pooling (features = mean_ij A)."""
    torch.manual_seed(4)
    model = TinyCutPaste(width=6).double()
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    res = grad_cam(model, x, anomaly_score_target(QuadraticDensity(dim=6)), layer="layer4")
    with torch.no_grad():
        model.eval()
        feats = model(x).features
    w = res.weights.double()
    radial = (w * feats).sum(1).abs()
    assert (radial <= 1e-9 * w.norm(dim=1) * feats.norm(dim=1)).all()
    assert (w.norm(dim=1) > 0).all()


def test_anomaly_score_with_the_library_density_matches_finite_differences():
    density_mod = pytest.importorskip(
        "cutpaste_lib.density", reason="cutpaste_lib.density not landed yet"
    )
    torch.manual_seed(5)
    model = TinyCutPaste(width=4).double()
    _randomise_bn(model)
    model.eval()
    with torch.no_grad():
        train_feats = model(torch.randn(40, 3, 8, 8, dtype=torch.float64)).features
    density = density_mod.GaussianDensity().fit_clean_features(train_feats)
    target = anomaly_score_target(density)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    res = grad_cam(model, x, target, layer="layer4", upsample=False)
    w_fd, cam_fd = _fd_weights(model, x, model.encoder.layer4, lambda o: density.score(o.features))
    torch.testing.assert_close(res.weights.double(), w_fd, rtol=1e-3, atol=1e-7)
    torch.testing.assert_close(res.low_res.double(), cam_fd, rtol=1e-3, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(
            res.scores.double(), density.score(model(x).features).double(), rtol=1e-5, atol=0
        )


# ---------------------------------------------------------------- batches, modes, hooks


@pytest.mark.parametrize("kind", ["logit", "score"])
def test_batch_equals_single_and_mode_is_restored(kind):
    torch.manual_seed(6)
    model = TinyCutPaste(width=6)
    _randomise_bn(model)
    model.train()  # Grad-CAM must switch to eval (BatchNorm couples images in train mode) ...
    target = (
        logit_target(1)
        if kind == "logit"
        else anomaly_score_target(QuadraticDensity(6, dtype=torch.float32))
    )
    x = torch.randn(4, 3, 16, 16)
    batch = grad_cam(model, x, target, layer="layer4")
    for i in range(4):
        single = grad_cam(model, x[i : i + 1], target, layer="layer4")
        torch.testing.assert_close(batch.maps[i : i + 1], single.maps, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(batch.scores[i : i + 1], single.scores, rtol=1e-4, atol=1e-6)
    # ... and give the caller back the mode it had, module by module.
    assert all(m.training for m in model.modules())


def test_hooks_removed_after_success_and_after_errors():
    model = TinyCutPaste()
    x = torch.randn(2, 3, 16, 16)
    grad_cam(model, x, logit_target(0))
    assert _no_hooks(model)

    def broken(output):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        grad_cam(model, x, broken)
    assert _no_hooks(model)
    with pytest.raises(GradCAMError, match="one scalar per image"):
        grad_cam(model, x, lambda out: out.logits)
    assert _no_hooks(model)


def test_parameters_untouched_and_frozen_models_work():
    model = TinyCutPaste()
    for p in model.parameters():
        p.requires_grad_(False)
    before = [p.clone() for p in model.parameters()]
    res = grad_cam(model, torch.randn(2, 3, 16, 16), logit_target(2))
    assert res.low_res.abs().sum() > 0 or res.weights.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_works_under_inference_mode_and_no_grad():
    model = TinyCutPaste()
    x = torch.randn(2, 3, 16, 16)
    ref = grad_cam(model, x, logit_target(0))
    with torch.inference_mode():
        inside = grad_cam(model, x, logit_target(0))
    torch.testing.assert_close(ref.maps, inside.maps)


def test_activation_is_taken_before_a_following_in_place_relu():
    """resnet's ``bn1`` is followed by ReLU(inplace=True); A must be bn1's (signed) output."""
    torch.manual_seed(7)
    model = resnet18(num_classes=3)
    _randomise_bn(model)
    x = torch.randn(2, 3, 32, 32)
    ours = grad_cam(model, x, logit_target(0), layer="bn1", upsample=False)
    # Reference: the same network with an out-of-place ReLU, gradient kept on bn1's output.
    model.relu = nn.ReLU(inplace=False)
    model.eval()
    saved = {}

    def keep(module, inputs, output):
        output.retain_grad()
        saved["a"] = output

    handle = model.bn1.register_forward_hook(keep)
    model(x)[:, 0].sum().backward()
    handle.remove()
    a, g = saved["a"].detach(), saved["a"].grad
    assert (a < 0).any()
    expected = torch.relu(torch.einsum("bc,bchw->bhw", g.mean(dim=(2, 3)), a))
    torch.testing.assert_close(ours.low_res, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- errors


def test_bad_layer_name_lists_available_layers():
    model = TinyCutPaste()
    with pytest.raises(LayerNotFoundError) as info:
        grad_cam(model, torch.randn(1, 3, 16, 16), logit_target(0), layer="layer5")
    msg = str(info.value)
    assert "'layer5'" in msg and "available layers" in msg and "encoder.layer4" in msg
    assert isinstance(info.value, CutPasteError) and isinstance(info.value, ValueError)
    assert _no_hooks(model)


def test_layer_lookup_falls_back_to_the_encoder():
    model = TinyCutPaste()
    assert resolve_layer(model, "layer4") == ("encoder.layer4", model.encoder.layer4)
    assert resolve_layer(model, "encoder.stem.0")[1] is model.encoder.stem[0]
    assert resolve_layer(model, "head.1")[1] is model.head[1]


def test_default_layer_is_the_encoders_last_stage():
    from torchvision.models import efficientnet_b0

    from cutpaste_lib.gradcam import default_layer

    assert default_layer(TinyCutPaste()) == "layer4"
    effnet = efficientnet_b0()  # the paper's Table 3 family: no layer4, stages in .features
    assert default_layer(effnet) == "features.8"
    assert resolve_layer(effnet, default_layer(effnet))[1] is effnet.features[8]
    with pytest.raises(LayerNotFoundError, match="no default Grad-CAM layer"):
        default_layer(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()))


def test_layers_that_cannot_be_explained_give_clear_errors():
    model = TinyCutPaste()
    x = torch.randn(2, 3, 16, 16)
    with pytest.raises(GradCAMError, match=r"\(B, C, h, w\)"):
        grad_cam(model, x, logit_target(0), layer="head.0")
    with pytest.raises(GradCAMError, match="does not depend on layer"):
        grad_cam(model, x, lambda out: torch.ones(2, requires_grad=True), layer="encoder.stem")
    with pytest.raises(GradCAMError, match="logits of shape"):
        grad_cam(model, x, logit_target(7))


def test_parse_target():
    out = Output(torch.arange(6.0).view(2, 3), torch.zeros(2, 4), torch.zeros(2, 4))
    assert torch.equal(parse_target("logit:2")(out), torch.tensor([2.0, 5.0]))
    assert torch.equal(
        parse_target(" Logit:0 ")(torch.arange(6.0).view(2, 3)), torch.tensor([0.0, 3.0])
    )
    for bad in ("logit:", "logit:-1", "logit:x", "logits", "mahalanobis"):
        with pytest.raises(ValueError, match="'distance' or 'logit:K'"):
            parse_target(bad)
    for needs_density in ("score", "distance"):
        with pytest.raises(GradCAMError, match="GaussianDensity"):
            parse_target(needs_density)


def test_distance_target_is_the_square_root_and_rescales_each_map_by_its_chain_rule_factor():
    """d sqrt(s) = ds / (2 sqrt(s)): the distance target's weights and maps are the score target's
    divided by 2 sqrt(s) image by image, so the min-max normalised maps are identical."""
    torch.manual_seed(4)
    model = TinyCutPaste(width=4).double()
    _randomise_bn(model)
    x = torch.randn(3, 3, 8, 8, dtype=torch.float64)
    density = QuadraticDensity(dim=4)
    squared = grad_cam(model, x, parse_target("score", density), layer="layer4", upsample=False)
    root = grad_cam(model, x, parse_target("distance", density), layer="layer4", upsample=False)
    torch.testing.assert_close(root.scores, squared.scores.sqrt())
    factor = (2 * squared.scores.sqrt()).view(-1, 1)
    torch.testing.assert_close(root.weights, squared.weights / factor)
    torch.testing.assert_close(minmax_per_image(root.low_res), minmax_per_image(squared.low_res))


def test_non_differentiable_density_is_refused():
    class Detached(QuadraticDensity):
        def score(self, features):
            return super().score(features).detach()

    with pytest.raises(GradCAMError, match="differentiable"):
        grad_cam(TinyCutPaste(), torch.randn(2, 3, 16, 16), anomaly_score_target(Detached(8)))


# ---------------------------------------------------------------- metrics and scaling


def test_minmax_per_image():
    maps = torch.tensor([[[1.0, 3.0], [2.0, 5.0]], [[0.0, 0.0], [0.0, 0.0]]])
    out = minmax_per_image(maps)
    torch.testing.assert_close(out[0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]), atol=1e-6, rtol=0)
    assert torch.equal(out[1], torch.zeros(2, 2))


def test_gradcam_metrics_agree_with_sklearn():
    pytest.importorskip("cutpaste_lib.metrics", reason="cutpaste_lib.metrics not landed yet")
    from sklearn.metrics import roc_auc_score

    g = torch.Generator().manual_seed(8)
    masks = torch.zeros(4, 1, 16, 16, dtype=torch.bool)
    masks[1, 0, 2:6, 3:9] = True
    masks[3, 0, 10:14, 10:12] = True
    maps = torch.rand(4, 1, 16, 16, generator=g) + 0.5 * masks
    m = gradcam_metrics(maps, masks)
    assert m["pixel_auroc"] == pytest.approx(
        roc_auc_score(masks.flatten().numpy(), maps.flatten().numpy())
    )
    assert 0.0 < m["aupro"] < 1.0
    perfect = gradcam_metrics(masks.float()[:, 0], masks[:, 0])
    assert perfect == {"pixel_auroc": 1.0, "aupro": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="differ in shape"):
        gradcam_metrics(maps[:, :, :8], masks)


# ---------------------------------------------------------------- overlays


def test_overlay_blends_the_colour_map_onto_the_image():
    from matplotlib import colormaps

    from cutpaste_lib.viz.gradcam import overlay_image

    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    image[0] = 255  # pure red
    cam = torch.zeros(4, 4)
    cam[1, 2] = 2.0
    cam[3, 3] = 4.0  # above vmax: saturates
    out = overlay_image(image, cam, vmax=2.0, alpha=0.25, cmap="viridis")
    cmap = colormaps["viridis"]
    red = np.array([1.0, 0.0, 0.0])
    np.testing.assert_allclose(out[0, 0], 0.75 * red + 0.25 * np.array(cmap(0.0)[:3]), atol=1e-6)
    np.testing.assert_allclose(out[1, 2], 0.75 * red + 0.25 * np.array(cmap(1.0)[:3]), atol=1e-6)
    np.testing.assert_allclose(out[3, 3], out[1, 2], atol=1e-6)
    # a float image in [0, 1] and its uint8 version give the same overlay
    np.testing.assert_allclose(
        overlay_image(image.float() / 255, cam, vmax=2.0, alpha=0.25, cmap="viridis"), out
    )


def test_overlay_refuses_a_still_normalised_image():
    from cutpaste_lib.viz.gradcam import overlay_image

    normalised = (torch.rand(3, 8, 8) - 0.485) / 0.229
    with pytest.raises(ValueError, match="denormalize"):
        overlay_image(normalised, torch.rand(8, 8))
    with pytest.raises(ValueError, match="does not match"):
        overlay_image(torch.rand(3, 8, 8), torch.rand(4, 4))


def test_gallery_has_one_column_per_method_and_shared_scales():
    from cutpaste_lib.viz.gradcam import gradcam_gallery

    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8)
    masks = torch.zeros(3, 1, 8, 8, dtype=torch.bool)
    masks[2, 0, 2:5, 2:5] = True
    maps = {"logit": torch.rand(3, 8, 8), "score": torch.rand(3, 8, 8) * 10}
    fig = gradcam_gallery(
        images, maps, masks=masks, defects=["good", "good", "hole"], indices=[0, 2]
    )
    image_axes = [ax for ax in fig.axes if ax.get_images()]
    assert len(image_axes) == 2 * 3
    assert "hole #2" in image_axes[3].get_title() and "score" in image_axes[5].get_title()
    # one scale per column: the panel of image 2 is drawn relative to the column's maximum
    from cutpaste_lib.viz.gradcam import overlay_image

    expected = overlay_image(images[2], maps["score"][2], vmax=float(maps["score"].max()))
    np.testing.assert_allclose(image_axes[5].get_images()[0].get_array(), expected, atol=1e-6)
    import matplotlib.pyplot as plt

    plt.close("all")


# ---------------------------------------------------------------- with the library's model and data


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """A 3-way ResNet-18 trained for 2 steps at 64 px (layer4 = 2x2), its checkpoint, the test
    cache, the Gaussian fitted on clean train features and the anomaly-score Grad-CAM (batches of 5)."""
    pytest.importorskip("cutpaste_lib.train", reason="cutpaste_lib.train not landed yet")
    from types import SimpleNamespace

    from cutpaste_lib.data import load_cache
    from cutpaste_lib.density import GaussianDensity
    from cutpaste_lib.evaluate import embed
    from cutpaste_lib.train import TrainConfig, train

    out = tmp_path_factory.mktemp("gradcam_run")
    config = TrainConfig(
        steps=2,
        batch_size=2,
        image_size=64,
        head_depth=1,
        head_width=32,
        embedding_dim=16,
        device="cpu",
        log_every=1,
        checkpoint_every=2,
    )
    cache = load_cache(synthetic_root, "synth_grid", "train", 64)
    result = train(config, cache, out_dir=out, progress=False)
    model = result.model.eval()
    density = GaussianDensity().fit(embed(model, cache))
    test = load_cache(synthetic_root, "synth_grid", "test", 64)
    maps = gradcam_maps(model, test, anomaly_score_target(density), batch_size=5)
    return SimpleNamespace(
        model=model, checkpoint=result.checkpoint, density=density, test=test, result=maps
    )


def test_gradcam_maps_on_a_cutpaste_model_batches_consistently(trained):
    from cutpaste_lib.data import normalize

    model, test, a = trained.model, trained.test, trained.result
    b = gradcam_maps(model, test.images, anomaly_score_target(trained.density), batch_size=64)
    assert a.layer == "encoder.layer4" and a.maps.shape == (len(test), 64, 64)
    assert a.low_res.shape[-2:] == (2, 2)
    torch.testing.assert_close(a.maps, b.maps, rtol=1e-4, atol=1e-6)
    # the target is the density's own score of the model's pooled features
    with torch.no_grad():
        expected = trained.density.score(model(normalize(test.images)).features)
    torch.testing.assert_close(a.scores.double(), expected.double(), rtol=1e-4, atol=1e-6)
    assert not any(m._forward_hooks for m in model.modules())
    logit = gradcam_maps(model, test.images[:3], logit_target(2), layer="layer3")
    assert logit.layer == "encoder.layer3" and logit.low_res.shape == (3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(logit.scores, model(normalize(test.images[:3])).logits[:, 2])


def test_logit_target_on_a_cutpaste_model_matches_pytorch_grad_cam(trained):
    pgc = pytest.importorskip("pytorch_grad_cam", reason="grad-cam (dev dependency) not installed")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from cutpaste_lib.data import normalize

    class Logits(nn.Module):  # pytorch_grad_cam wants a model that returns the logits tensor
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).logits

    x = normalize(trained.test.images[:6])
    ours = grad_cam(trained.model, x, logit_target(1), layer="layer3")
    with pgc.GradCAM(
        model=Logits(trained.model), target_layers=[trained.model.encoder.layer3]
    ) as cam:
        theirs = cam(input_tensor=x, targets=[ClassifierOutputTarget(1)] * 6)
    assert int((ours.low_res.flatten(1) > 0).any(1).sum()) >= 3, "degenerate: all-zero maps"
    np.testing.assert_allclose(minmax_per_image(ours.maps).numpy(), theirs, atol=2e-4)


def _cli(argv, capsys):
    from cutpaste_lib.cli import main

    rc = main(argv)
    return rc, capsys.readouterr()


def test_cli_writes_overlays_and_metrics_that_match_the_library(
    synthetic_root, trained, tmp_path, capsys
):
    import json

    ckpt, test = trained.checkpoint, trained.test
    out = tmp_path / "gc"
    rc, cap = _cli(
        [
            "gradcam",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(synthetic_root),
            "--category",
            "synth_grid",
            "--out",
            str(out),
            "--device",
            "cpu",
        ],
        capsys,
    )
    assert rc == 0, cap.err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["layer"] == "encoder.layer4" and metrics["target"] == "score"
    assert metrics["layer_resolution"] == [2, 2] and metrics["image_size"] == 64
    for key in ("pixel_auroc", "aupro", "image_auroc"):
        assert 0.0 <= metrics[key] <= 1.0
    ref = gradcam_metrics(trained.result.maps, test.masks)
    assert metrics["pixel_auroc"] == pytest.approx(ref["pixel_auroc"], abs=1e-4)
    assert metrics["aupro"] == pytest.approx(ref["aupro"], abs=1e-4)
    # the image AUROC of the explained scores (the anomaly score, higher = more anomalous)
    from cutpaste_lib.metrics import auroc

    assert metrics["image_auroc"] == pytest.approx(
        auroc(trained.result.scores, test.labels), abs=1e-6
    )
    assert (out / "overlays.png").stat().st_size > 0
    assert sorted(p.stem for p in (out / "overlays").glob("*.png")) == sorted(set(test.defects))
    # --layer and --target take effect: layer3 (4x4 at 64 px) explaining the CutPaste logit
    out3 = tmp_path / "gc3"
    rc, cap = _cli(
        [
            "gradcam",
            "--checkpoint",
            str(ckpt),
            "--data",
            str(synthetic_root),
            "--category",
            "synth_grid",
            "--out",
            str(out3),
            "--device",
            "cpu",
            "--layer",
            "layer3",
            "--target",
            "logit:1",
        ],
        capsys,
    )
    assert rc == 0, cap.err
    m3 = json.loads((out3 / "metrics.json").read_text())
    assert m3["layer"] == "encoder.layer3" and m3["layer_resolution"] == [4, 4]
    ref3 = gradcam_metrics(
        gradcam_maps(trained.model, test, logit_target(1), layer="layer3", batch_size=5).maps,
        test.masks,
    )
    assert m3["pixel_auroc"] == pytest.approx(ref3["pixel_auroc"], abs=1e-4)


def test_cli_clear_errors_write_nothing(synthetic_root, trained, tmp_path, capsys):
    base = [
        "gradcam",
        "--checkpoint",
        str(trained.checkpoint),
        "--data",
        str(synthetic_root),
        "--category",
        "synth_grid",
        "--device",
        "cpu",
    ]
    rc, cap = _cli([*base, "--out", str(tmp_path / "bad"), "--layer", "layer9"], capsys)
    assert rc == 2 and "layer 'layer9' not found" in cap.err and "encoder.layer4" in cap.err
    rc, cap = _cli([*base, "--out", str(tmp_path / "bad"), "--target", "logit:3"], capsys)
    assert rc == 2 and "3 classes" in cap.err
    rc, cap = _cli([*base[:6], "synth_nothing", "--out", str(tmp_path / "bad")], capsys)
    assert rc == 2 and "synth_nothing" in cap.err
    assert not (tmp_path / "bad").exists()
    with pytest.raises(SystemExit) as info:
        _cli([*base, "--target", "logit:one"], capsys)
    assert info.value.code == 2 and "--target" in capsys.readouterr().err


@pytest.mark.gpu
def test_cuda_bf16_autocast_matches_cpu():
    """CUDA runs the forward pass in bf16 autocast with channels_last; maps stay close to fp32 CPU."""
    torch.manual_seed(9)
    model = TinyCutPaste(width=8)
    _randomise_bn(model)
    x = torch.randn(4, 3, 32, 32)
    density = QuadraticDensity(8, dtype=torch.float32)
    cpu = grad_cam(model, x, anomaly_score_target(density), layer="layer4")
    density.mean, density.precision = density.mean.cuda(), density.precision.cuda()
    model = model.cuda()
    xc = x.cuda().contiguous(memory_format=torch.channels_last)
    exact = grad_cam(model, xc, anomaly_score_target(density), layer="layer4", amp=False)
    torch.testing.assert_close(exact.maps.cpu(), cpu.maps, rtol=1e-3, atol=1e-5)
    bf16 = grad_cam(model, xc, anomaly_score_target(density), layer="layer4")
    assert bf16.maps.dtype == torch.float32 and bf16.maps.device.type == "cuda"
    # bf16 has ~3 significant digits: compare the maps' shapes, not their last bits
    corr = torch.corrcoef(torch.stack([bf16.maps.cpu().flatten(), cpu.maps.flatten()]))[0, 1]
    assert corr > 0.98
    torch.testing.assert_close(bf16.scores.cpu(), cpu.scores, rtol=5e-2, atol=1e-3)
