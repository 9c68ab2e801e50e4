"""mse_loss against torch 2.13: the regression contract (:class:`pointwise_helpers.RegressionLossTests`:
broadcasting, mixed dtypes, gradcheck, properties), the mse / l1 grid, the legacy arguments, element weights."""

from __future__ import annotations

import pytest
import torch

from pointwise_helpers import (
    ElementWeightTests,
    LegacyArgsTests,
    MseL1GridTests,
    RegressionLossTests,
    make_pair,
    make_weight,
)

pytestmark = pytest.mark.filterwarnings("error")  # no case may warn unless the test expects it


class TestMseLoss(RegressionLossTests, MseL1GridTests, LegacyArgsTests, ElementWeightTests):
    name = "mse_loss"


def test_grids_are_not_trivial():
    """The grids above hold non-empty tensors with ties at 0 and at the knee, and weighted means differ."""
    x, y = make_pair((3, 5), 2.5, 1)
    d = (x - y).view(-1)
    assert x.numel() == 15 and d[0] == 0 and d[1] == 2.5 and d[2] == -2.5
    w = make_weight((3, 5), 1)
    loss = (x - y) ** 2
    # mse's weighted mean is Σwl/Σw, huber's is mean(w·l): a case where the two rules disagree
    assert not torch.isclose((w * loss).sum() / w.sum(), (w * loss).mean())
