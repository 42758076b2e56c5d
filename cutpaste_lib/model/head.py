"""The MLP projection head between the pooled encoder features and the linear classifier."""

from __future__ import annotations

from torch import nn


def projection_head(
    in_dim: int, *, depth: int = 8, width: int = 512, embedding_dim: int = 128
) -> nn.Sequential:
    """``depth`` x [Linear(width, no bias) -> BatchNorm1d -> ReLU] then Linear(embedding_dim).

    The Linear layers have no bias because the BatchNorm that follows removes any constant.
    ``depth=0`` gives a single linear projection.
    """
    layers: list[nn.Module] = []
    dim = in_dim
    for _ in range(depth):
        layers += [nn.Linear(dim, width, bias=False), nn.BatchNorm1d(width), nn.ReLU(inplace=True)]
        dim = width
    layers.append(nn.Linear(dim, embedding_dim))
    return nn.Sequential(*layers)
