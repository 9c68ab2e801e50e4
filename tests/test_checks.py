"""The bad-input catalog: every bad call raises a clear losskit error of the type torch raises.

Each case is ``(id, callable_for_losskit, callable_for_torch, fragments)``; both callables build their own
tiny tensors, so no case can hang or see another's state. For each case:

(a) losskit raises;
(b) when torch raises for the same call (every torch callable given here does; the test checks that too),
    losskit's exception is an instance of the type torch raised (RuntimeError, ValueError, IndexError, ...);
(c) losskit's exception is a :class:`losskit.LossError`;
(d) its message names the argument (the first fragment) and holds the shapes / values involved (the rest).

Cases marked ``xfail(strict=True)`` are known library bugs (see their reason): the assertion is what
torch 2.13 does, and the marker goes once the library is fixed (a strict xfail that passes fails the run).

Separately: a bad call leaves nothing half-done (inputs, module state and autograd are untouched and the
next good call matches torch), and ``python -O`` cannot strip the checks.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF

import losskit
import losskit.functional as LF
import losskit.nn as lnn

# ------------------------------------------------------------------------------------------ tiny tensors


def _logits(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Deterministic, distinct logits (no RNG, so every call builds the same tensor)."""
    n = 1
    for s in shape:
        n *= s
    return torch.arange(n, dtype=torch.float64).mul(0.7).sin().reshape(shape).to(dtype)


def _probs(*shape: int) -> torch.Tensor:
    """Values strictly inside (0, 1)."""
    n = 1
    for s in shape:
        n *= s
    return ((torch.arange(n, dtype=torch.float32) + 1) / (n + 1)).reshape(shape)


def _long(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


N, C = 3, 5  # the class problems: logits (3, 5), a good target [0, 1, 4]


def _x() -> torch.Tensor:
    return _logits(N, C)


def _y() -> torch.Tensor:
    return _long([0, 1, 4])


def _x34() -> torch.Tensor:
    return _logits(3, 4)


def _p34() -> torch.Tensor:
    return _probs(3, 4)


# ----------------------------------------------------------------------------------------- the catalog

Call = Callable[..., object]  # call(F, nn) -> loss, with F/nn either torch's or losskit's


def _case(case_id: str, call: Call, fragments: tuple[str, ...], *, torch_raises: bool = True, marks=()):
    """One catalog row: ``(id, callable_for_losskit, callable_for_torch, fragments)`` as a pytest param."""

    def lk() -> object:
        return call(LF, lnn)

    def th() -> object:
        return call(TF, tnn)

    return pytest.param(lk, th if torch_raises else None, fragments, id=case_id, marks=marks)


def _class_cases(fn: str) -> list:
    """The cases shared by cross_entropy and nll_loss (``fn``)."""

    def f(F):
        return getattr(F, fn)

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
        # scalar options
        (
            f"{fn}-ignore-index-float",
            lambda F, _: f(F)(_x(), _y(), ignore_index=1.0),
            ("ignore_index", "float"),
        ),
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


def _two_rows(values) -> torch.Tensor:
    """A (2, 4) multilabel target: the given first row, then a good row [0, -1, 0, 0]."""
    return _long([values, [0, -1, 0, 0]])


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
    _case(
        "cross_entropy-weight-list",
        lambda F, _: F.cross_entropy(_x(), _y(), weight=[1.0] * C),
        ("weight", "list"),
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
    *_pointwise_cases(),
    _case(
        "mse_loss-list-input",
        lambda F, _: F.mse_loss([1.0, 2.0], torch.ones(2)),
        ("input", "list"),
        # torch fails by accident here (AttributeError: a list has no .size); losskit names the argument
        torch_raises=False,
    ),
    # ---- kl_div
    _case(
        "kl_div-reduction-avg",
        lambda F, _: F.kl_div(_x34(), _p34(), reduction="avg"),
        ("reduction", "avg"),
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
    _case(
        "margin_ranking-margin-str",
        lambda F, _: F.margin_ranking_loss(_probs(3), _probs(3), torch.ones(3), margin="a"),
        ("margin", "str"),
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
    _case(
        "nn.NLLLoss-weight-len-3",
        lambda _, nn: nn.NLLLoss(weight=torch.ones(3))(_x(), _y()),
        ("weight", "5 classes", "[3]"),
    ),
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
        "nn.MultiLabelMarginLoss-target-eq-C",
        lambda _, nn: nn.MultiLabelMarginLoss()(_logits(2, 4), _two_rows([4, -1, 0, 0])),
        ("target", "4", "4 classes"),
    ),
    _case(
        "nn.MarginRankingLoss-different-dims",
        lambda _, nn: nn.MarginRankingLoss()(_probs(3), _probs(3, 1), torch.ones(3)),
        ("input2", "[3, 1]"),
    ),
]


def _raised(call: Callable[[], object]) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - any exception is what we are after
        return exc
    return None


def test_catalog_size():
    # the brief asks for at least 40 cases; every case has an argument name and at least one more fragment
    # unless the argument's value alone identifies the problem
    assert len(CASES) >= 40
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))
    assert all(p.values[2] for p in CASES)


