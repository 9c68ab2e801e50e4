"""Oracle tests for multilabel_margin_loss against torch 2.13."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import losskit.functional as LF
from helpers import DTYPES, LEGACY, assert_close_to, assert_matches_torch
from helpers import call_recording as _call_recording
from helpers import case_seed as _seed

pytestmark = pytest.mark.filterwarnings("error")

REDUCTIONS = ["none", "mean", "sum"]


# ------------------------------------------------------------------------------------ multilabel margin

# Target rows of 6 classes: the listed classes end at the first -1.
ML_ROWS = {
    "stop_then_classes": [3, 0, -1, 1, 5, 2],  # 1, 5, 2 look like classes but come after the -1
    "no_stop": [4, 1, 0, 2, 3, 5][:5] + [1],  # no -1 at all (and a repeat)
    "stop_first": [-1, 2, 3, 0, 1, 4],  # no targets: the loss is 0
    "duplicates": [2, 2, 5, 2, -1, 0],  # a class listed three times counts three times
    "single": [5, -1, -1, -1, -1, -1],
    "all_classes": [0, 1, 2, 3, 4, 5],  # every class is a target: nothing to rank against
    "stop_last": [1, 3, 4, 0, 2, -1],
}


def ml_input(shape, seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.round(torch.randn(shape, generator=g, dtype=torch.float64) * 32) / 32
    if x.numel() >= 6:
        xf = x.view(-1)
        xf[0] = xf[1] - 1.0  # a hinge exactly at its kink for some rows
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("row", list(ML_ROWS))
def test_multilabel_margin_vector_input(row, reduction, dtype):
    """Unbatched (C,) input and (C,) target: a 0-d loss."""
    x = ml_input((6,), _seed("mlv", row))
    t = torch.tensor(ML_ROWS[row])
    ours, _ = assert_matches_torch(
        LF.multilabel_margin_loss,
        TF.multilabel_margin_loss,
        {"input": x, "target": t},
        {"reduction": reduction},
        dtype=dtype,
        grad_wrt=("input",),
    )
    assert ours.shape == ()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("n", [1, 4, 7])
def test_multilabel_margin_batched(n, reduction, dtype):
    """(N, C) input; every target pattern appears across the rows."""
    rows = list(ML_ROWS.values())
    t = torch.tensor([rows[(i + n) % len(rows)] for i in range(n)])
    x = ml_input((n, 6), _seed("mlb", n))
    assert_matches_torch(
        LF.multilabel_margin_loss,
        TF.multilabel_margin_loss,
        {"input": x, "target": t},
        {"reduction": reduction},
        dtype=dtype,
        grad_wrt=("input",),
        seed=n,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("target", [0, -1])
def test_multilabel_margin_scalar_input(target, reduction):
    """A 0-d input (one class) with a 0-d target: torch gives a 0-d zero loss."""
    assert_matches_torch(
        LF.multilabel_margin_loss,
        TF.multilabel_margin_loss,
        {"input": torch.tensor(0.3, dtype=torch.float64), "target": torch.tensor(target)},
        {"reduction": reduction},
    )


def test_multilabel_margin_empty_batch_none():
    """(0, C) input with 'none' gives an empty (0,) loss (torch's 'mean'/'sum' of an empty batch read
    uninitialised memory in 2.13, so only 'none' is compared)."""
    x = torch.randn(0, 4, dtype=torch.float64)
    t = torch.zeros(0, 4, dtype=torch.int64)
    ours, ref = assert_matches_torch(
        LF.multilabel_margin_loss, TF.multilabel_margin_loss, {"input": x, "target": t}, {"reduction": "none"}
    )
    assert ref.shape == (0,)


def test_multilabel_margin_closed_form():
    """One row by hand: targets {3, 0} (the 1 after the -1 is ignored), C = 4."""
    x = torch.tensor([0.1, 0.2, 0.4, 0.8], dtype=torch.float64)
    t = torch.tensor([3, 0, -1, 1])
    # j=3: (1-0.8+0.2) + (1-0.8+0.4); j=0: (1-0.1+0.2) + (1-0.1+0.4); over C = 4
    expected = ((0.4 + 0.6) + (1.1 + 1.3)) / 4
    ours, ref = assert_matches_torch(LF.multilabel_margin_loss, TF.multilabel_margin_loss, {"input": x, "target": t})
    torch.testing.assert_close(ref, torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(ours, torch.tensor(expected, dtype=torch.float64))


@pytest.mark.parametrize("target", [[[1, -1, 7, 3]], [[1, -1, -2, 3]], [[0, 1, 2, -1], [2, -1, 4, 0]]], ids=str)
def test_multilabel_margin_out_of_range_after_stop_raises_like_torch(target):
    """torch 2.13 range-checks the whole target row (values in [-1, C)), even entries after the first -1."""
    x = torch.randn(len(target), 4, dtype=torch.float64)
    t = torch.tensor(target)
    with pytest.raises(RuntimeError):
        TF.multilabel_margin_loss(x, t)
    with pytest.raises(RuntimeError):
        LF.multilabel_margin_loss(x, t)


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
def test_multilabel_margin_legacy(legacy):
    size_average, reduce = legacy
    x = ml_input((3, 6), 9)
    t = torch.tensor(list(ML_ROWS.values())[:3])
    for reduction in REDUCTIONS:
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = _call_recording(LF.multilabel_margin_loss, x, t, **kw)
        ref, ref_w = _call_recording(TF.multilabel_margin_loss, x, t, **kw)
        assert ref_w and ours_w == ref_w
        assert_close_to(ours, ref, torch.float64)


def test_multilabel_margin_gradcheck():
    # scores spaced by 0.37 so that no hinge 1 - (x_j - x_i) sits at its kink
    x = (torch.arange(12, dtype=torch.float64).reshape(2, 6) * 0.37 % 1.9).requires_grad_()
    t = torch.tensor([[3, 0, -1, 1, 5, 2], [2, 2, 5, -1, 0, 0]])
    for reduction in REDUCTIONS:
        assert torch.autograd.gradcheck(lambda a, r=reduction: LF.multilabel_margin_loss(a, t, reduction=r), (x,))


@st.composite
def _multilabel_case(draw):
    n = draw(st.integers(1, 5))
    c = draw(st.integers(1, 7))
    rows = []
    for _ in range(n):
        k = draw(st.integers(0, c))  # the number of listed classes before the stop
        listed = draw(st.lists(st.integers(0, c - 1), min_size=k, max_size=k))
        if k < c:
            pad = draw(st.lists(st.integers(-1, c - 1), min_size=c - k - 1, max_size=c - k - 1))
            rows.append([*listed, -1, *pad])
        else:
            rows.append(listed)
    return n, c, rows


@settings(max_examples=200)
@given(
    case=_multilabel_case(),
    unbatched=st.booleans(),
    reduction=st.sampled_from(REDUCTIONS),
    seed=st.integers(0, 2**31 - 1),
)
def test_property_multilabel_margin(case, unbatched, reduction, seed):
    n, c, rows = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g, dtype=torch.float64)
    t = torch.tensor(rows, dtype=torch.int64).reshape(n, c)
    if unbatched:
        x, t = x[0], t[0]
    assert_matches_torch(
        LF.multilabel_margin_loss,
        TF.multilabel_margin_loss,
        {"input": x, "target": t},
        {"reduction": reduction},
        grad_wrt=("input",),
        seed=seed % 1000,
    )
