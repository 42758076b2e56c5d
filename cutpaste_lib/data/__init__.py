"""Data layer: MVTec-layout reader, category metadata, decoded image cache, synthetic data.

Example:
    >>> from cutpaste_lib.data import ensure_synthetic, load_cache, normalize
    >>> root = ensure_synthetic()  # doctest: +SKIP
    >>> train = load_cache(root, "synth_carpet", "train", 64)  # doctest: +SKIP
    >>> x = normalize(train.images)  # float32 (N, 3, 64, 64), ImageNet mean/std  # doctest: +SKIP
"""

from cutpaste_lib.data.cache import (
    ImageCache,
    build_cache,
    decode_image,
    load_cache,
    resize_rgb,
)
from cutpaste_lib.data.mvtec import (
    IMAGE_EXTENSIONS,
    MVTEC_CATEGORIES,
    SYNTHETIC_CATEGORIES,
    CategoryInfo,
    Sample,
    category_info,
    list_categories,
    load_split,
    read_image,
    read_mask,
)
from cutpaste_lib.data.normalize import IMAGENET_MEAN, IMAGENET_STD, denormalize, normalize
from cutpaste_lib.data.synthetic import (
    DEFECT_TYPES,
    ensure_synthetic,
    generate_synthetic,
    render_sample,
)

__all__ = [
    "DEFECT_TYPES",
    "IMAGE_EXTENSIONS",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MVTEC_CATEGORIES",
    "SYNTHETIC_CATEGORIES",
    "CategoryInfo",
    "ImageCache",
    "Sample",
    "build_cache",
    "category_info",
    "decode_image",
    "denormalize",
    "ensure_synthetic",
    "generate_synthetic",
    "list_categories",
    "load_cache",
    "load_split",
    "normalize",
    "read_image",
    "read_mask",
    "render_sample",
    "resize_rgb",
]
