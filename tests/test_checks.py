"""The bad-input catalog: every bad call raises a clear losskit error of the type torch raises.

The catalog is split by the kind of check that raises, as ``losskit/_checks/`` is: ``test_checks_classes.py``,
``test_checks_tensors.py``, ``test_checks_scalars.py`` (their shared pieces are in ``checks_helpers.py``).
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

import pytest
import torch
import torch.nn as tnn
import torch.nn.functional as TF

import losskit
import losskit.functional as LF
import losskit.nn as lnn
from checks_helpers import (
    C,
    N,
    _logits,
    _long,
    _probs,
    _two_rows,
    _y,
)
from test_checks_classes import CASES as CLASS_CASES
from test_checks_scalars import CASES as SCALAR_CASES
from test_checks_tensors import CASES as TENSOR_CASES

CASES = [*CLASS_CASES, *TENSOR_CASES, *SCALAR_CASES]


def test_catalog_size():
    # the brief asks for at least 40 cases; every case has an argument name and at least one more fragment
    # unless the argument's value alone identifies the problem
    assert len(CASES) >= 40
    ids = [p.id for p in CASES]
    assert len(ids) == len(set(ids))
    assert all(p.values[2] for p in CASES)


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
