"""The uniform draws behind every sampler, and the array functions their arithmetic runs on.

A sampler declares what it draws as a :class:`Draws`: named pieces in draw order, each a
shape (or another sampler's :class:`Draws`). :func:`draw` takes the pieces from the generator
and hands them to the sampler's body by name, so the number of uniforms a sampler consumes is
computed from the same declaration the body reads: it cannot drift from the body.

With a CPU generator (training draws there, also for a GPU) all pieces come from one
``torch.rand(count)`` sliced in order, and the arithmetic runs in NumPy: a proxy batch needs a
few hundred numbers, and on arrays that small a torch operation costs more in dispatch than
the arithmetic itself, at every training step. The CPU generator fills a tensor number by
number, so one draw equals drawing piece by piece (tested). Elsewhere, or with
``host_arithmetic=False``, each piece is its own ``torch.rand`` and the arithmetic runs in
torch on the generator's device, so a GPU generator never sends anything to the host. Both
give bit-identical float32 results (IEEE-rounded +, -, *, /, sqrt, floor, round-half-even,
stable argsort; the exponential and the trigonometry are torch's in both), which a test checks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

Shape = tuple[int, ...]


class ArrayOps(NamedTuple):
    """The handful of array functions the samplers' arithmetic needs, for NumPy or torch."""

    tensor: Callable[[Any], Tensor]  # working array -> torch tensor
    sqrt: Callable[[Any], Any]
    floor: Callable[[Any], Any]
    exp: Callable[[Any], Any]
    abs_cos_sin_deg: Callable[[Any], tuple[Any, Any]]  # degrees -> (|cos|, |sin|)
    clip: Callable[[Any, Any, Any], Any]  # (x, low or None, high or None)
    minimum: Callable[[Any, Any], Any]
    where: Callable[[Any, Any, Any], Any]
    stack: Callable[[list[Any]], Any]  # columns (B,) -> (B, k)
    concatenate: Callable[[list[Any]], Any]  # along the first axis
    full: Callable[[int, bool, Any], Any]  # (n, flag, an array on the device) -> bool (n,)
    argsort: Callable[[Any], Any]  # stable, along the last axis
    first_true: Callable[[Any], Any]  # bool (B, T) -> index of the first True per row (0: none)
    take: Callable[[Any, Any], Any]  # (x (B, T), that index) -> (B,)
    to_long: Callable[[Any], Any]


def abs_cos_sin_deg(angle: Tensor) -> tuple[Tensor, Tensor]:
    theta = torch.deg2rad(angle)
    return torch.cos(theta).abs(), torch.sin(theta).abs()


TORCH_OPS = ArrayOps(
    tensor=lambda t: t,
    sqrt=torch.sqrt,
    floor=torch.floor,
    exp=torch.exp,
    abs_cos_sin_deg=abs_cos_sin_deg,
    clip=torch.clamp,
    minimum=torch.minimum,
    where=torch.where,
    stack=lambda cols: torch.stack(cols, dim=1),
    concatenate=torch.cat,
    full=lambda n, flag, like: torch.full((n,), flag, device=like.device),
    argsort=lambda x: x.argsort(dim=-1, stable=True),
    first_true=lambda m: m.float().argmax(dim=1, keepdim=True),
    take=lambda x, i: x.gather(1, i).squeeze(1),
    to_long=lambda x: x.long(),
)


def _np_clip(x: np.ndarray, low: Any, high: Any) -> np.ndarray:
    """``np.clip`` as two plain ufuncs (np.clip's own wrapper costs more than the work here)."""
    if low is not None:
        x = np.maximum(x, low)
    return x if high is None else np.minimum(x, high)


NUMPY_OPS = ArrayOps(
    tensor=torch.from_numpy,
    sqrt=np.sqrt,
    floor=np.floor,
    exp=lambda x: torch.exp(torch.from_numpy(x)).numpy(),
    abs_cos_sin_deg=lambda a: tuple(t.numpy() for t in abs_cos_sin_deg(torch.from_numpy(a))),
    clip=_np_clip,
    minimum=np.minimum,
    where=np.where,
    stack=lambda cols: np.stack(cols, axis=1),
    concatenate=np.concatenate,
    full=lambda n, flag, like: np.full(n, flag),
    argsort=lambda x: np.argsort(x, axis=-1, kind="stable"),
    first_true=lambda m: m.argmax(axis=1),
    take=lambda x, i: x[np.arange(len(x)), i],
    to_long=lambda x: x.astype(np.int64),
)


