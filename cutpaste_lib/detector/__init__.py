"""Use a trained model on new images: a saved detector, a threshold from normal images, export.

* :class:`Detector` (:mod:`~cutpaste_lib.detector.detector`): model + fitted Gaussian(s) +
  threshold in one file; ``Detector.load(path).predict(images)``.
* :mod:`~cutpaste_lib.detector.build`: make one from clean training images
  (:func:`fit_detector`) or from an evaluation / localization result.
* :mod:`~cutpaste_lib.detector.threshold`: the threshold at a target false-positive rate on
  cross-fitted normal scores, with its uncertainty; the F1-max threshold on labelled images.
* :mod:`~cutpaste_lib.detector.artifact`: the file format (plain data, checksum, version);
  :mod:`~cutpaste_lib.detector.payload`: a detector as that plain data and back.
* :mod:`~cutpaste_lib.detector.inputs`: files and folders of new images, and the unreadable ones.
* :mod:`~cutpaste_lib.detector.export`: TorchScript / ONNX with the density folded in, and the
  parity check.
"""

from cutpaste_lib.detector.artifact import (
    DETECTOR_FORMAT,
    DETECTOR_VERSION,
    DetectorFileError,
    read_detector,
)
from cutpaste_lib.detector.build import (
    DEFAULT_FPR,
    DETECTOR_FOLDS,
    detector_from_evaluation,
    detector_from_localization,
    detector_from_patch_density,
    fit_detector,
    labelled_report,
)
from cutpaste_lib.detector.detector import Detector, Prediction
from cutpaste_lib.detector.inputs import ImageBatch, expand_paths, load_images
from cutpaste_lib.detector.threshold import (
    FprThreshold,
    f1_max_threshold,
    fpr_threshold,
    rates_at,
)

__all__ = [
    "DEFAULT_FPR",
    "DETECTOR_FOLDS",
    "DETECTOR_FORMAT",
    "DETECTOR_VERSION",
    "Detector",
    "DetectorFileError",
    "FprThreshold",
    "ImageBatch",
    "Prediction",
    "detector_from_evaluation",
    "detector_from_localization",
    "detector_from_patch_density",
    "expand_paths",
    "f1_max_threshold",
    "fit_detector",
    "fpr_threshold",
    "labelled_report",
    "load_images",
    "rates_at",
    "read_detector",
]
