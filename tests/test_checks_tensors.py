"""The bad-input catalog, tensor checks (``losskit/_checks/tensors.py``): tensor types, dtypes, shapes and
broadcasting, values outside [0, 1]. Every bad call raises a clear losskit error of the type torch raises (see
``test_checks.py``)."""

from __future__ import annotations

import pytest
import torch

from checks_helpers import (
    C,
    N,
    _case,
    _long,
    _p34,
    _probs,
    _x,
    _x34,
    _y,
    assert_bad_input,
    loss_function,
)


def _class_tensor_cases(fn: str) -> list:
    """The tensor cases shared by cross_entropy and nll_loss (``fn``)."""

    f = loss_function(fn)
    rows = [
        # weight
        (
            f"{fn}-weight-float64",
            lambda F, _: f(F)(_x(), _y(), weight=torch.ones(C, dtype=torch.float64)),
            ("weight", "torch.float64", "torch.float32"),
        ),
        (
            f"{fn}-weight-int64",
            lambda F, _: f(F)(_x(), _y(), weight=torch.ones(C, dtype=torch.long)),
            ("weight", "torch.int64", "torch.float32"),
        ),
        # input
        (f"{fn}-0d-input", lambda F, _: f(F)(torch.tensor(1.0), _long(0)), ("input", "[]")),
        (
            f"{fn}-integer-input",
            lambda F, _: f(F)(torch.ones(N, C, dtype=torch.long), _y()),
            ("input", "torch.int64"),
        ),
        (f"{fn}-list-input", lambda F, _: f(F)([[0.0, 1.0]], _long([0])), ("input", "list")),
        (f"{fn}-list-target", lambda F, _: f(F)(_x(), [0, 1, 4]), ("target", "list")),
    ]
    return [_case(i, c, fr) for i, c, fr in rows]


def _pointwise_cases() -> list:
    rows = []
    for fn in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss", "kl_div"):
        rows.append(
            (
                f"{fn}-no-broadcast",
                lambda F, _, fn=fn: getattr(F, fn)(_x34(), _probs(3, 5)),
                ("target", "[3, 4]", "[3, 5]"),
            )
        )
    for fn in ("mse_loss", "l1_loss", "smooth_l1_loss", "huber_loss", "soft_margin_loss"):
        rows.append(
            (
                f"{fn}-integer-inputs",
                lambda F, _, fn=fn: getattr(F, fn)(_long([1, 2, 3]), _long([0, 2, 2])),
                ("input", "torch.int64"),
            )
        )
    for fn in ("mse_loss", "l1_loss", "huber_loss"):
        rows.append(
            (
                f"{fn}-weight-wrong-size",
                lambda F, _, fn=fn: getattr(F, fn)(_x34(), _p34(), weight=torch.ones(4)),
                ("weight", "[4]", "[3, 4]"),
            )
        )
        rows.append(
            (
                f"{fn}-weight-wrong-size-2d",
                lambda F, _, fn=fn: getattr(F, fn)(_x34(), _p34(), weight=torch.ones(3, 5)),
                ("weight", "[3, 5]", "[3, 4]"),
            )
        )
    return [_case(i, c, fr) for i, c, fr in rows]


