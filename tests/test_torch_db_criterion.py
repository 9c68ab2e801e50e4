"""losskit against torch's older loss test lists in ``torch.testing._internal.common_nn``:

* ``criterion_tests``: in torch 2.13 the ``<Loss>_no_batch_dim_<reduction>`` entries (an unbatched input and
  target through ``nn.<Loss>(reduction=...)``); the module is built by the entry's own constructor with
  ``common_nn.nn`` pointing at :mod:`losskit.nn`;
* the loss entries of ``get_new_module_tests()``: ``<Loss>_no_reduce`` and friends, each a torch module wrapping
  a call of ``F.<loss>(input, <fixed target>, ...)``; losskit runs the same module with ``common_nn.F`` pointing at
  :mod:`losskit.functional`.

Each entry's input (and target) is made once by torch's own ``CriterionTest`` / ``NewModuleTest`` argument rules,
then cast to float64 and to float32 (complex inputs to complex128 / complex64); value and every input gradient
are compared by :func:`torch_db.compare_call`. An entry that reaches no losskit loss is skipped with its reason,
counted in the tally (``-s`` prints it).

Note: torch's ``criterion_tests`` constructors close over the loop variable ``reduction`` late, so every
``*_no_batch_dim_{none,mean}`` entry in fact builds its loss with ``reduction='sum'`` (as in torch's own run of
them). So each criterion entry runs twice: as torch builds it (kind ``criterion``) and with the reduction its
name says, ``nn.<Loss>(reduction=...)`` of torch and of losskit (kind ``criterion_named``).
"""

from __future__ import annotations

import contextlib
import warnings
from unittest import mock

import pytest
import torch

import losskit.functional as LF
import losskit.nn as LNN
import torch_db

pytest.importorskip("expecttest")

from torch.testing._internal import common_nn  # noqa: E402  (needs expecttest)

DTYPES = (torch.float64, torch.float32)
KINDS = ("criterion", "criterion_named", "new_module")


def _is_loss_entry(entry: dict) -> bool:
    name = entry.get("fullname") or entry.get("module_name") or ""
    return "loss" in name.lower()


@contextlib.contextmanager
def _seed(seed: int = 0):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        yield


def _entries() -> list[tuple[str, str, dict]]:
    """(source, fullname, entry) for every loss entry; the new-module list is built once, seeded (its targets
    are drawn when the list is made)."""
    with warnings.catch_warnings(), _seed():
        warnings.simplefilter("ignore")
        new = [e for e in common_nn.get_new_module_tests() if _is_loss_entry(e)]
    out = [("criterion", e["fullname"], e) for e in common_nn.criterion_tests if _is_loss_entry(e)]
    out += [("new_module", e.get("fullname") or e["module_name"], e) for e in new]
    return out


ENTRIES = _entries()


def loss_name(fullname: str) -> str:
    """The torch.nn class an entry tests: ``BCELoss_no_reduce`` -> ``BCELoss``, ``multimarginloss_1d...`` ->
    ``MultiMarginLoss``, ``NLLLoss2d_no_reduce`` -> ``NLLLoss2d``."""
    head = fullname.split("_")[0]
    for cls in dir(torch.nn):
        if cls.lower() == head.lower():
            return cls
    return head


