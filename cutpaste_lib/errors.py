"""Errors a user can act on. The CLI prints them as one line, without a traceback.

Each subclass also derives from the built-in exception a Python caller would expect
(``ValueError`` for bad data, ``FileNotFoundError`` for something missing), so library users
can catch either.
"""

from __future__ import annotations


class CutPasteError(Exception):
    """Base class: the message says what is wrong and what to do."""


class DatasetError(CutPasteError, ValueError):
    """A dataset folder, image or mask is missing, empty, corrupt or inconsistent."""


class DataNotFoundError(CutPasteError, FileNotFoundError):
    """A dataset (or a category in it) is not where it was looked for."""


class WeightsUnavailableError(CutPasteError, FileNotFoundError):
    """Pretrained weights were asked for but are not on disk (no network at run time)."""


class CheckpointError(CutPasteError, ValueError):
    """A checkpoint is corrupt, of another format, or does not match the requested model."""


class TrainingDivergedError(CutPasteError, RuntimeError):
    """The training loss became NaN or infinite."""
