"""The one mixed-precision recipe (cutpaste_lib.precision)."""

import pytest
import torch

from cutpaste_lib.precision import (
    Precision,
    compute_precision,
    cpu_bf16_supported,
    feature_precision,
)


def test_cpu_policies_are_fp32_and_keep_the_layout(monkeypatch):
    monkeypatch.setenv("CUTPASTE_CPU_BF16", "0")
    for policy in (compute_precision("cpu"), feature_precision(torch.device("cpu"))):
        assert policy == Precision("cpu", bf16=False, channels_last=False)
        x = torch.randn(2, 3, 5, 5)
        assert policy.prepare(x) is x
        with policy.autocast():
            assert (
                torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype
                == torch.float32
            )


def test_bf16_policy_autocasts_and_channels_last_reorders_memory():
    policy = Precision("cpu", bf16=True, channels_last=True)
    x = torch.randn(2, 3, 5, 5)
    y = policy.prepare(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous(
        memory_format=torch.channels_last
    )
    assert torch.equal(x, y)  # layout only, same values
    assert policy.prepare(torch.randn(4, 5)).is_contiguous()  # not a batch of images: unchanged
    assert policy.module_format() == torch.channels_last
    with policy.autocast():
        out = torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4))
    assert out.dtype == torch.bfloat16


def test_density_features_are_never_bf16_even_on_cuda():
    # constructing the policy needs no GPU: it only reads the device type
    assert feature_precision("cuda") == Precision("cuda", bf16=False, channels_last=True)
    assert compute_precision("cuda:0") == Precision("cuda", bf16=True, channels_last=True)


def test_cpu_bf16_follows_the_override_and_else_the_hardware(monkeypatch):
    monkeypatch.setenv("CUTPASTE_CPU_BF16", "1")
    assert compute_precision("cpu") == Precision("cpu", bf16=True, channels_last=True)
    assert feature_precision("cpu") == Precision("cpu", bf16=False, channels_last=False)
    monkeypatch.setenv("CUTPASTE_CPU_BF16", "maybe")
    with pytest.raises(ValueError, match="CUTPASTE_CPU_BF16"):
        cpu_bf16_supported()
    monkeypatch.delenv("CUTPASTE_CPU_BF16")
    native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert cpu_bf16_supported() == native
    assert compute_precision("cpu").bf16 == native


def test_cpu_bf16_and_fp32_rank_images_alike():
    """The bf16 CPU path must not change what the model says: on a fixed random ResNet-18, the
    anomaly-relevant outputs (pooled features -> logits) of 48 images under bf16 autocast and in
    fp32 rank the images the same way (Spearman >= 0.99 on every logit)."""
    from scipy.stats import spearmanr

    from cutpaste_lib.model import CutPasteModel

    torch.manual_seed(0)
    model = CutPasteModel(encoder="resnet18", num_classes=3, head_depth=2).eval()
    x = torch.rand(48, 3, 64, 64)
    with torch.inference_mode():
        fp32 = model(x).logits.float()
        bf16_policy = Precision("cpu", bf16=True, channels_last=True)
        with bf16_policy.autocast():
            bf16 = model.to(memory_format=bf16_policy.module_format())(bf16_policy.prepare(x))
        bf16 = bf16.logits.float()
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)  # it did run in bf16
    for k in range(3):
        assert spearmanr(fp32[:, k], bf16[:, k]).statistic >= 0.99