@pytest.mark.parametrize(("lk_call", "torch_call", "fragments"), CASES)
def test_bad_input(lk_call, torch_call, fragments):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. the broadcast warning of mse_loss before its error
        lk_exc = _raised(lk_call)
        torch_exc = _raised(torch_call) if torch_call is not None else None
    # (a) losskit raises
    assert lk_exc is not None, "losskit did not raise"
    # (b) ... an instance of what torch raises for the same call
    if torch_call is not None:
        assert torch_exc is not None, "torch no longer raises for this call: update the catalog"
        assert isinstance(lk_exc, type(torch_exc)), (
            f"losskit raised {type(lk_exc).__mro__} which is not a {type(torch_exc).__name__} (torch: {torch_exc!r})"
        )
    # (c) a LossError
    assert isinstance(lk_exc, losskit.LossError), f"{type(lk_exc).__name__} is not a losskit.LossError: {lk_exc}"
    # (d) names the argument and the shapes / values involved
    message = str(lk_exc)
    missing = [f for f in fragments if f not in message]
    assert not missing, f"message {message!r} lacks {missing}"


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


# ------------------------------------------------------------------------------ nothing left half-done


def _scenarios():
    """(id, build(nn) -> (loss_fn, bad_kwargs, good_kwargs)) with float64 tensors; fresh per call."""

    def ce(nn):
        x = _logits(N, C, dtype=torch.float64)
        return (
            nn.CrossEntropyLoss(weight=torch.linspace(0.5, 2.0, C, dtype=torch.float64), label_smoothing=0.1),
            {"input": x, "target": _long([0, 5, 1])},
            {"input": x, "target": _y()},
        )

    def nll(nn):
        x = _logits(2, C, 3, dtype=torch.float64).log_softmax(1)
        return (
            nn.NLLLoss(ignore_index=2),
            {"input": x, "target": _long([[0, 1, 7], [2, 2, 2]])},
            {"input": x, "target": _long([[0, 1, 4], [2, 3, 2]])},
        )

    def bce(nn):
        t = _probs(3, 4).double()
        return (
            nn.BCELoss(weight=torch.linspace(0.5, 2.0, 4, dtype=torch.float64)),
            {"input": _probs(3, 4).double().mul(1.5), "target": t},
            {"input": _probs(3, 4).double().flip(1), "target": t},
        )

    def bce_logits(nn):
        x = _logits(3, 4, dtype=torch.float64)
        return (
            nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)),
            {"input": x, "target": _probs(3, 5).double()},
            {"input": x, "target": _probs(3, 4).double()},
        )

    def mlm(nn):
        x = _logits(2, 4, dtype=torch.float64)
        return (
            nn.MultiLabelMarginLoss(),
            {"input": x, "target": _two_rows([4, -1, 0, 0])},
            {
                "input": x,
                "target": _two_rows([3, 1, -1, 0]),
            },
        )

    def mse(nn):
        x, t = _logits(3, 4, dtype=torch.float64), _probs(3, 4).double()
        # torch 2.13's functional weight: bad size first, then a good one
        return (
            lambda **kw: nn.functional.mse_loss(**kw),
            {"input": x, "target": t, "weight": torch.ones(4, dtype=torch.float64)},
            {"input": x, "target": t, "weight": _probs(3, 4).double()},
        )

    return [("ce", ce), ("nll", nll), ("bce", bce), ("bce_logits", bce_logits), ("mlm", mlm), ("mse", mse)]


