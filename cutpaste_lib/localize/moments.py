"""Mean and Ledoit–Wolf covariance of more feature vectors than fit in memory, fed in chunks."""

from __future__ import annotations

import torch
from torch import Tensor

from cutpaste_lib.density import shrink_ledoit_wolf


class StreamingMoments:
    """Mean and Ledoit-Wolf covariance of many feature vectors, fed in chunks (float64).

    Accumulates, for ``y = x - c`` with ``c`` the first chunk's mean (a shift that keeps the sums
    small, so nothing cancels catastrophically): ``n``, ``sum y``, ``sum y y^T``, ``sum |y|^2``,
    ``sum |y|^4`` and ``sum |y|^2 y``. The fourth moment about the final mean ``m``, which
    Ledoit-Wolf needs, follows exactly:
    ``sum |y - m|^4 = A - 4 B.m + 4 m^T C m + 2 |m|^2 q - 3 n |m|^4``; the shrinkage itself is
    :func:`cutpaste_lib.density.shrink_ledoit_wolf`, the formula :func:`~cutpaste_lib.density.ledoit_wolf` uses.
    """

    def __init__(self) -> None:
        self.n = 0
        self.shift: Tensor | None = None

    def update(self, x: Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double()
        if self.shift is None:
            d = x.shape[-1]
            self.shift = x.mean(0)
            z = lambda *s: torch.zeros(*s, dtype=torch.float64, device=x.device)  # noqa: E731
            self.s, self.C, self.B = z(d), z(d, d), z(d)
            self.q, self.A = z(()), z(())
        self._add(x - self.shift)

    def __add__(self, other: StreamingMoments) -> StreamingMoments:
        """Moments of the union of both streams (re-expressed about ``self``'s shift)."""
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        out = StreamingMoments()
        out.shift, out.n = self.shift, self.n
        out.s, out.C, out.B, out.q, out.A = (
            v.clone() for v in (self.s, self.C, self.B, self.q, self.A)
        )
        # other's sums are about other.shift; shifting them by t = other.shift - self.shift is
        # exact algebra but needs the data, so re-express through the same moment identities.
        t = other.shift - self.shift
        n, s, C, B, q, A = other.n, other.s, other.C, other.B, other.q, other.A
        tt = t @ t
        st = s @ t
        out.n += n
        out.s += s + n * t
        out.C += C + torch.outer(s, t) + torch.outer(t, s) + n * torch.outer(t, t)
        q2 = q + 2 * st + n * tt  # sum |y + t|^2
        # sum |y+t|^4 = sum (|y|^2 + 2 y.t + |t|^2)^2
        out.A += A + 4 * (t @ C @ t) + n * tt * tt + 4 * (B @ t) + 2 * tt * q + 4 * tt * st
        # sum |y+t|^2 (y+t) = B + 2 C t + tt s + t (q + 2 s.t + n tt)
        out.B += B + 2 * (C @ t) + tt * s + t * q2
        out.q += q2
        return out

    def _add(self, y: Tensor) -> None:
        r = (y * y).sum(-1)
        self.n += y.shape[0]
        self.s += y.sum(0)
        self.C += y.T @ y
        self.q += r.sum()
        self.A += (r * r).sum()
        self.B += r @ y

    def finalize(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(mean (D,), Ledoit-Wolf covariance (D, D), shrinkage ())``, as ``density.ledoit_wolf``."""
        if self.n < 2:
            raise ValueError(f"need at least 2 training patches to fit a Gaussian, got {self.n}")
        n = self.n
        m = self.s / n
        cov = self.C / n - torch.outer(m, m)
        mm = m @ m
        fourth = (
            self.A - 4 * (self.B @ m) + 4 * (m @ self.C @ m) + 2 * mm * self.q - 3 * n * mm * mm
        )
        shrunk, shrinkage = shrink_ledoit_wolf(cov, n=n, fourth_moment=fourth)
        return self.shift + m, shrunk, shrinkage
