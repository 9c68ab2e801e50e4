"""losskit.keras.saving: get / serialize / deserialize, and losskit's losses in Keras itself: registered
serialization, model.save + keras.models.load_model without custom_objects, training, class_weight."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
import torch

from keras_helpers import keras_or_skip

keras = keras_or_skip()
np = pytest.importorskip("numpy")

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402
from losskit.keras import saving  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")

CLASSES = [n for n in LK.__all__ if n[0].isupper() and n != "Loss"]
FUNCTIONS = [n for n in LK.__all__ if n[0].islower() and n not in ("get", "serialize", "deserialize")]
# keys losskit's configs have beyond Keras 3.15's (Keras drops these arguments, so a loaded model would change)
EXTRA_KEYS = {"Huber": {"delta"}, "CosineSimilarity": {"axis"}, "SparseCategoricalCrossentropy": {"axis"}}


def test_the_same_names_as_keras_losses():
    keras_names = {n for n in dir(keras.losses) if not n.startswith("_")}
    assert set(LK.__all__) == keras_names, set(LK.__all__) ^ keras_names
    assert len(CLASSES) == 22 and len(FUNCTIONS) == 22


@pytest.mark.parametrize("name", CLASSES + FUNCTIONS)
def test_signature_like_keras(name):
    ours, ref = inspect.signature(getattr(LK, name)), inspect.signature(getattr(keras.losses, name))
    assert [(p.name, p.default, p.kind) for p in ours.parameters.values()] == [
        (p.name, p.default, p.kind) for p in ref.parameters.values()
    ]


@pytest.mark.parametrize("name", CLASSES)
def test_config_keys_like_keras(name):
    ours, ref = getattr(LK, name)().get_config(), getattr(keras.losses, name)().get_config()
    assert set(ours) == set(ref) | EXTRA_KEYS.get(name, set())
    assert "dtype" not in ours
    assert {k: v for k, v in ours.items() if k in ref} == ref


def test_aliases_are_keras_aliases():
    from keras.src.losses import ALL_OBJECTS_DICT

    aliases = {k for k, v in ALL_OBJECTS_DICT.items() if k != v.__name__}
    assert aliases == set(saving.KERAS_ALIASES)
    for alias, name in saving.KERAS_ALIASES.items():
        assert LK.get(alias) is getattr(LK, name)
        assert ALL_OBJECTS_DICT[alias].__name__ == name
    with pytest.raises(ValueError, match="Could not interpret loss identifier"):
        LK.get("logcosh")  # not a Keras 3.15 name
    with pytest.raises(ValueError):
        keras.losses.get("logcosh")


def test_get_like_keras():
    assert LK.get(None) is None
    assert isinstance(LK.get("Huber"), LK.Huber)
    assert LK.get(LK.huber) is LK.huber
    loss = LK.get({"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}})
    assert isinstance(loss, LK.CategoricalCrossentropy) and loss.from_logits
    with pytest.raises(losskit.LossValueError, match="Could not interpret loss identifier"):
        LK.get("typo")
    with pytest.raises(losskit.LossValueError, match="Could not interpret loss identifier"):
        LK.get(3)


@pytest.mark.parametrize("name", CLASSES)
def test_class_round_trips_through_keras(name):
    loss = getattr(LK, name)(reduction="sum", name="mine")
    serialized = keras.saving.serialize_keras_object(loss)
    assert serialized == LK.serialize(loss)
    assert serialized["registered_name"] == f"losskit>{name}"
    for revived in (
        keras.saving.deserialize_keras_object(serialized),
        keras.losses.deserialize(keras.losses.serialize(loss)),
        keras.losses.get(serialized),
        LK.deserialize(serialized),
    ):
        assert type(revived) is type(loss)
        assert revived.get_config() == loss.get_config()


@pytest.mark.parametrize("name", FUNCTIONS)
def test_function_round_trips_through_keras(name):
    fn = getattr(LK, name)
    serialized = keras.saving.serialize_keras_object(fn)
    assert serialized == LK.serialize(fn)
    assert keras.saving.deserialize_keras_object(serialized) is fn
    assert keras.losses.deserialize(serialized) is fn
    assert LK.deserialize(serialized) is fn


def test_huber_returns_losskits_class_with_its_delta():
    revived = keras.losses.deserialize(keras.losses.serialize(LK.Huber(delta=0.25)))
    assert type(revived) is LK.Huber and revived.delta == 0.25


def test_pickle_round_trip():
    import pickle

    loss = LK.CategoricalFocalCrossentropy(gamma=1.0, from_logits=True)
    again = pickle.loads(pickle.dumps(loss))
    assert type(again) is LK.CategoricalFocalCrossentropy and again.get_config() == loss.get_config()
    assert pickle.loads(pickle.dumps(LK.huber)) is LK.huber


def test_deserialize_errors():
    with pytest.raises(losskit.LossValueError, match="unknown loss"):
        LK.deserialize({"class_name": "Nope", "config": {}})
    with pytest.raises(losskit.LossTypeError, match="'config'"):
        LK.deserialize(42)


# --------------------------------------------------------------------------------------------- models


def _data(name: str, seed: int = 0):
    """(model, x, y, loss) for a class: a small model whose output suits the loss."""
    rng = np.random.RandomState(seed)
    x = rng.randn(64, 6).astype("float32")
    w = rng.randn(6, 4).astype("float32")
    labels = (x @ w).argmax(1)
    onehot = np.eye(4, dtype="float32")[labels]
    dense = keras.layers.Dense
    kind = {
        "CategoricalCrossentropy": ("logits", onehot, {"from_logits": True}),
        "CategoricalFocalCrossentropy": ("logits", onehot, {"from_logits": True}),
        "SparseCategoricalCrossentropy": ("logits", labels, {"from_logits": True}),
        "CategoricalGeneralizedCrossEntropy": ("softmax", labels, {}),
        "CategoricalHinge": ("linear", onehot, {}),
        "KLDivergence": ("softmax", onehot * 0.9 + 0.025, {}),
        "Poisson": ("softplus", onehot * 3, {}),
        "CosineSimilarity": ("linear", onehot, {}),
        "BinaryCrossentropy": ("sigmoid", onehot, {}),
        "BinaryFocalCrossentropy": ("logits", onehot, {"from_logits": True, "apply_class_balancing": True}),
        "Hinge": ("linear", onehot, {}),
        "SquaredHinge": ("linear", onehot, {}),
        "Dice": ("sigmoid", onehot, {"axis": 1}),
        "Tversky": ("sigmoid", onehot, {"axis": 1, "alpha": 0.3, "beta": 0.7}),
        "MeanSquaredLogarithmicError": ("softplus", onehot * 3, {}),
        "MeanAbsolutePercentageError": ("linear", onehot + 1.0, {}),
        "Huber": ("linear", x @ w, {"delta": 0.5}),
    }.get(name, ("linear", x @ w, {}))
    activation, y, kwargs = kind
    if name == "Circle":
        model = keras.Sequential([keras.Input((6,)), dense(8), keras.layers.UnitNormalization()])
        return model, x, labels, LK.Circle(gamma=16.0)
    if name == "CTC":
        xs = rng.randn(32, 12, 5).astype("float32")
        ys = rng.randint(1, 4, (32, 4))
        ys[::3, 2:] = 0
        model = keras.Sequential([keras.Input((12, 5)), dense(16, activation="relu"), dense(4)])
        return model, xs, ys, LK.CTC()
    act = None if activation in ("logits", "linear") else activation
    model = keras.Sequential([keras.Input((6,)), dense(4, activation=act)])
    return model, x, y, getattr(LK, name)(**kwargs)


@pytest.mark.parametrize("name", CLASSES)
def test_model_trains_saves_and_loads_without_custom_objects(name, tmp_path):
    keras.utils.set_random_seed(0)
    model, x, y, loss = _data(name)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.05), loss=loss)
    before = model.evaluate(x, y, batch_size=len(x), verbose=0)
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0, shuffle=False).history["loss"]
    after = model.evaluate(x, y, batch_size=len(x), verbose=0)
    assert np.isfinite(history).all() and after < before, (before, history, after)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.loss) is type(loss) and loaded.loss.get_config() == loss.get_config()
    assert abs(loaded.evaluate(x, y, batch_size=len(x), verbose=0) - after) <= 1e-5 * max(1.0, abs(after))


@pytest.mark.parametrize(
    "name, kwargs", [("SparseCategoricalCrossentropy", {"from_logits": True}), ("CategoricalFocalCrossentropy", {})]
)
def test_class_weight_and_sample_weight_equal_keras(name, kwargs):
    """fit(class_weight=...) and evaluate(sample_weight=...) with the default reduction: the same numbers as
    the same model with Keras' own loss (losskit's losses are keras.losses.Loss instances once Keras is in)."""
    model, x, y, _ = _data(name)
    if name == "CategoricalFocalCrossentropy":
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="softmax")])
    weights = model.get_weights()
    histories, evaluations = [], []
    for loss in (getattr(LK, name)(**kwargs), getattr(keras.losses, name)(**kwargs)):
        keras.utils.set_random_seed(0)
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=loss)
        fit = model.fit(x, y, epochs=3, batch_size=16, verbose=0, shuffle=False, class_weight={0: 0.2, 1: 3.0, 3: 0.5})
        histories.append(fit.history["loss"])
        sw = np.linspace(0.0, 2.0, len(x)).astype("float32")
        evaluations.append(model.evaluate(x, y, sample_weight=sw, batch_size=len(x), verbose=0))
    np.testing.assert_allclose(histories[0], histories[1], rtol=1e-5)
    np.testing.assert_allclose(evaluations[0], evaluations[1], rtol=1e-5)


def test_registration_when_keras_is_imported_after_losskit(tmp_path):
    """A fresh process: import losskit.keras (no keras yet), then keras; a model saved with losskit's loss
    loads without custom_objects, and Keras treats losskit's losses as its own."""
    code = f"""
import os, sys
os.environ["KERAS_BACKEND"] = "torch"
import numpy as np
import losskit.keras as LK
assert "keras" not in sys.modules
import keras
assert isinstance(LK.Huber(), keras.losses.Loss)
model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
model.compile(loss=LK.Huber(delta=0.5))
model.save({str(tmp_path / "m.keras")!r})
loaded = keras.models.load_model({str(tmp_path / "m.keras")!r})
assert type(loaded.loss) is LK.Huber and loaded.loss.delta == 0.5, loaded.loss
assert type(keras.losses.deserialize(keras.losses.serialize(LK.Tversky(alpha=0.1)))) is LK.Tversky
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_hook_leaves_no_trace_once_keras_is_imported():
    assert saving._HOOK not in sys.meta_path
    assert LK.Loss.__bases__ == (keras.losses.Loss,)
    assert torch.is_tensor(LK.MeanSquaredError()([1.0], [0.0]))
