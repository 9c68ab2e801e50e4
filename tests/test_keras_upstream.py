"""Keras' own loss tests, run against losskit.keras.

The installed wheel ships ``keras/src/losses/losses_test.py`` and ``loss_test.py``. A private copy of each module
is loaded twice, its ``losses`` / ``losses_module`` / ``Loss`` names pointing at losskit instead of Keras:

* ``numpy`` mode: the test methods run as written (numpy arrays and Python lists into losskit);
* ``torch`` mode: every numpy array reaching a losskit loss becomes a torch tensor of the same dtype first.

Each losskit class seen by the tests is a thin subclass whose ``__call__`` also runs the installed Keras class
(built with the same arguments) on the test's own inputs and compares shape, dtype and values (the second
oracle), so every case checks Keras' expected numbers AND Keras' actual output. The functions likewise. Each Keras
``TestCase`` class becomes a test class here (``TestKeras<Name>_<mode>``), every test method runs with Keras'
assertions and tolerances; ``SKIPPED_BY_KERAS`` lists the methods Keras itself skips on the torch backend.
"""

from __future__ import annotations

import collections
import inspect
import unittest

import pytest
import torch

from keras_helpers import compare_with_keras, keras_or_skip, keras_test_module, to_torch

keras = keras_or_skip()

import losskit.keras as LK  # noqa: E402
from losskit.keras import base as LK_base  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::SyntaxWarning")

CALLS: collections.Counter = collections.Counter()  # comparisons with the installed Keras, per class/function

# methods Keras' own file marks skipif(backend == "torch") (bfloat16 binary cross entropy in torch)
SKIPPED_BY_KERAS = {"BinaryCrossentropyTest.test_dtype_arg", "BinaryFocalCrossentropyTest.test_dtype_arg"}


def _keras_call(ref_fn, args, kwargs):
    """Keras on the test's own inputs; a few Keras functions reject numpy inputs (``ndarray * Tensor``), so
    those get torch tensors."""
    try:
        return ref_fn(*args, **kwargs)
    except TypeError:
        return ref_fn(*[to_torch(a) for a in args], **{k: to_torch(v) for k, v in kwargs.items()})


def _shim_class(name: str, mode: str):
    ours_cls = getattr(LK, name)
    ref_cls = getattr(keras.losses, name)

    def __init__(self, *args, **kwargs):
        ours_cls.__init__(self, *args, **kwargs)
        self._ref = ref_cls(*args, **kwargs)

    def __call__(self, y_true, y_pred, sample_weight=None):
        convert = to_torch if mode == "torch" else (lambda v: v)
        ours = ours_cls.__call__(self, convert(y_true), convert(y_pred), sample_weight=convert(sample_weight))
        ref = _keras_call(self._ref, (y_true, y_pred), {"sample_weight": sample_weight})
        compare_with_keras(ours, ref, f"{name}({self._ref.get_config()})")
        CALLS[name] += 1
        return ours

    shim = type(name, (ours_cls,), {"__init__": __init__, "__call__": __call__, "__module__": __name__})
    keras.saving.register_keras_serializable(package=f"losskit_upstream_{mode}", name=name)(shim)
    return shim


def _shim_function(name: str, mode: str):
    ours_fn = getattr(LK, name)
    ref_fn = getattr(keras.losses, name)

    def fn(*args, **kwargs):
        convert = to_torch if mode == "torch" else (lambda v: v)
        ours = ours_fn(*[convert(a) for a in args], **{k: convert(v) for k, v in kwargs.items()})
        compare_with_keras(ours, _keras_call(ref_fn, args, kwargs), name)
        CALLS[name] += 1
        return ours

    fn.__name__ = name
    return fn


def _losses_namespace(mode: str) -> types_namespace:
    names = [n for n in LK.__all__ if n not in ("Loss", "get", "serialize", "deserialize")]
    space = {n: (_shim_class if n[0].isupper() else _shim_function)(n, mode) for n in names}
    return types_namespace(**space)


class types_namespace(dict):  # noqa: N801 - a module-like namespace: attributes are the entries
    __getattr__ = dict.__getitem__