CASES = [
    *_class_tensor_cases("cross_entropy"),
    *_class_tensor_cases("nll_loss"),
    # ---- cross_entropy
    _case(
        "cross_entropy-weight-list",
        lambda F, _: F.cross_entropy(_x(), _y(), weight=[1.0] * C),
        ("weight", "list"),
    ),
    # ---- binary_cross_entropy
    _case(
        "bce-input-1.5",
        lambda F, _: F.binary_cross_entropy(torch.tensor([0.2, 1.5]), torch.tensor([0.0, 1.0])),
        ("input", "1.5"),
    ),
    _case(
        "bce-input-minus-0.1",
        lambda F, _: F.binary_cross_entropy(torch.tensor([0.2, -0.1]), torch.tensor([0.0, 1.0])),
        ("input", "-0.1"),
    ),
    _case(
        "bce-input-nan",
        lambda F, _: F.binary_cross_entropy(torch.tensor([0.2, float("nan")]), torch.tensor([0.0, 1.0])),
        ("input", "nan"),
    ),
    _case(
        "bce-target-2",
        lambda F, _: F.binary_cross_entropy(torch.tensor([0.2, 0.5]), torch.tensor([0.0, 2.0])),
        ("target", "2"),
    ),
    _case(
        "bce-target-minus-0.5",
        lambda F, _: F.binary_cross_entropy(torch.tensor([0.2, 0.5]), torch.tensor([-0.5, 1.0])),
        ("target", "-0.5"),
    ),
    _case(
        "bce-size-mismatch",
        lambda F, _: F.binary_cross_entropy(_p34(), _probs(3, 1)),
        ("target", "[3, 1]", "[3, 4]"),
    ),
    _case(
        "bce-size-mismatch-transposed",
        lambda F, _: F.binary_cross_entropy(_p34(), _probs(4, 3)),
        ("target", "[4, 3]", "[3, 4]"),
    ),
    _case(
        "bce-weight-no-broadcast",
        lambda F, _: F.binary_cross_entropy(_p34(), _p34(), weight=torch.ones(3)),
        ("weight", "[3]", "[3, 4]"),
    ),
    _case(
        "bce-weight-larger-than-target",
        lambda F, _: F.binary_cross_entropy(_p34(), _p34(), weight=torch.ones(2, 3, 4)),
        ("weight", "[2, 3, 4]", "[3, 4]"),
    ),
    _case(
        "bce-integer-input",
        lambda F, _: F.binary_cross_entropy(_long([0, 1, 1]), torch.ones(3)),
        ("input", "torch.int64"),
    ),
    _case(
        "bce-target-float64-input-float32",
        lambda F, _: F.binary_cross_entropy(_p34(), _p34().double()),
        ("target", "torch.float64"),
    ),
    # ---- binary_cross_entropy_with_logits
    _case(
        "bce-logits-size-mismatch",
        lambda F, _: F.binary_cross_entropy_with_logits(_x34(), _probs(3, 5)),
        ("target", "[3, 5]", "[3, 4]"),
    ),
    _case(
        "bce-logits-pos-weight-3-for-3x4",
        lambda F, _: F.binary_cross_entropy_with_logits(_x34(), _p34(), pos_weight=torch.ones(3)),
        ("pos_weight", "[3]", "[3, 4]"),
    ),
    _case(
        "bce-logits-pos-weight-2x4",
        lambda F, _: F.binary_cross_entropy_with_logits(_x34(), _p34(), pos_weight=torch.ones(2, 4)),
        ("pos_weight", "[2, 4]", "[3, 4]"),
    ),
    _case(
        "bce-logits-weight-3-for-3x4",
        lambda F, _: F.binary_cross_entropy_with_logits(_x34(), _p34(), weight=torch.ones(3)),
        ("weight", "[3]", "[3, 4]"),
    ),
    _case(
        "bce-logits-weight-larger-than-input",
        lambda F, _: F.binary_cross_entropy_with_logits(_x34(), _p34(), weight=torch.ones(2, 3, 4)),
        ("weight", "[2, 3, 4]", "[3, 4]"),
    ),
    _case(
        "bce-logits-integer-input",
        lambda F, _: F.binary_cross_entropy_with_logits(_long([0, 1, 1]), torch.ones(3)),
        ("input", "torch.int64"),
    ),
    # ---- pointwise
    *_pointwise_cases(),
    _case(
        "mse_loss-list-input",
        lambda F, _: F.mse_loss([1.0, 2.0], torch.ones(2)),
        ("input", "list"),
        # torch fails by accident here (AttributeError: a list has no .size); losskit names the argument
        torch_raises=False,
    ),
    # ---- margin_ranking_loss
    _case(
        "margin_ranking-different-dims",
        lambda F, _: F.margin_ranking_loss(_probs(3), _probs(3, 1), torch.ones(3)),
        ("input2", "[3, 1]", "[3]"),
    ),
    _case(
        "margin_ranking-no-broadcast",
        lambda F, _: F.margin_ranking_loss(_probs(3), _probs(4), torch.ones(3)),
        ("input2", "[4]", "[3]"),
    ),
    # ---- modules
    _case(
        "nn.BCELoss-input-1.5",
        lambda _, nn: nn.BCELoss()(torch.tensor([0.2, 1.5]), torch.tensor([0.0, 1.0])),
        ("input", "1.5"),
    ),
    _case(
        "nn.BCEWithLogitsLoss-pos-weight-3-for-3x4",
        lambda _, nn: nn.BCEWithLogitsLoss(pos_weight=torch.ones(3))(_x34(), _p34()),
        ("pos_weight", "[3]", "[3, 4]"),
    ),
    _case(
        "nn.MarginRankingLoss-different-dims",
        lambda _, nn: nn.MarginRankingLoss()(_probs(3), _probs(3, 1), torch.ones(3)),
        ("input2", "[3, 1]"),
    ),
]


@pytest.mark.parametrize(("lk_call", "torch_call", "fragments"), CASES)
def test_bad_input(lk_call, torch_call, fragments):
    assert_bad_input(lk_call, torch_call, fragments)
