"""The one mixed-precision recipe (cutpaste_lib.precision)."""

import torch

from cutpaste_lib.precision import Precision, compute_precision, feature_precision


def test_cpu_policies_are_fp32_and_keep_the_layout():
    for policy in (compute_precision("cpu"), feature_precision(torch.device("cpu"))):
        assert policy == Precision("cpu", bf16=False, channels_last=False)
        x = torch.randn(2, 3, 5, 5)
        assert policy.prepare(x) is x
        with policy.autocast():
            assert torch.nn.functional.linear(torch.randn(2, 4), torch.randn(3, 4)).dtype == torch.float32


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
