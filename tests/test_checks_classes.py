"""The bad-input catalog, class checks (``losskit/_checks/classes.py``): class-index targets (range, dtype,
shape), class weights, probability targets with ``ignore_index``, multilabel targets. Every bad call raises a
clear losskit error of the type torch raises (see ``test_checks.py``)."""

from __future__ import annotations

import pytest
import torch

from checks_helpers import (
    C,
    N,
    _case,
    _logits,
    _long,
    _probs,
    _two_rows,
    _x,
    _y,
    assert_bad_input,
    loss_function,
)


def _class_cases(fn: str) -> list:
    """The class-target and class-weight cases shared by cross_entropy and nll_loss (``fn``)."""

    f = loss_function(fn)
    rows = [
        # target out of range: C itself, far above, -1 and -5 (ignore_index is -100)
        (f"{fn}-target-eq-C", lambda F, _: f(F)(_x(), _long([0, 5, 1])), ("target", "5", "5 classes")),
        (f"{fn}-target-100", lambda F, _: f(F)(_x(), _long([0, 100, 1])), ("target", "100", "5 classes")),
        (f"{fn}-target-minus-1", lambda F, _: f(F)(_x(), _long([0, -1, 1])), ("target", "-1", "5 classes")),
        (f"{fn}-target-minus-5", lambda F, _: f(F)(_x(), _long([-5, 1, 1])), ("target", "-5", "5 classes")),
        # ... with a custom ignore_index the default -100 is out of range too
        (
            f"{fn}-ignore-2-target-7",
            lambda F, _: f(F)(_x(), _long([7, 2, 1]), ignore_index=2),
            ("target", "7", "5 classes"),
        ),
        (
            f"{fn}-ignore-2-target-minus-100",
            lambda F, _: f(F)(_x(), _long([-100, 2, 1]), ignore_index=2),
            ("target", "-100", "5 classes"),
        ),
        (f"{fn}-1d-input-target-5", lambda F, _: f(F)(_logits(C), _long(5)), ("target", "5", "5 classes")),
        (
            f"{fn}-uint8-target-255",
            lambda F, _: f(F)(_x(), torch.tensor([0, 255, 1], dtype=torch.uint8)),
            ("target", "255", "5 classes"),
        ),
        # wrong target dtype
        (f"{fn}-target-int32", lambda F, _: f(F)(_x(), _y().int()), ("target", "torch.int32")),
        (f"{fn}-target-bool", lambda F, _: f(F)(_x(), _long([1, 0, 1]).bool()), ("target", "torch.bool")),
        (f"{fn}-target-float-1d", lambda F, _: f(F)(_x(), _y().float()), ("target", "torch.float32")),
        (
            f"{fn}-target-float-wrong-shape",
            lambda F, _: f(F)(_x(), _probs(3, 2)),
            ("target", "torch.float32"),
        ),
        # shapes
        (f"{fn}-batch-mismatch", lambda F, _: f(F)(_x(), _long([0, 1])), ("target", "[3, 5]", "[2]")),
        (
            f"{fn}-2d-target",
            lambda F, _: f(F)(_x(), torch.zeros(3, 2, dtype=torch.long)),
            ("target", "[3, 2]"),
        ),
        (
            f"{fn}-1d-input-target-2",
            lambda F, _: f(F)(_logits(C), _long([0, 1])),
            ("target", "[5]", "[2]"),
        ),
        (
            f"{fn}-4d-input-target-mismatch",
            lambda F, _: f(F)(_logits(2, C, 3, 4), torch.zeros(2, 3, 3, dtype=torch.long)),
            ("target", "[2, 3, 4]", "[2, 3, 3]"),
        ),
        (
            f"{fn}-4d-input-2d-target",
            lambda F, _: f(F)(_logits(2, C, 3, 4), torch.zeros(2, 3, dtype=torch.long)),
            ("target", "[2, 3, 4]", "[2, 3]"),
        ),
        (
            f"{fn}-3d-input-target-mismatch",
            lambda F, _: f(F)(_logits(2, C, 3), torch.zeros(2, 4, dtype=torch.long)),
            ("target", "[2, 3]", "[2, 4]"),
        ),
        (
            f"{fn}-5d-input-target-mismatch",
            lambda F, _: f(F)(_logits(2, C, 2, 2, 2), torch.zeros(2, 2, 2, 3, dtype=torch.long)),
            ("target", "[2, 2, 2, 2]", "[2, 2, 2, 3]"),
        ),
        # weight
        (
            f"{fn}-weight-len-3",
            lambda F, _: f(F)(_x(), _y(), weight=torch.ones(3)),
            ("weight", "5 classes", "[3]"),
        ),
        (f"{fn}-weight-2d", lambda F, _: f(F)(_x(), _y(), weight=torch.ones(1, C)), ("weight", "[1, 5]")),
    ]
    return [_case(i, c, fr) for i, c, fr in rows]