class Draws:
    """What a sampler takes from the generator: named pieces, in draw order.

    A piece is a shape ``tail`` (an array of ``lead + tail`` uniforms, ``lead`` being the
    shape the sampler is drawn for, e.g. ``(batch,)``) or another sampler's :class:`Draws`,
    drawn for the same lead. :meth:`within` lengthens the lead of a nested one (CutPaste
    draws an aspect ratio per image and try). The order of the pieces is the order of the
    numbers in the seed's stream, so it is part of what a seed means.
    """

    def __init__(self, **pieces: Shape | Draws) -> None:
        self.pieces = pieces
        self.inner: Shape = ()

    def within(self, *dims: int) -> Draws:
        """These draws, once for every index of extra trailing lead dimensions ``dims``."""
        nested = Draws(**self.pieces)
        nested.inner = dims
        return nested

    def shapes(self, lead: Shape) -> Iterator[Shape]:
        """The shape of every array drawn, in draw order."""
        lead = lead + self.inner
        for piece in self.pieces.values():
            if isinstance(piece, Draws):
                yield from piece.shapes(lead)
            else:
                yield lead + piece

    def count(self, lead: Shape) -> int:
        """How many uniforms these draws consume for ``lead``."""
        return sum(math.prod(shape) for shape in self.shapes(lead))

    def fill(self, lead: Shape, xp: ArrayOps, arrays: Iterator[Any]) -> Drawn:
        """The pieces, by name, from ``arrays`` (one per shape of :meth:`shapes`, in order)."""
        lead = lead + self.inner
        return Drawn(
            xp,
            {
                name: piece.fill(lead, xp, arrays) if isinstance(piece, Draws) else next(arrays)
                for name, piece in self.pieces.items()
            },
        )


class Drawn:
    """The uniforms of one :class:`Draws`, as attributes named like its pieces (nested ones
    are :class:`Drawn` too), and ``xp``: the array functions to compute with."""

    def __init__(self, xp: ArrayOps, pieces: dict[str, Any]) -> None:
        self.xp = xp
        self.__dict__.update(pieces)

    def __getattr__(self, name: str) -> Any:  # only reached for a name that is not a piece
        raise AttributeError(f"no piece {name!r} was declared in these draws")


def draw(
    generator: torch.Generator, draws: Draws, lead: Shape, *, host_arithmetic: bool = True
) -> Drawn:
    """U[0, 1) float32 numbers for ``draws``, consumed from ``generator`` in declaration order.

    ``host_arithmetic``: with a CPU generator, take them in one draw and compute in NumPy
    (default); False computes in torch, piece by piece, as a GPU generator always does.
    """
    shapes = list(draws.shapes(lead))
    if host_arithmetic and generator.device.type == "cpu":
        xp = NUMPY_OPS
        sizes = [math.prod(shape) for shape in shapes]
        flat = rand((sum(sizes),), generator).numpy()
        ends = itertools.accumulate(sizes)
        arrays = [flat[e - n : e].reshape(s) for e, n, s in zip(ends, sizes, shapes)]
    else:
        xp = TORCH_OPS
        arrays = [rand(shape, generator) for shape in shapes]
    return draws.fill(lead, xp, iter(arrays))


def rand(shape: Shape, generator: torch.Generator) -> Tensor:
    return torch.rand(shape, generator=generator, device=generator.device)


def map_arrays(node: Any, fn: Callable[[Any], Any]) -> Any:
    """``fn`` applied to every tensor or NumPy array of a nest of (named) tuples."""
    if isinstance(node, (Tensor, np.ndarray)):
        return fn(node)
    if isinstance(node, tuple):
        children = (map_arrays(child, fn) for child in node)
        return type(node)(*children) if hasattr(node, "_fields") else tuple(children)
    return node


def sample(
    generator: torch.Generator,
    draws: Draws,
    lead: Shape,
    body: Callable[[Drawn], Any],
    *,
    host_arithmetic: bool,
) -> Any:
    """``body`` on the uniforms of ``draws``, with torch tensors for the arrays it returns:
    the shape of every public sampler."""
    u = draw(generator, draws, lead, host_arithmetic=host_arithmetic)
    return map_arrays(body(u), u.xp.tensor)
