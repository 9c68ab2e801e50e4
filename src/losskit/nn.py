"""Loss modules with ``torch.nn``'s names, constructor signatures and buffers.

Switch by import: ``import losskit.nn as nn``. The loss modules below are losskit's own (subclasses of
torch's ``_Loss`` / ``_WeightedLoss``); every other ``torch.nn`` name (``nn.Linear``, ``nn.Module``,
``nn.Sequential``, ``nn.init``, ...) resolves to torch's own object, and ``nn.functional`` is
:mod:`losskit.functional`.
"""

from __future__ import annotations

import torch.nn as _torch_nn

from .losses.adaptive_log_softmax import AdaptiveLogSoftmaxWithLoss
from .losses.binary_cross_entropy import BCELoss
from .losses.binary_cross_entropy_with_logits import BCEWithLogitsLoss
from .losses.cosine_embedding_loss import CosineEmbeddingLoss
from .losses.cross_entropy import CrossEntropyLoss
from .losses.ctc_loss import CTCLoss
from .losses.gaussian_nll_loss import GaussianNLLLoss
from .losses.hinge_embedding_loss import HingeEmbeddingLoss
from .losses.huber_loss import HuberLoss, SmoothL1Loss
from .losses.kl_div import KLDivLoss
from .losses.l1_loss import L1Loss
from .losses.linear_cross_entropy import LinearCrossEntropyLoss
from .losses.margin_ranking_loss import MarginRankingLoss
from .losses.mse_loss import MSELoss
from .losses.multi_margin_loss import MultiMarginLoss
from .losses.multilabel_margin_loss import MultiLabelMarginLoss
from .losses.multilabel_soft_margin_loss import MultiLabelSoftMarginLoss
from .losses.nll_loss import NLLLoss, NLLLoss2d
from .losses.poisson_nll_loss import PoissonNLLLoss
from .losses.soft_margin_loss import SoftMarginLoss
from .losses.triplet_margin_loss import TripletMarginLoss, TripletMarginWithDistanceLoss

__all__ = [
    "AdaptiveLogSoftmaxWithLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "CTCLoss",
    "CosineEmbeddingLoss",
    "CrossEntropyLoss",
    "GaussianNLLLoss",
    "HingeEmbeddingLoss",
    "HuberLoss",
    "KLDivLoss",
    "L1Loss",
    "LinearCrossEntropyLoss",
    "MSELoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "MultiLabelSoftMarginLoss",
    "MultiMarginLoss",
    "NLLLoss",
    "NLLLoss2d",
    "PoissonNLLLoss",
    "SmoothL1Loss",
    "SoftMarginLoss",
    "TripletMarginLoss",
    "TripletMarginWithDistanceLoss",
]

REPLACED = tuple(__all__)  # what losskit replaces; everything else is torch.nn's


def __getattr__(name: str):
    """Every other name is ``torch.nn``'s own object (drop-in: ``nn.Linear``, ``nn.Module``, ...)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_torch_nn, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_torch_nn)))
