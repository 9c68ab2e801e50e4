"""The one place that turns bad input into a clear exception, by kind of check.

Every error names the argument and the shapes, dtypes or values involved. Each exception class is both the
idiomatic Python type and :class:`RuntimeError` (what torch raises for most of these), so code written
against torch's ``except RuntimeError`` keeps working. No other module of losskit raises a user-facing
error (``tests/test_architecture.py`` walks the source to keep it so).
"""

from __future__ import annotations

from . import constructors, distributed, embedding, hf, keras, sequence
from .autograd import gradient_available, inplace_allowed, overwritten_logits
from .classes import (
    class_index_dtype,
    class_problem,
    class_range,
    class_target,
    class_weight,
    multilabel_range,
    multilabel_target,
    no_ignore_index,
    probability_target,
)
from .errors import LossError, LossIndexError, LossTypeError, LossValueError
from .linear import linear_layer, linear_target
from .scalars import (
    fits_int64,
    flag,
    integer,
    label_smoothing,
    non_negative,
    number,
    positive,
    positive_finite,
    reduction,
    strict_flag,
)
from .tensors import (
    at_least_1d,
    broadcast_shape,
    broadcasts_to,
    elementwise_weight,
    floating,
    floating_dtype,
    in_unit_interval,
    no_grad,
    optional_tensor,
    pointwise_pair,
    same_device,
    same_dtype,
    same_ndim,
    same_size,
    shape,
    tensor,
)

__all__ = [
    "LossError",
    "LossIndexError",
    "LossTypeError",
    "LossValueError",
    "at_least_1d",
    "broadcast_shape",
    "broadcasts_to",
    "class_index_dtype",
    "class_problem",
    "class_range",
    "class_target",
    "class_weight",
    "constructors",
    "distributed",
    "hf",
    "keras",
    "embedding",
    "elementwise_weight",
    "fits_int64",
    "flag",
    "floating",
    "floating_dtype",
    "gradient_available",
    "in_unit_interval",
    "inplace_allowed",
    "integer",
    "label_smoothing",
    "linear_layer",
    "linear_target",
    "multilabel_range",
    "multilabel_target",
    "no_grad",
    "no_ignore_index",
    "non_negative",
    "number",
    "optional_tensor",
    "overwritten_logits",
    "pointwise_pair",
    "positive",
    "positive_finite",
    "probability_target",
    "reduction",
    "same_device",
    "same_dtype",
    "same_ndim",
    "same_size",
    "sequence",
    "shape",
    "strict_flag",
    "tensor",
]
