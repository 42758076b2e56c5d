"""A synthetic, MVTec-like dataset: three categories drawn procedurally with numpy.

MVTec AD cannot be downloaded on the course machines, so this package paints a stand-in with the
same folder layout (see :mod:`cutpaste_lib.data.mvtec`) and the same kind of difficulty:

* ``synth_carpet`` -- an irregular loop-pile carpet (yarn loops of varying shade on a warped
  lattice, mottled tufts, fibres);
* ``synth_grid`` -- a regular woven wire mesh (period, phase and a slight waviness vary);
* ``synth_washer`` -- an aligned object: a brushed-metal flange with three bolt holes, centred,
  in a fixed pose (a few pixels and degrees of jitter).

Normal images differ from each other (texture phase, lighting level and gradient, colour balance,
sensor noise, pose jitter), so "is this image identical to the training set" is not enough.
Defects are *local* (a small fraction of the image) and come light or dark, so global statistics
such as the mean brightness do not separate good from defective images; each defect has an exact
mask.

Defect types: ``scratch`` (a thin curved line), ``hole`` (a dark irregular pit or void), ``color``
(a tinted stain through which the texture still shows), ``contamination`` (a blob of foreign
fibrous texture), and for the washer also ``missing`` (a chipped-off piece of the rim) and
``deformed`` (a dent or bulge of the outer edge).

How a defect is drawn (and why the mask is exact): every image starts from a *clean* rendering
(its own random stream); the defect draws from a second, independent stream a region ``M`` and a
defective version ``D``; the image is ``where(M, D, clean)`` and the mask is ``M``. So nothing
outside the mask changes, and each defect is designed to change (almost) every pixel of ``M``
visibly. :func:`render_sample` with the same seed returns the clean twin of a defective image.

Files are byte-identical for a given seed (PNG has no timestamp) with the same numpy version on
the same platform (FFT round-off may differ elsewhere); the dataset is written into a
temporary folder and renamed when complete, with a ``synthetic.json`` manifest. Overwriting
replaces only a folder with that manifest (or an empty one): never the user's own files.

The modules, one concept each: :mod:`.canvas` (coordinates, noise, blur, lighting, shapes),
:mod:`.scenes` (the three categories), :mod:`.defects` (the defect painters), :mod:`.sample`
(one image and its mask), :mod:`.plan` (which image goes where, from which seed),
:mod:`.manifest` (``synthetic.json`` and what may be overwritten), :mod:`.writer` (the atomic
:func:`generate_synthetic`) and :mod:`.ensure` (:func:`ensure_synthetic`).

Example:
    >>> from cutpaste_lib.data import generate_synthetic, load_split
    >>> root = generate_synthetic("/tmp/synth", size=64, n_train=8, overwrite=True)  # doctest: +SKIP
    >>> len(load_split(root, "synth_washer", "train"))  # doctest: +SKIP
    8
"""

from __future__ import annotations

from cutpaste_lib.data.synthetic.canvas import Rng
from cutpaste_lib.data.synthetic.defects import DEFECT_TYPES
from cutpaste_lib.data.synthetic.ensure import ensure_synthetic
from cutpaste_lib.data.synthetic.manifest import GENERATOR_VERSION, MANIFEST, read_manifest
from cutpaste_lib.data.synthetic.plan import default_test_counts
from cutpaste_lib.data.synthetic.sample import render_sample
from cutpaste_lib.data.synthetic.writer import generate_synthetic

__all__ = [
    "DEFECT_TYPES",
    "GENERATOR_VERSION",
    "MANIFEST",
    "Rng",
    "default_test_counts",
    "ensure_synthetic",
    "generate_synthetic",
    "read_manifest",
    "render_sample",
]
