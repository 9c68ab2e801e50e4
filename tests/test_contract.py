"""The contract every loss of the catalog passes, written once (kornia's BaseTester style).

For each :func:`losskit._catalog.entries` entry, against torch's loss of the same name:

* signature: the function's and the module constructor's parameters (names, kinds, defaults) equal torch's,
  apart from keyword-only extras the entry declares;
* value: the entry's sample problem, every reduction and every option set, float64, equals torch's (values,
  dtype, shape) and so does every input gradient;
* module == functional: the module built with the same options returns the function's result, is a torch
  ``_Loss`` (framework ``isinstance`` checks hold) and has torch's ``state_dict`` keys;
* gradcheck in float64 on a small problem;
* bad input: a non-tensor input or an unknown reduction raises a ``LossError`` that is also torch's type and
  names the argument.

A new loss file is covered by adding its ``CATALOG``; nothing here lists losses.
"""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn.functional as TF

import losskit
import losskit.functional as LF
import losskit.nn as LNN
from helpers import assert_matches_torch
from losskit import _catalog

ENTRIES = _catalog.entries()
IDS = [e.name for e in ENTRIES]


def _problem(entry, dtype=torch.float64, shape=(5, 4), seed=0):
    return entry.sample(shape, dtype, torch.Generator().manual_seed(seed))


def _names(fn, count):
    return list(inspect.signature(fn).parameters)[:count]


def _quiet():
    warnings.filterwarnings("ignore", message="reduction: 'mean' divides", category=UserWarning)
    warnings.filterwarnings("ignore", message="Using a target size", category=UserWarning)


def _params(fn, drop=()):
    return [(p.name, p.kind, p.default) for p in inspect.signature(fn).parameters.values() if p.name not in drop]


def _same_params(ours, ref, what):
    assert [p[:2] for p in ours] == [p[:2] for p in ref], f"{what}: {ours} != torch's {ref}"
    for (name, _, od), (_, _, rd) in zip(ours, ref, strict=True):
        assert od is rd or (type(od) is type(rd) and od == rd), f"{what}: default of {name!r} {od!r} != {rd!r}"


def test_catalog_lists_every_public_loss_once():
    names = [e.name for e in ENTRIES]
    assert len(names) == len(set(names))
    assert set(names) == set(LF.REPLACED), "functional's re-exports and the catalog differ"
    modules = {e.module.__name__ for e in ENTRIES if e.module is not None}
    assert modules <= set(LNN.REPLACED)
    for entry in ENTRIES:
        assert getattr(LF, entry.name) is entry.function
        assert entry.family in _catalog.FAMILIES
        for alias in entry.aliases:
            assert _catalog.get(alias) is entry


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_signatures_are_torchs(entry):
    _same_params(_params(entry.function, entry.extras), _params(getattr(TF, entry.name)), entry.name)
    for extra in entry.extras:
        assert inspect.signature(entry.function).parameters[extra].kind is inspect.Parameter.KEYWORD_ONLY
    if entry.module is not None:
        torch_module = getattr(torch.nn, entry.module.__name__)
        ours = _params(entry.module.__init__, entry.extras)
        _same_params(ours, _params(torch_module.__init__), entry.module.__name__)


def _cases():
    for entry in ENTRIES:
        for reduction in entry.reductions:
            for i, options in enumerate(entry.options):
                yield pytest.param(entry, reduction, options, id=f"{entry.name}-{reduction}-{i}")


@pytest.mark.parametrize(("entry", "reduction", "options"), list(_cases()))
def test_value_and_gradients_match_torch_in_float64(entry, reduction, options):
    problem = _problem(entry)
    names = _names(getattr(TF, entry.name), len(problem.args))
    inputs = dict(zip(names, problem.args, strict=True))
    with warnings.catch_warnings():
        _quiet()
        assert_matches_torch(
            getattr(LF, entry.name),
            getattr(TF, entry.name),
            inputs,
            {"reduction": reduction, **options},
            grad_wrt=tuple(names[: problem.differentiable]),
        )


@pytest.mark.parametrize(("entry", "reduction", "options"), list(_cases()))
def test_module_equals_function(entry, reduction, options):
    if entry.module is None or not entry.module_mirrors_function:
        pytest.skip(f"{entry.name}'s module owns parameters of its own (tested in its file)")
    problem = _problem(entry, seed=1)
    with warnings.catch_warnings():
        _quiet()
        module = entry.module(reduction=reduction, **options)
        expected = entry.function(*problem.args, reduction=reduction, **options)
        got = module(*problem.args)
        torch_module = getattr(torch.nn, entry.module.__name__)(reduction=reduction, **options)
    torch.testing.assert_close(got, expected, rtol=0, atol=0, equal_nan=True)
    assert isinstance(module, torch.nn.modules.loss._Loss)
    assert module.state_dict().keys() == torch_module.state_dict().keys()
    assert module.reduction == torch_module.reduction


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_gradcheck(entry):
    if not entry.gradcheck:
        pytest.skip(f"{entry.name}: torch's gradient is not the derivative of the raw inputs (tested in its file)")
    problem = _problem(entry, shape=(3, 4), seed=2)
    k = problem.differentiable
    leaves = tuple(a.detach().clone().requires_grad_() for a in problem.args[:k])
    rest = problem.args[k:]
    for reduction in entry.reductions:
        with warnings.catch_warnings():
            _quiet()
            assert torch.autograd.gradcheck(
                lambda *xs, r=reduction: entry.function(*xs, *rest, reduction=r), leaves, eps=1e-6, atol=1e-6
            ), (entry.name, reduction)


@pytest.mark.parametrize("entry", ENTRIES, ids=IDS)
def test_bad_input_is_a_clear_error_of_torchs_type(entry):
    problem = _problem(entry)
    first = _names(entry.function, 1)[0]
    with pytest.raises(losskit.LossError, match=f"'{first}'") as ours:
        entry.function([1.0, 2.0], *problem.args[1:])
    with pytest.raises(Exception) as theirs:
        getattr(TF, entry.name)([1.0, 2.0], *problem.args[1:])
    # torch fails with an AttributeError/TypeError on a list; ours is a TypeError naming the argument
    assert isinstance(ours.value, TypeError), type(ours.value)
    assert isinstance(theirs.value, (TypeError, AttributeError))
    with pytest.raises(losskit.LossError, match="reduction") as ours:
        entry.function(*problem.args, reduction="average")
    with pytest.raises(Exception) as theirs:
        getattr(TF, entry.name)(*problem.args, reduction="average")
    assert isinstance(ours.value, type(theirs.value)), (type(ours.value), type(theirs.value))


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.legacy], ids=[e.name for e in ENTRIES if e.legacy])
def test_legacy_reduction_arguments_warn_and_win(entry):
    problem = _problem(entry, seed=3)
    with pytest.warns(UserWarning, match="size_average and reduce args will be deprecated"):
        ours = entry.function(*problem.args, size_average=False, reduction="mean")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = getattr(TF, entry.name)(*problem.args, size_average=False, reduction="mean")
    torch.testing.assert_close(ours, ref, equal_nan=True)
