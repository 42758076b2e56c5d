"""CutPaste, CutPaste-Scar, Union and 3-way proxy batches (Li et al., CVPR 2021, §2 and A.2).

The self-supervised task: tell a normal image from the same image with a patch of itself cut
out, colour-jittered and pasted somewhere else (CutPaste), or with a thin rotated strip pasted
(Scar). Everything here works on float images in [0, 1] of shape (B, 3, H, W) on any device.

One parameter sampler (:func:`sample_cutpaste_params`, :func:`sample_scar_params`,
:func:`sample_jitter`) drives two implementations that give the same pixels:

* ``implementation="per_image"``: readable, one image at a time, slicing plus
  ``torchvision.transforms.functional`` colour jitter. This is the version to read.
* ``implementation="batched"`` (default): the whole batch at once with index arithmetic
  (gather/scatter on flat pixel indices, all augmented views of a step in one call) and a
  branch-free batched colour jitter. Every tensor has a shape fixed by the sampling ranges
  (:func:`paste_window_bound`), so there is no loop over images or pixels and no host sync:
  on a GPU the CPU queues the next batch while the previous training step still runs. This
  is what training uses.

The samplers draw every number of a batch first and then do a few dozen operations on arrays
of a few numbers per image. With a CPU generator (what training uses, also for a GPU) that
arithmetic runs in NumPy on one ``torch.rand`` draw, because a torch operation on such a tiny
tensor costs more in dispatch than the arithmetic; with a GPU generator, or with
``host_arithmetic=False``, it runs in torch on the generator's device. On the same draws both
give the same parameters bit for bit (tested). What each sampler draws is declared once
(:class:`~cutpaste_lib.augment.draws.Draws`), and its body reads the numbers by those names.

The modules, in the order the data goes through them: ``params`` (names, ranges, parameter
types), ``draws`` (the uniform draws and the array functions), ``colour`` (jitter),
``geometry``, ``paste_params`` (CutPaste and Scar samplers), ``paste_one`` (the per-image
reference), ``batched_paste``, ``cutpaste_scar`` (the public CutPaste and Scar), ``whole_image``,
``patch_crop``, ``transfer`` (parameters to the device), ``proxy_params`` and ``proxy``
(:func:`make_proxy_batch`, :class:`ProxyCompiler`).

Geometry of a paste. A rectangle of ``height`` x ``width`` pixels (rows x columns) is read at
the source centre and written, rotated by ``angle`` degrees (counter-clockwise as displayed),
at the destination centre. Pixel ``(i, j)`` covers ``[i, i+1) x [j, j+1)``; a destination
pixel belongs to the paste when its centre, rotated back, falls inside the rectangle, and it
takes the source pixel under that point (nearest neighbour, so no pixel is blended). CutPaste
is the special case ``angle = 0`` with integer sizes and corners: a plain slice copy.

Choices where the paper is silent (repeated in the notebook):

* Aspect ratio = width / height, log-uniform over (0.3, 3.3) as RandomErasing does;
  ``aspect_sampling="two_interval"`` picks (0.3, 1) or (1, 3.3) with probability 1/2 each and
  then a uniform value inside it. Draws whose patch does not fit the image are redrawn (10
  tries, as RandomErasing) and then clamped; this only happens for very elongated images.
* Colour jitter follows ``torchvision.transforms.ColorJitter(0.1, 0.1, 0.1, 0.1)`` (factors
  U(0.9, 1.1), hue shift U(-0.1, 0.1), random order per image). The contrast reference mean is
  the mean grey level of the pasted pixels (for CutPaste exactly the cut patch).
* Scar width and length are continuous (the rotated rectangle is rasterised by pixel centres);
  the unrotated strip is upright (length along rows), as in the authors' sister code, and the
  width range (2-16) overlaps the length range (10-25), so some "scars" are almost square.
* Scar sizes are pixels of the 256 x 256 working image (``reference_size=256``). At another
  resolution they are scaled by ``sqrt(H * W) / 256`` (our choice, so fast-mode 64 px images get
  proportionally small scars), with at least 1 px width and length. In patch mode the scale
  comes from the full image, not the crop: a 64 px crop of a 256 px image keeps 256-px scars,
  while the CutPaste area ratio refers to the crop (the paper: CutPaste inside the crop).
* Whole-image augmentation (:class:`WholeImageAug`, "random translation and color jitters",
  magnitudes unspecified in the paper): shift up to 1/16 of each side with reflection padding,
  brightness/contrast/saturation 0.1, no hue. It is drawn once per original image and shared by
  all its views (normal, CutPaste, Scar), so the views differ only where a patch was pasted and
  the classifier cannot separate the classes on global appearance.

Example:
    >>> import torch
    >>> from cutpaste_lib.augment import make_proxy_batch, num_classes
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.rand(4, 3, 64, 64, generator=g)
    >>> batch = make_proxy_batch(x, "3way", generator=g)
    >>> tuple(batch.images.shape), batch.labels.tolist(), num_classes("3way")
    ((12, 3, 64, 64), [0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2], 3)
"""