class _TorchNS:
    """torch's namespace shaped like losskit's: ``.functional`` and the module classes."""

    functional = TF

    def __getattr__(self, name):
        return getattr(tnn, name)


class _LosskitNS:
    functional = LF

    def __getattr__(self, name):
        return getattr(lnn, name)


@pytest.mark.parametrize(("name", "build"), _scenarios(), ids=[s[0] for s in _scenarios()])
def test_bad_call_leaves_nothing_half_done(name, build):
    loss_fn, bad, good = build(_LosskitNS())
    before = {k: v.clone() for k, v in bad.items()}
    state = {k: v.clone() for k, v in loss_fn.state_dict().items()} if isinstance(loss_fn, torch.nn.Module) else {}
    leaf = bad["input"].requires_grad_(True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(losskit.LossError):
            loss_fn(**bad)
    # the inputs and the module's buffers are untouched, no gradient was written
    assert leaf.grad is None
    for k, v in bad.items():
        assert torch.equal(v.detach(), before[k]), f"{name}: bad call modified {k!r}"
    if isinstance(loss_fn, torch.nn.Module):
        for k, v in loss_fn.state_dict().items():
            assert torch.equal(v, state[k]), f"{name}: bad call modified buffer {k!r}"

    # the same loss object then computes a good call exactly as torch does, value and gradient
    x = good["input"].detach().clone().requires_grad_(True)
    ours = loss_fn(**{**good, "input": x})
    ours.backward()
    ref_fn, _, ref_good = build(_TorchNS())
    xr = ref_good["input"].detach().clone().requires_grad_(True)
    ref = ref_fn(**{**ref_good, "input": xr})
    ref.backward()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-12, atol=1e-12)
    assert ref.item() != 0.0  # a meaningful comparison


# ------------------------------------------------------------------------------ python -O keeps checks

_OPTIMIZED_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    import losskit
    import losskit.functional as F

    print("optimize", sys.flags.optimize)
    caught = []
    for call in (
        lambda: F.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 3])),
        lambda: F.binary_cross_entropy(torch.tensor([1.5]), torch.tensor([1.0])),
        lambda: F.mse_loss(torch.zeros(3, 4), torch.zeros(3, 4), weight=torch.ones(4)),
    ):
        try:
            call()
        except losskit.LossError as exc:
            caught.append(type(exc).__name__)
    print("caught", ",".join(caught))
    F.huber_loss(torch.zeros(2), torch.zeros(2), delta=-1.5)
    print("not reached")
    """
)


def test_checks_survive_python_optimize():
    # -O strips every assert statement: the checks must not be asserts
    proc = subprocess.run([sys.executable, "-O", "-c", _OPTIMIZED_SCRIPT], capture_output=True, text=True, timeout=120)
    assert "optimize 1" in proc.stdout, proc.stdout + proc.stderr
    assert "caught LossIndexError,LossValueError,LossValueError" in proc.stdout, proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "not reached" not in proc.stdout
    assert "LossValueError" in proc.stderr and "'delta'" in proc.stderr and "-1.5" in proc.stderr, proc.stderr
