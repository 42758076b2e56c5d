"""The dense patch grid: where each patch lies, and all patches of a batch as one view."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class PatchGrid:
    """Where the dense patches lie: patch (i, j) is the crop at rows ``stride*i``, columns ``stride*j``.

    Attributes:
        image_size: (H, W) of the images.
        patch_size: side of each square patch (paper A.5: 32).
        stride: step between neighbouring patches (paper: 4).
    """

    image_size: tuple[int, int]
    patch_size: int = 32
    stride: int = 4

    def __post_init__(self) -> None:
        h, w = (int(v) for v in self.image_size)
        object.__setattr__(self, "image_size", (h, w))
        if self.patch_size < 1 or self.stride < 1:
            raise ValueError(
                f"patch_size and stride must be positive, got {self.patch_size} and {self.stride}"
            )
        if self.patch_size > min(h, w):
            raise ValueError(
                f"patch_size {self.patch_size} is larger than the images ({h}x{w}): use a smaller --patch-size"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of the grid: ``(H - patch) // stride + 1`` each (57 x 57 at 256/32/4)."""
        h, w = self.image_size
        return (h - self.patch_size) // self.stride + 1, (w - self.patch_size) // self.stride + 1

    @property
    def num_locations(self) -> int:
        return self.shape[0] * self.shape[1]


def extract_patches(images: Tensor, patch_size: int, stride: int) -> Tensor:
    """All patches of ``images`` (N, C, H, W) as a view of shape (N, gh, gw, C, patch, patch).

    ``unfold`` twice gives (N, C, gh, gw, p, p); the channel axis must then move **behind** the
    grid axes before any reshape, otherwise flattening mixes channels and locations (the patches
    come out scrambled). No copy is made; index or ``reshape`` the result to materialise patches.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    patches = images.unfold(2, patch_size, stride).unfold(3, patch_size, stride)
    return patches.permute(0, 2, 3, 1, 4, 5)