from cutpaste_lib.augment.batched_paste import (
    paste_batched,
    paste_into,
)
from cutpaste_lib.augment.colour import (
    adjust_hue,
    jitter_batched,
    jitter_blocks,
    jitter_one,
    sample_jitter,
)
from cutpaste_lib.augment.cutpaste_scar import (
    cutpaste,
    paste,
    scar,
)
from cutpaste_lib.augment.geometry import (
    paste_window_bound,
    scar_scale,
)
from cutpaste_lib.augment.params import (
    CUTPASTE_AREA,
    CUTPASTE_ASPECT,
    JITTER_OPS,
    PASTE_JITTER,
    REFERENCE_SIZE,
    SCAR_LENGTH,
    SCAR_ROTATION,
    SCAR_WIDTH,
    VARIANTS,
    AspectSampling,
    Augmented,
    Implementation,
    PasteParams,
    ProxyBatch,
    ProxyParams,
    Variant,
    WholeImageParams,
    num_classes,
    views_per_image,
)
from cutpaste_lib.augment.paste_one import (
    cutpaste_one,
    scar_one,
)
from cutpaste_lib.augment.paste_params import (
    sample_aspect,
    sample_cutpaste_params,
    sample_scar_params,
)
from cutpaste_lib.augment.patch_crop import (
    crop,
    random_crop,
    sample_crop,
)
from cutpaste_lib.augment.proxy import (
    ProxyCompiler,
    apply_proxy_params,
    make_proxy_batch,
)
from cutpaste_lib.augment.proxy_params import (
    sample_proxy_params,
)
from cutpaste_lib.augment.transfer import (
    move_params,
)
from cutpaste_lib.augment.whole_image import (
    WholeImageAug,
    apply_whole_image,
)

__all__ = [
    "AspectSampling",
    "Augmented",
    "CUTPASTE_AREA",
    "CUTPASTE_ASPECT",
    "Implementation",
    "JITTER_OPS",
    "PASTE_JITTER",
    "PasteParams",
    "ProxyBatch",
    "ProxyCompiler",
    "ProxyParams",
    "REFERENCE_SIZE",
    "SCAR_LENGTH",
    "SCAR_ROTATION",
    "SCAR_WIDTH",
    "VARIANTS",
    "Variant",
    "WholeImageAug",
    "WholeImageParams",
    "adjust_hue",
    "apply_proxy_params",
    "apply_whole_image",
    "crop",
    "cutpaste",
    "cutpaste_one",
    "jitter_batched",
    "jitter_blocks",
    "jitter_one",
    "make_proxy_batch",
    "move_params",
    "num_classes",
    "paste",
    "paste_batched",
    "paste_into",
    "paste_window_bound",
    "random_crop",
    "sample_aspect",
    "sample_crop",
    "sample_cutpaste_params",
    "sample_jitter",
    "sample_proxy_params",
    "sample_scar_params",
    "scar",
    "scar_one",
    "scar_scale",
    "views_per_image",
]
