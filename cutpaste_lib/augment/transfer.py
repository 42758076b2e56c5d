"""Sending drawn parameters to the device: one pinned, non-blocking copy per dtype."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from cutpaste_lib.augment.draws import map_arrays

_NUMPY_TO_TORCH = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
}


def move_params(params: Any, device: torch.device) -> Any:
    """Every tensor or NumPy array of a (nested) NamedTuple of parameters, as tensors on
    ``device``, sent in one copy per dtype.

    The leaves are packed into one flat buffer per dtype, pinned and sent with
    ``non_blocking=True``: the CPU goes on without waiting for the GPU (a copy from ordinary
    pageable memory would wait for every kernel queued before it). NumPy leaves (the CPU
    samplers' own arrays) are packed straight into the pinned buffer. The results are views
    of those buffers, so unpacking launches nothing.
    """
    device = torch.device(device)
    leaves: list[Tensor | np.ndarray] = []
    map_arrays(params, leaves.append)
    pin = device.type == "cuda"
    moved: dict[int, Tensor] = {}
    dtypes = [_torch_dtype(t) for t in leaves]
    for dtype in dict.fromkeys(dtypes):
        group = [t for t, d in zip(leaves, dtypes) if d == dtype]
        sizes = [t.size if isinstance(t, np.ndarray) else t.numel() for t in group]
        if all(isinstance(t, np.ndarray) for t in group):
            flat = torch.empty(sum(sizes), dtype=dtype, pin_memory=pin)
            np.concatenate([t.ravel() for t in group], out=flat.numpy())
        else:
            flat = torch.cat([torch.as_tensor(t).reshape(-1) for t in group])
            flat = flat.pin_memory() if pin else flat
        flat = flat.to(device, non_blocking=True)
        for t, view in zip(group, flat.split(sizes)):
            moved[id(t)] = view if t.ndim == 1 else view.view(t.shape)
    return map_arrays(params, lambda t: moved[id(t)])


def _torch_dtype(t: Tensor | np.ndarray) -> torch.dtype:
    return t.dtype if isinstance(t, Tensor) else _NUMPY_TO_TORCH[t.dtype]
