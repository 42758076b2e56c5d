"""CutPasteModel: encoder surgery, head shape, ImageNet weights from disk only, freezing switches."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cutpaste_lib.errors import CheckpointError, WeightsUnavailableError
from cutpaste_lib.model import (
    CutPasteModel,
    ModelOutput,
    build_model,
    check_encoder_name,
    pretrained_weights_info,
)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return CutPasteModel(encoder="resnet18", num_classes=3)


def test_forward_returns_named_output_with_pooled_features(resnet18):
    x = torch.randn(4, 3, 32, 32)
    resnet18.eval()
    with torch.no_grad():
        out = resnet18(x)
        assert isinstance(out, ModelOutput)
        assert out.logits.shape == (4, 3)
        assert out.features.shape == (4, 512) and resnet18.feature_dim == 512
        assert out.embedding.shape == (4, 128)
        # encoder(x) is the pooled feature: the same as torchvision's forward up to the avgpool
        enc = resnet18.encoder
        manual = enc.layer4(
            enc.layer3(enc.layer2(enc.layer1(enc.maxpool(enc.relu(enc.bn1(enc.conv1(x)))))))
        )
        torch.testing.assert_close(out.features, manual.mean(dim=(2, 3)))
        # the classifier is linear in the embedding, the embedding is the head of the features
        torch.testing.assert_close(out.logits, resnet18.classifier(out.embedding))
        torch.testing.assert_close(out.embedding, resnet18.head(out.features))


@pytest.mark.parametrize(("name", "dim"), [("efficientnet_b0", 1280), ("mobilenet_v3_small", 1024)])
def test_feature_dim_is_detected_for_other_families(name, dim):
    model = CutPasteModel(encoder=name, num_classes=2, head_depth=1, head_width=16, embedding_dim=8)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert model.feature_dim == dim == out.features.shape[1]
    assert out.logits.shape == (2, 2) and out.embedding.shape == (2, 8)
    # exactly one Linear (the ImageNet classifier) is gone, and the dropout in front of it too
    original = torchvision.models.get_model(name)
    n_linear = sum(isinstance(m, nn.Linear) for m in original.modules())
    assert sum(isinstance(m, nn.Linear) for m in model.encoder.modules()) == n_linear - 1
    assert not any(isinstance(m, nn.Dropout) for m in model.encoder.modules())


def test_head_matches_the_sister_code_layout(resnet18):
    layers = list(resnet18.head)
    assert len(layers) == 8 * 3 + 1
    for i in range(8):
        lin, bn, relu = layers[3 * i : 3 * i + 3]
        assert isinstance(lin, nn.Linear) and lin.bias is None and lin.out_features == 512
        assert isinstance(bn, nn.BatchNorm1d) and isinstance(relu, nn.ReLU)
    assert layers[0].in_features == 512
    assert isinstance(layers[-1], nn.Linear) and layers[-1].out_features == 128
    assert layers[-1].bias is not None
    assert resnet18.classifier.in_features == 128 and resnet18.classifier.out_features == 3


def test_head_depth_zero_is_a_linear_projection():
    model = CutPasteModel(num_classes=2, head_depth=0, embedding_dim=16)
    assert [type(m) for m in model.head] == [nn.Linear]
    assert model.head[0].in_features == 512 and model.head[0].out_features == 16


def test_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="resnet18.*efficientnet_b4"):
        check_encoder_name("resnet19")
    with pytest.raises(ValueError, match="unknown encoder 'resnet19'"):
        CutPasteModel(encoder="resnet19")
    with pytest.raises(ValueError, match="num_classes"):
        CutPasteModel(num_classes=0)
    with pytest.raises(ValueError, match="no final nn.Linear"):
        CutPasteModel(encoder="squeezenet1_0")


def test_config_round_trip_rebuilds_the_same_network(resnet18):
    cfg = resnet18.config()
    assert cfg == {
        "encoder": "resnet18",
        "num_classes": 3,
        "head_depth": 8,
        "head_width": 512,
        "embedding_dim": 128,
        "pretrained": False,
        "weights": None,
    }
    rebuilt = build_model(cfg)
    rebuilt.load_state_dict(resnet18.state_dict())  # strict: identical parameter names and shapes
    resnet18.eval()
    rebuilt.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt(x).logits, resnet18(x).logits)


def test_missing_pretrained_weights_name_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    file_name, folder, url = pretrained_weights_info("resnet18")
    assert file_name == "resnet18-f37072fd.pth" and folder == tmp_path / "hub" / "checkpoints"
    assert url == torchvision.models.get_model_weights("resnet18").DEFAULT.url
    with pytest.raises(WeightsUnavailableError) as info:
        CutPasteModel(pretrained=True)
    msg = str(info.value)
    assert file_name in msg and url in msg and str(folder) in msg
    assert not (tmp_path / "hub").exists()  # nothing downloaded, nothing created
    with pytest.raises(WeightsUnavailableError, match="nothere.pth"):
        CutPasteModel(weights=tmp_path / "nothere.pth")


def _fake_imagenet_resnet18(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.resnet18().state_dict()


def test_pretrained_loads_the_hub_cache_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    file_name, folder, _ = pretrained_weights_info("resnet18")
    folder.mkdir(parents=True)
    state = _fake_imagenet_resnet18(123)
    torch.save(state, folder / file_name)
    model = CutPasteModel(pretrained=True)
    assert model.config()["pretrained"] is True
    torch.testing.assert_close(model.encoder.conv1.weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        model.encoder.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"], rtol=0, atol=0
    )


def test_weights_file_is_loaded_and_checked(tmp_path):
    state = _fake_imagenet_resnet18(7)
    path = tmp_path / "mine.pth"
    torch.save({"state_dict": state}, path)
    model = CutPasteModel(weights=path, num_classes=2)
    assert torch.equal(model.encoder.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
    assert model.config()["weights"] == str(path)
    with pytest.raises(CheckpointError, match="does not fit resnet34"):
        CutPasteModel(encoder="resnet34", weights=path)
    bad = tmp_path / "corrupt.pth"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="corrupt.pth"):
        CutPasteModel(weights=bad)


def test_freeze_encoder_stops_gradients_and_bn_statistics():
    torch.manual_seed(0)
    model = CutPasteModel(num_classes=3, head_depth=1, head_width=32, embedding_dim=8)
    model.freeze_encoder(True).train()
    assert not model.encoder.training and model.head.training
    stats = model.encoder.bn1.running_mean.clone()
    model(torch.randn(4, 3, 32, 32)).logits.sum().backward()
    assert all(p.grad is None for p in model.encoder.parameters())
    assert all(p.grad is not None for p in model.head.parameters())
    assert torch.equal(model.encoder.bn1.running_mean, stats)

    # fine-tuning with frozen BN: convs learn, BN neither updates statistics nor affine parameters
    model.zero_grad(set_to_none=True)
    model.freeze_encoder_batchnorm(True)
    model.freeze_encoder(False).train()
    assert model.encoder.training and not model.encoder.bn1.training and model.head[1].training
    model(torch.randn(4, 3, 32, 32)).logits.sum().backward()
    assert model.encoder.conv1.weight.grad is not None
    assert model.encoder.bn1.weight.grad is None and model.encoder.bn1.bias.grad is None
    assert torch.equal(model.encoder.bn1.running_mean, stats)


def test_eval_mode_restores_every_submodule_mode():
    from cutpaste_lib.model import eval_mode

    model = CutPasteModel(num_classes=3).train()
    model.freeze_encoder_batchnorm()  # transfer protocol: BN layers stay in eval inside a training model
    before = {name: m.training for name, m in model.named_modules()}
    assert not all(before.values()) and any(before.values())
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert {name: m.training for name, m in model.named_modules()} == before
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("modes are restored on errors too")
    assert {name: m.training for name, m in model.named_modules()} == before
