"""losskit's exception classes: each is both the idiomatic Python type and the type torch raises."""

from __future__ import annotations


class LossError(RuntimeError):
    """Base class of losskit's input errors (a :class:`RuntimeError`, like torch's)."""


class LossValueError(LossError, ValueError):
    """A shape, size or value that the loss cannot take."""


class LossTypeError(LossError, TypeError, NotImplementedError):
    """A wrong type or dtype (also a NotImplementedError, as torch's kernels raise for unsupported dtypes)."""


class LossIndexError(LossError, IndexError):
    """A class index outside ``[0, C)``."""
