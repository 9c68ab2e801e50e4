"""Loss functions with ``torch.nn.functional``'s names, signatures and results.

Switch by import: ``import losskit.functional as F``. The names below are losskit's own (one file each in
:mod:`losskit.losses`); every other ``torch.nn.functional`` name (``F.relu``, ``F.softmax``, ``F.one_hot``,
...) resolves to torch's own object, so a training script keeps working after the switch.
"""

from __future__ import annotations

import torch.nn.functional as _torch_functional

from .losses.binary_cross_entropy import binary_cross_entropy
from .losses.binary_cross_entropy_with_logits import binary_cross_entropy_with_logits
from .losses.cosine_embedding_loss import cosine_embedding_loss
from .losses.cross_entropy import cross_entropy
from .losses.ctc_loss import ctc_loss
from .losses.gaussian_nll_loss import gaussian_nll_loss
from .losses.hinge_embedding_loss import hinge_embedding_loss
from .losses.huber_loss import huber_loss, smooth_l1_loss
from .losses.kl_div import kl_div
from .losses.l1_loss import l1_loss
from .losses.linear_cross_entropy import linear_cross_entropy
from .losses.margin_ranking_loss import margin_ranking_loss
from .losses.mse_loss import mse_loss
from .losses.multi_margin_loss import multi_margin_loss
from .losses.multilabel_margin_loss import multilabel_margin_loss
from .losses.multilabel_soft_margin_loss import multilabel_soft_margin_loss
from .losses.nll_loss import nll_loss
from .losses.poisson_nll_loss import poisson_nll_loss
from .losses.soft_margin_loss import soft_margin_loss
from .losses.triplet_margin_loss import triplet_margin_loss, triplet_margin_with_distance_loss

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cosine_embedding_loss",
    "cross_entropy",
    "ctc_loss",
    "gaussian_nll_loss",
    "hinge_embedding_loss",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "linear_cross_entropy",
    "margin_ranking_loss",
    "mse_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "nll_loss",
    "poisson_nll_loss",
    "smooth_l1_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]

REPLACED = tuple(__all__)  # what losskit replaces; everything else is torch.nn.functional's


def __getattr__(name: str):
    """Every other name is ``torch.nn.functional``'s own object (drop-in: ``F.relu``, ``F.softmax``, ...)."""
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(_torch_functional, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(dir(_torch_functional)))