def _loss_test_patches(module, mode: str):
    """loss_test.py: its ``ExampleLoss`` subclasses losskit's ``Loss`` (and is checked against Keras' own
    ``ExampleLoss``); ``losses_module`` is losskit.keras; ``squeeze_or_expand_to_same_rank`` losskit's."""
    keras_example = module.ExampleLoss

    class ExampleLoss(LK.Loss):
        call = keras_example.call

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._ref = keras_example(*args, **kwargs)

        def __call__(self, y_true, y_pred, sample_weight=None):
            convert = to_torch if mode == "torch" else (lambda v: v)
            ours = super().__call__(convert(y_true), convert(y_pred), sample_weight=convert(sample_weight))
            compare_with_keras(ours, self._ref(y_true, y_pred, sample_weight=sample_weight), "ExampleLoss")
            CALLS["Loss"] += 1
            return ours

    module.ExampleLoss = ExampleLoss
    module.Loss = LK.Loss
    module.losses_module = LK
    module.squeeze_or_expand_to_same_rank = LK_base.squeeze_or_expand


# losskit's configs keep three arguments Keras' drop (so a saved model keeps its loss): Keras' own test_config
# for these asserts the config without them; here the extra key must carry the argument, the rest match Keras.
DOCUMENTED_EXTRAS = {"HuberLossTest.test_config": {"delta": 1.0}, "CosineSimilarityTest.test_config": {"axis": 2}}


def _with_documented_extras(method, extras):
    def test(self):
        real = self.assertEqual

        def assert_equal(first, second, msg=None):
            if isinstance(first, dict) and isinstance(second, dict) and not set(extras) & set(second):
                first = dict(first)
                for key, value in extras.items():
                    real(first.pop(key), value, f"documented extra config key {key!r}")
            real(first, second, msg)

        self.assertEqual = assert_equal
        method(self)

    return test


def _test_classes(module):
    return {
        name: obj
        for name, obj in vars(module).items()
        if inspect.isclass(obj) and issubclass(obj, unittest.TestCase) and obj.__module__ == module.__name__
    }


KERAS_CLASSES: dict[str, list[str]] = {}  # Keras' test class -> its test methods (for the coverage check)

for _mode in ("numpy", "torch"):
    _losses_test = keras_test_module(keras, "losses_test", f"_losskit_upstream_losses_test_{_mode}")
    _losses_test.losses = _losses_namespace(_mode)
    _loss_test = keras_test_module(keras, "loss_test", f"_losskit_upstream_loss_test_{_mode}")
    _loss_test_patches(_loss_test, _mode)
    for _module in (_losses_test, _loss_test):
        for _name, _cls in _test_classes(_module).items():
            KERAS_CLASSES[_name] = [m for m in dir(_cls) if m.startswith("test")]
            _body = {
                key.split(".")[1]: _with_documented_extras(getattr(_cls, key.split(".")[1]), extras)
                for key, extras in DOCUMENTED_EXTRAS.items()
                if key.split(".")[0] == _name
            }
            globals()[f"TestKeras{_name}_{_mode}"] = type(f"TestKeras{_name}_{_mode}", (_cls,), _body)


def test_every_keras_loss_class_has_its_keras_tests():
    """Keras' suite covers each of the 22 classes and the base class: a test class per loss class."""
    tested = {name.removesuffix("Test") for name in KERAS_CLASSES}
    tested = {"Huber" if n == "HuberLoss" else n for n in tested}
    classes = {n for n in LK.__all__ if n[0].isupper() and n != "Loss"}
    assert classes <= tested, classes - tested
    assert "LossTest" in KERAS_CLASSES
    assert sum(len(v) for v in KERAS_CLASSES.values()) >= 170


def test_shim_compares_with_keras_and_fails_on_a_wrong_value(monkeypatch):
    """The second oracle is live: a losskit that is off by 1e-3 fails the comparison."""
    space = _losses_namespace("numpy")
    y_true, y_pred = [[0.0, 1.0]], [[0.6, 0.4]]
    space.MeanSquaredError()(y_true, y_pred)
    real = LK.regression._mse
    monkeypatch.setattr(LK.regression, "_mse", lambda *a: real(*a) + 1e-3)
    with pytest.raises(AssertionError):
        space.MeanSquaredError()(y_true, y_pred)
    with pytest.raises(AssertionError):
        space.mean_squared_error(y_true, torch.tensor(y_pred))
