"""The bad-input catalog, scalar checks (``losskit/_checks/scalars.py``): ``reduction``, ``ignore_index``,
``label_smoothing``, ``beta``, ``delta``, ``margin``; the modules check them at call time, as torch does.
Every bad call raises a clear losskit error of the type torch raises (see ``test_checks.py``)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as tnn

import losskit.nn as lnn
from checks_helpers import (
    _case,
    _p34,
    _probs,
    _x,
    _x34,
    _y,
    assert_bad_input,
    loss_function,
)


def _class_option_cases(fn: str) -> list:
    """The option cases shared by cross_entropy and nll_loss (``fn``)."""

    f = loss_function(fn)
    rows = [
        # scalar options
        (
            f"{fn}-ignore-index-float",
            lambda F, _: f(F)(_x(), _y(), ignore_index=1.0),
            ("ignore_index", "float"),
        ),
        # beyond int64: torch's "Overflow when unpacking long long" (the kernels' fast paths must not take it)
        (f"{fn}-ignore-index-2**70", lambda F, _: f(F)(_x(), _y(), ignore_index=2**70), ("ignore_index", "int64")),
        (f"{fn}-ignore-index--2**64", lambda F, _: f(F)(_x(), _y(), ignore_index=-(2**64)), ("ignore_index", "int64")),
    ]
    cases = [_case(i, c, fr) for i, c, fr in rows]
    cases.append(
        _case(
            f"{fn}-reduction-avg",
            lambda F, _: f(F)(_x(), _y(), reduction="avg"),
            ("reduction", "avg"),
        )
    )
    return cases


CASES = [
    *_class_option_cases("cross_entropy"),
    *_class_option_cases("nll_loss"),
    # ---- cross_entropy
    _case(
        "cross_entropy-label-smoothing-1.5",
        lambda F, _: F.cross_entropy(_x(), _y(), label_smoothing=1.5),
        ("label_smoothing", "1.5"),
    ),
    _case(
        "cross_entropy-label-smoothing-1.5-probabilities",
        lambda F, _: F.cross_entropy(_x(), _x().softmax(1), label_smoothing=1.5),
        ("label_smoothing", "1.5"),
    ),
    _case(
        "cross_entropy-label-smoothing-str",
        lambda F, _: F.cross_entropy(_x(), _y(), label_smoothing="0.1"),
        ("label_smoothing", "str"),
    ),
    _case(
        "cross_entropy-reduction-batchmean",
        lambda F, _: F.cross_entropy(_x(), _y(), reduction="batchmean"),
        ("reduction", "batchmean"),
    ),
    _case(
        "cross_entropy-reduction-none-object",
        lambda F, _: F.cross_entropy(_x(), _y(), reduction=None),
        ("reduction", "None"),
    ),
    _case(
        "ctc_loss-blank-2**70",
        lambda F, _: F.ctc_loss(
            torch.randn(5, 2, 4).log_softmax(2),
            torch.tensor([[1, 2], [3, 1]]),
            torch.tensor([5, 5]),
            torch.tensor([2, 2]),
            blank=2**70,
        ),
        ("blank", "int64"),
    ),
    # ---- regression: beta / delta
    _case(
        "smooth_l1_loss-beta-minus-0.5",
        lambda F, _: F.smooth_l1_loss(_x34(), _p34(), beta=-0.5),
        ("beta", "-0.5"),
    ),
    _case(
        "smooth_l1_loss-beta-nan",
        lambda F, _: F.smooth_l1_loss(_x34(), _p34(), beta=float("nan")),
        ("beta", "nan"),
    ),
    _case("huber_loss-delta-0", lambda F, _: F.huber_loss(_x34(), _p34(), delta=0.0), ("delta", "0")),
    _case("huber_loss-delta-minus-1", lambda F, _: F.huber_loss(_x34(), _p34(), delta=-1.0), ("delta", "-1")),
    _case(
        "huber_loss-delta-nan",
        lambda F, _: F.huber_loss(_x34(), _p34(), delta=float("nan")),
        ("delta", "nan"),
    ),
    # ---- kl_div
    _case(
        "kl_div-reduction-avg",
        lambda F, _: F.kl_div(_x34(), _p34(), reduction="avg"),
        ("reduction", "avg"),
    ),
    # ---- margin_ranking_loss
    _case(
        "margin_ranking-margin-str",
        lambda F, _: F.margin_ranking_loss(_probs(3), _probs(3), torch.ones(3), margin="a"),
        ("margin", "str"),
    ),
    # ---- modules: options are checked at call time, as in torch
    _case(
        "nn.CrossEntropyLoss-reduction-avg",
        lambda _, nn: nn.CrossEntropyLoss(reduction="avg")(_x(), _y()),
        ("reduction", "avg"),
    ),
    _case(
        "nn.MSELoss-reduction-avg",
        lambda _, nn: nn.MSELoss(reduction="avg")(_x34(), _p34()),
        ("reduction", "avg"),
    ),
    _case("nn.HuberLoss-delta-minus-1", lambda _, nn: nn.HuberLoss(delta=-1)(_x34(), _p34()), ("delta", "-1")),
    _case(
        "nn.SmoothL1Loss-beta-minus-1",
        lambda _, nn: nn.SmoothL1Loss(beta=-1.0)(_x34(), _p34()),
        ("beta", "-1"),
    ),
    _case(
        "nn.CrossEntropyLoss-label-smoothing-1.5",
        lambda _, nn: nn.CrossEntropyLoss(label_smoothing=1.5)(_x(), _y()),
        ("label_smoothing", "1.5"),
    ),
]


@pytest.mark.parametrize(("lk_call", "torch_call", "fragments"), CASES)
def test_bad_input(lk_call, torch_call, fragments):
    assert_bad_input(lk_call, torch_call, fragments)


@pytest.mark.parametrize(
    "make",
    [
        lambda nn: nn.CrossEntropyLoss(reduction="avg"),
        lambda nn: nn.NLLLoss(reduction="batchmean"),
        lambda nn: nn.MSELoss(reduction="avg"),
        lambda nn: nn.KLDivLoss(reduction="avg"),
        lambda nn: nn.HuberLoss(delta=-1),
        lambda nn: nn.SmoothL1Loss(beta=-1.0),
        lambda nn: nn.CrossEntropyLoss(label_smoothing=1.5),
        lambda nn: nn.NLLLoss(weight=torch.ones(3)),
        lambda nn: nn.BCEWithLogitsLoss(pos_weight=torch.ones(3)),
    ],
    ids=[
        "ce-avg",
        "nll-batchmean",
        "mse-avg",
        "kl-avg",
        "huber-delta",
        "sl1-beta",
        "ce-ls",
        "nll-w",
        "bcel-pw",
    ],
)
def test_modules_check_at_call_not_construction(make):
    # torch builds these modules without complaint and raises only when they are called (cases above)
    make(tnn)
    make(lnn)
