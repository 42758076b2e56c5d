"""The grid: its settings, its cells (jobs) and the shards that split it across machines."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cutpaste_lib import paper
from cutpaste_lib.augment import VARIANTS

TABLE1_VARIANTS = paper.TABLE1_VARIANTS
MODES: tuple[str, ...] = ("image", "patch")

VARIANT_TITLES = {"cutpaste": "CutPaste", "scar": "Scar", "union": "Union", "3way": "3-way"}
"""How tables and figures name each variant."""

INT_SETTINGS = ("steps", "batch_size", "image_size", "patch_size", "dense_patch", "dense_stride")
"""The :class:`GridSettings` fields that are positive integers (also results CSV columns)."""


@dataclass(frozen=True)
class GridSettings:
    """Training/evaluation settings shared by every job of a grid (defaults: the paper, A.1 and A.5).

    ``batch_size`` counts original images per step (the paper's 64 binary / 96 3-way classifier
    inputs are 32 originals with their augmented views). ``patch_size`` is the training crop of
    patch models; ``dense_patch``/``dense_stride`` the dense extraction at test time (A.5).
    """

    steps: int = 65_536
    batch_size: int = 32
    image_size: int = 256
    patch_size: int = 64
    dense_patch: int = 32
    dense_stride: int = 4
    encoder: str = "resnet18"
    pretrained: bool = False
    weights: str | None = None
    compile: bool = False  # torch.compile + CUDA graphs on a GPU (speed only, same protocol)

    @classmethod
    def paper(cls) -> GridSettings:
        """The paper's Table 1/2 settings (ResNet-18 from scratch, 65,536 steps, 256 px)."""
        return cls()

    @classmethod
    def demo(cls) -> GridSettings:
        """Small CPU settings for a quick look at the grid's machinery on the synthetic data: 30
        steps, batch 8, 64 px. The grid trains with the paper's SGD and 8-layer head, so these
        models barely learn; the laptop protocol (``config.LAPTOP``, ``cutpaste demo``) is the one
        that does on a CPU."""
        return cls(
            steps=30, batch_size=8, image_size=64, patch_size=32, dense_patch=16, dense_stride=4
        )

    def __post_init__(self) -> None:
        for name in INT_SETTINGS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GridSettings.{name} must be a positive integer, got {value!r}")
        if self.patch_size > self.image_size:
            raise ValueError(
                f"GridSettings.patch_size ({self.patch_size}) exceeds image_size ({self.image_size})"
            )
        if self.dense_patch > self.image_size:
            raise ValueError(
                f"GridSettings.dense_patch ({self.dense_patch}) exceeds image_size ({self.image_size})"
            )


@dataclass(frozen=True, order=True)
class Job:
    """One grid cell. ``mode="patch"`` is a patch model (localization, Table 2)."""

    category: str
    variant: str
    seed: int
    mode: str = "image"

    @property
    def key(self) -> str:
        return f"{self.category}/{self.variant}/{self.mode}/seed{self.seed}"

    @property
    def rel_dir(self) -> Path:
        """Folder of the job's checkpoint and scores, relative to the output folder."""
        return Path("jobs") / self.category / f"{self.variant}-{self.mode}" / f"seed{self.seed}"


@dataclass(frozen=True)
class JobSpec:
    """Everything a job function needs (picklable: sent to worker processes)."""

    job: Job
    data_root: Path
    job_dir: Path
    settings: GridSettings
    device: str


JobFn = Callable[[JobSpec], dict]


def make_grid(
    categories: Sequence[str],
    variants: Sequence[str],
    seeds: Iterable[int],
    *,
    patch_variants: Sequence[str] = (),
) -> list[Job]:
    """Image jobs for categories x variants x seeds, plus patch jobs for ``patch_variants``.

    The order is the paper's (categories as given, then variants, then seeds). Duplicates in any
    argument are an error rather than silently merged.
    """
    seeds = list(seeds)
    for name, items in (
        ("categories", categories),
        ("variants", variants),
        ("seeds", seeds),
        ("patch_variants", patch_variants),
    ):
        if len(set(items)) != len(items):
            raise ValueError(f"duplicate entries in {name}: {list(items)}")
    for s in seeds:
        if not isinstance(s, int) or isinstance(s, bool) or s < 0:
            raise ValueError(f"seeds must be integers >= 0, got {s!r}")
    for v in list(variants) + list(patch_variants):
        if v not in VARIANTS:
            raise ValueError(f"unknown variant {v!r}: valid are {', '.join(VARIANTS)}")
    jobs = [Job(c, v, s) for c in categories for v in variants for s in seeds]
    jobs += [Job(c, v, s, "patch") for c in categories for v in patch_variants for s in seeds]
    return jobs


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"i/n"`` (0-based ``i``, like ``SLURM_ARRAY_TASK_ID``) into ``(i, n)``."""
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"bad shard {text!r}: expected i/n with integers, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"bad shard {text!r}: need n >= 1 and 0 <= i < n (i is 0-based, e.g. 0/4 .. 3/4)"
        )
    return index, count


def shard_of(job: Job, count: int) -> int:
    """The shard a job belongs to: stable across runs, machines and Python hash seeds."""
    digest = hashlib.sha256(job.key.encode()).digest()
    return int.from_bytes(digest[:8], "big") % count


def select_shard(jobs: Sequence[Job], index: int, count: int) -> list[Job]:
    """The jobs of shard ``index`` of ``count`` (disjoint; their union is ``jobs``)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"bad shard {index}/{count}: need 0 <= i < n")
    return [j for j in jobs if shard_of(j, count) == index]