CASES = [
    *_class_cases("cross_entropy"),
    *_class_cases("nll_loss"),
    # ---- cross_entropy only
    _case(
        "cross_entropy-long-target-of-input-shape",
        lambda F, _: F.cross_entropy(_x(), torch.zeros(N, C, dtype=torch.long)),
        ("target", "[3, 5]", "torch.int64"),
    ),
    _case(
        "nll_loss-long-target-of-input-shape",
        lambda F, _: F.nll_loss(_x(), torch.zeros(N, C, dtype=torch.long)),
        ("target", "[3, 5]"),
    ),
    _case(
        "cross_entropy-ignore-index-0-probabilities",
        lambda F, _: F.cross_entropy(_x(), _x().softmax(1), ignore_index=0),
        ("ignore_index", "0"),
    ),
    _case(
        "cross_entropy-ignore-index-3-probabilities",
        lambda F, _: F.cross_entropy(_x(), _x().softmax(1), ignore_index=3),
        ("ignore_index", "3"),
    ),
    _case(
        "cross_entropy-probabilities-weight-len-3",
        lambda F, _: F.cross_entropy(_x(), _x().softmax(1), weight=torch.ones(3)),
        ("weight", "5 classes", "[3]"),
    ),
    # ---- multilabel_margin_loss (input (2, 4): C = 4)
    _case(
        "multilabel_margin-target-eq-C",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), _two_rows([4, -1, 0, 0])),
        ("target", "4", "4 classes"),
    ),
    _case(
        "multilabel_margin-target-minus-2-before-padding",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), _two_rows([0, -2, -1, 0])),
        ("target", "-2", "4 classes"),
    ),
    _case(
        "multilabel_margin-1d-target-eq-C",
        lambda F, _: F.multilabel_margin_loss(_logits(4), _long([4, -1, 0, 0])),
        ("target", "4", "4 classes"),
    ),
    _case(
        "multilabel_margin-target-C-after-padding",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), _two_rows([0, -1, 4, 0])),
        ("target", "4", "4 classes"),
    ),
    _case(
        "multilabel_margin-target-minus-2-after-padding",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), _two_rows([0, -1, -2, 0])),
        ("target", "-2", "4 classes"),
    ),
    _case(
        "multilabel_margin-float-target",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), torch.zeros(2, 4)),
        ("target", "torch.float32"),
    ),
    _case(
        "multilabel_margin-int32-target",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), torch.zeros(2, 4, dtype=torch.int32)),
        ("target", "torch.int32"),
    ),
    _case(
        "multilabel_margin-shape-mismatch",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 4), torch.zeros(2, 3, dtype=torch.long)),
        ("target", "[2, 3]", "[2, 4]"),
    ),
    _case(
        "multilabel_margin-3d-input",
        lambda F, _: F.multilabel_margin_loss(_logits(2, 2, 4), torch.zeros(2, 2, 4, dtype=torch.long)),
        ("input", "[2, 2, 4]"),
    ),
    # ---- modules
    _case(
        "nn.NLLLoss-weight-len-3",
        lambda _, nn: nn.NLLLoss(weight=torch.ones(3))(_x(), _y()),
        ("weight", "5 classes", "[3]"),
    ),
    _case(
        "nn.MultiLabelMarginLoss-target-eq-C",
        lambda _, nn: nn.MultiLabelMarginLoss()(_logits(2, 4), _two_rows([4, -1, 0, 0])),
        ("target", "4", "4 classes"),
    ),
]


@pytest.mark.parametrize(("lk_call", "torch_call", "fragments"), CASES)
def test_bad_input(lk_call, torch_call, fragments):
    assert_bad_input(lk_call, torch_call, fragments)
