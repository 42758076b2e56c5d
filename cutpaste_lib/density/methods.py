"""The density methods by name, as the command line and the configs spell them."""

from __future__ import annotations

from cutpaste_lib.density.gaussian import COVARIANCE_METHODS, GaussianDensity
from cutpaste_lib.density.kde import GaussianKDE

DENSITY_METHODS: tuple[str, ...] = (*COVARIANCE_METHODS, "kde")


def make_density(method: str = "ledoit_wolf", **kwargs) -> GaussianDensity | GaussianKDE:
    """``"ledoit_wolf" | "ridge" | "empirical"`` -> :class:`GaussianDensity`; ``"kde"`` -> :class:`GaussianKDE`."""
    if method == "kde":
        return GaussianKDE(**kwargs)
    if method in COVARIANCE_METHODS:
        return GaussianDensity(method, **kwargs)
    raise ValueError(f"unknown density {method!r}: choose one of {DENSITY_METHODS}")
