"""The tiny tensors, the catalog row maker and the bad-input assertion of the ``test_checks*.py`` files.

The bad-input catalog is split by the kind of check that raises, as ``losskit/_checks/`` is:
``test_checks_classes.py`` (class targets and class weights), ``test_checks_tensors.py`` (tensor types,
dtypes, shapes, value ranges), ``test_checks_scalars.py`` (reduction and the scalar options); what holds for
the whole catalog (its size, unique ids), a bad call leaving nothing half-done and ``python -O`` are in
``test_checks.py``. See that file's docstring for what each case asserts.
"""

from __future__ import annotations

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


def loss_function(fn: str) -> Call:
    """``f(F)``: the loss function named ``fn`` in the namespace ``F`` (torch's or losskit's functional)."""

    def f(F):
        return getattr(F, fn)

    return f


def _case(case_id: str, call: Call, fragments: tuple[str, ...], *, torch_raises: bool = True, marks=()):
    """One catalog row: ``(id, callable_for_losskit, callable_for_torch, fragments)`` as a pytest param."""

    def lk() -> object:
        return call(LF, lnn)

    def th() -> object:
        return call(TF, tnn)

    return pytest.param(lk, th if torch_raises else None, fragments, id=case_id, marks=marks)


def _two_rows(values) -> torch.Tensor:
    """A (2, 4) multilabel target: the given first row, then a good row [0, -1, 0, 0]."""
    return _long([values, [0, -1, 0, 0]])


def _raised(call: Callable[[], object]) -> BaseException | None:
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - any exception is what we are after
        return exc
    return None


def assert_bad_input(lk_call, torch_call, fragments) -> None:
    """(a) losskit raises, (b) an instance of what torch raises, (c) a LossError, (d) naming what is wrong."""
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
