"""l1_loss against torch 2.13 (``torch.nn.functional.l1_loss``), through the test classes it shares with
mse_loss in :mod:`pointwise_helpers`; its zero-error sub-gradient is in the grid's ties (``make_pair``)."""

from __future__ import annotations

import pytest

from pointwise_helpers import (
    ElementWeightTests,
    LegacyArgsTests,
    MseL1GridTests,
    RegressionLossTests,
)

pytestmark = pytest.mark.filterwarnings("error")  # no case may warn unless the test expects it


class TestL1Loss(RegressionLossTests, MseL1GridTests, LegacyArgsTests, ElementWeightTests):
    name = "l1_loss"