class _RecordingFunctional:
    """``losskit.functional`` that records which names were looked up (to tell whether a losskit loss ran)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __getattr__(self, name: str):
        self.used.add(name)
        return getattr(LF, name)

    def losskit_used(self) -> bool:
        return any(getattr(getattr(LF, n), "__module__", "").startswith("losskit") for n in self.used)


def _cast(value, dtype: torch.dtype):
    """Floating tensors to ``dtype``, complex to its complex counterpart, others kept; requires_grad kept."""
    if isinstance(value, torch.Tensor):
        t = value.detach()
        if t.is_floating_point():
            t = t.to(dtype)
        elif t.is_complex():
            t = t.to(torch.complex128 if dtype == torch.float64 else torch.complex64)
        return t.requires_grad_(value.requires_grad)
    if isinstance(value, (list, tuple)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _inputs(source: str, entry: dict):
    """The entry's (test object, call arguments) by torch's own rules: input (floating inputs require grad),
    then the target for criterion entries."""
    kwargs = {k: v for k, v in entry.items() if k != "fullname"}
    if source == "criterion":
        test = common_nn.CriterionTest(fullname=entry["fullname"], **kwargs)
    else:
        test = common_nn.NewModuleTest(fullname=entry.get("fullname"), **kwargs)
    with common_nn.set_default_dtype(entry.get("default_dtype") or torch.float64), _seed(1):
        inp = test._get_input()
        args = tuple(inp) if isinstance(inp, tuple) else (inp,)
        if source == "criterion":
            args = (*args, test._get_target())
    return test, args


def _params():
    out = []
    for source, fullname, entry in ENTRIES:
        for dtype in DTYPES:
            out.append(pytest.param(source, fullname, entry, dtype, id=f"{fullname}-{str(dtype)[6:]}"))
            if source == "criterion":
                named = pytest.param("criterion_named", fullname, entry, dtype, id=f"{fullname}-named-{str(dtype)[6:]}")
                out.append(named)
    return out


def _named_reduction(fullname: str) -> str:
    return fullname.rsplit("_", 1)[1]


@pytest.mark.parametrize(("source", "fullname", "entry", "dtype"), _params())
def test_criterion_entry(source, fullname, entry, dtype):
    key = (loss_name(fullname), dtype, source)
    test, args = _inputs("new_module" if source == "new_module" else "criterion", entry)
    args = _cast(args, dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if source == "criterion_named":
            reduction = _named_reduction(fullname)
            theirs = getattr(torch.nn, key[0])(reduction=reduction)
            ours_module = getattr(LNN, key[0])(reduction=reduction)
        else:
            theirs = test.constructor(*test.constructor_args)
        if source == "criterion":
            with mock.patch.object(common_nn, "nn", LNN):
                ours_module = test.constructor(*test.constructor_args)
        if source != "new_module":
            if not type(ours_module).__module__.startswith("losskit"):
                torch_db.TALLY.skip(key, f"losskit has no {type(ours_module).__name__}")
                pytest.skip(f"losskit has no {type(ours_module).__name__}")
            ours = ours_module
            recorder = None
        else:
            recorder = _RecordingFunctional()

            def ours(*a):
                with mock.patch.object(common_nn, "F", recorder):
                    return theirs(*a)

        why = torch_db.compare_call(ours, theirs, args, {}, dtype)
    if recorder is not None and not recorder.losskit_used():
        torch_db.TALLY.skip(key, f"calls no losskit loss ({sorted(recorder.used)})")
        pytest.skip("the entry calls no losskit loss")
    if why == "torch-raises":
        torch_db.TALLY.skip(key, "torch raises")
        pytest.skip("torch raises on this entry")
    torch_db.TALLY.record(key, why is None, why or "")
    assert why is None, why


def test_entries_found():
    """torch 2.13 has 48 criterion_tests (16 losses x 3 'reductions') and 50 loss entries in
    get_new_module_tests(); a torch that drops or renames them should be noticed, not pass silently."""
    assert sum(s == "criterion" for s, _, _ in ENTRIES) >= 40
    assert sum(s == "new_module" for s, _, _ in ENTRIES) >= 40


def test_zz_criterion_summary(capsys):
    """Prints the tally of this file (run with ``-s``): entries compared / matched / skipped per loss and dtype."""
    with capsys.disabled():
        print("\n" + "\n".join(torch_db.TALLY.lines(kinds=KINDS)))
    assert sum(v for k, v in torch_db.TALLY.compared.items() if k[2] in KINDS) > 0
