"""losskit: loss functions for PyTorch, exact to ``torch.nn`` and Keras 3, fused where it pays.

Switch by import::

    import losskit.nn as nn                # CrossEntropyLoss, NLLLoss, MSELoss, ...
    import losskit.functional as F         # cross_entropy, nll_loss, mse_loss, ...
"""

from . import functional, nn
from ._checks import LossError, LossIndexError, LossTypeError, LossValueError

__version__ = "0.1.0"

__all__ = [
    "LossError",
    "LossIndexError",
    "LossTypeError",
    "LossValueError",
    "__version__",
    "functional",
    "nn",
]
