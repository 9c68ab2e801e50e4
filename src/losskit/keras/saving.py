"""``get``, ``serialize`` and ``deserialize`` for losskit's Keras losses, and their registration with Keras.

losskit never imports keras. When Keras is (or gets) imported, every class and function of
:mod:`losskit.keras` is registered with ``keras.saving.register_keras_serializable(package="losskit")`` (so
``model.save`` / ``keras.models.load_model``, ``keras.saving.serialize_keras_object`` /
``deserialize_keras_object`` and ``keras.losses.deserialize`` give back losskit's objects, without
``custom_objects``), and ``keras.losses.Loss`` becomes the base of :class:`losskit.keras.Loss` (so Keras' ``compile``
calls losskit's losses with ``sample_weight`` and ``class_weight`` exactly as it calls its own). If Keras is
already imported this happens when :mod:`losskit.keras` is imported; otherwise a one-shot import hook runs it right
after ``import keras`` completes, and removes itself.

The serialized form is Keras' own: ``{"module", "class_name", "config", "registered_name": "losskit>Name"}``.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import inspect
import sys
import threading
import warnings
from typing import Any

from .._checks import keras as checks
from .base import Loss

PACKAGE = "losskit"

_OBJECTS: dict[str, Any] = {}  # class and function names, and Keras' aliases, to losskit's objects
_lock = threading.Lock()
_state: dict[str, bool] = {"registered": False}

# the names keras.losses.get / deserialize accept besides the class and function names (Keras 3.15.1)
KERAS_ALIASES = {
    "bce": "binary_crossentropy",
    "BCE": "binary_crossentropy",
    "kld": "kl_divergence",
    "KLD": "kl_divergence",
    "mae": "mean_absolute_error",
    "MAE": "mean_absolute_error",
    "mse": "mean_squared_error",
    "MSE": "mean_squared_error",
    "mape": "mean_absolute_percentage_error",
    "MAPE": "mean_absolute_percentage_error",
    "msle": "mean_squared_logarithmic_error",
    "MSLE": "mean_squared_logarithmic_error",
}


def add_objects(objects: list[Any]) -> None:
    """Make the classes and functions of :mod:`losskit.keras` known to ``get`` and ``deserialize``."""
    for obj in objects:
        _OBJECTS[obj.__name__] = obj
    for alias, name in KERAS_ALIASES.items():
        _OBJECTS[alias] = _OBJECTS[name]


def registered_name(obj: Any) -> str:
    return f"{PACKAGE}>{obj.__name__}"


def serialize(loss) -> dict:
    """Keras' serialized form of a losskit loss object or function (what ``keras.losses.serialize`` gives).

    Example::

        >>> import losskit.keras as K
        >>> K.serialize(K.Huber(delta=0.5))["config"]
        {'name': 'huber_loss', 'reduction': 'sum_over_batch_size', 'delta': 0.5}
        >>> K.serialize(K.huber)["config"]
        'losskit>huber'
    """
    if inspect.isfunction(loss):  # Keras' own form for a registered function
        return {
            "module": "builtins",
            "class_name": "function",
            "config": registered_name(loss),
            "registered_name": "function",
        }
    cls = type(loss)
    return {
        "module": cls.__module__,
        "class_name": cls.__name__,
        "config": loss.get_config(),
        "registered_name": registered_name(cls),
    }


def _lookup(name: object, custom_objects: dict | None):
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if isinstance(name, str):
        key = name.split(">", 1)[1] if name.startswith(f"{PACKAGE}>") else name
        if key in _OBJECTS:
            return _OBJECTS[key]
    checks.unknown_name(name)


def deserialize(name, custom_objects=None):
    """The loss object or function of a name (``'Huber'``, ``'huber'``, Keras' aliases such as ``'mse'``) or of
    a serialized form (:func:`serialize`'s, or Keras' for the same class)."""
    if isinstance(name, str):
        return _lookup(name, custom_objects)
    if not isinstance(name, dict) or "class_name" not in name:
        checks.config_dict(name)
    if name["class_name"] == "function":
        return _lookup(name.get("config"), custom_objects)
    cls = _lookup(name.get("registered_name") or name["class_name"], custom_objects)
    if not inspect.isclass(cls):
        cls = _lookup(name["class_name"], custom_objects)
    return cls.from_config(dict(name.get("config") or {}))


def get(identifier):
    """A loss from an identifier, as ``keras.losses.get``: None, a name (a class name gives an instance), a
    serialized dict, or a callable (returned as is).

    Example::

        >>> import losskit.keras as K
        >>> K.get("mse") is K.mean_squared_error
        True
        >>> K.get({"class_name": "CategoricalCrossentropy", "config": {"from_logits": True}}).from_logits
        True
    """
    if identifier is None:
        return None
    if isinstance(identifier, dict):
        obj = deserialize(identifier)
    elif isinstance(identifier, str):
        obj = _OBJECTS.get(identifier)
    else:
        obj = identifier
    if not callable(obj):
        checks.identifier(identifier)
    return obj() if inspect.isclass(obj) else obj


# ----------------------------------------------------------------------------------- Keras' registry


def register_with_keras() -> bool:
    """Register losskit's Keras losses with Keras, once, if Keras has been imported (never imports it)."""
    keras: Any = sys.modules.get("keras")
    saving = getattr(keras, "saving", None)
    if saving is None or _state["registered"]:
        return bool(_state["registered"])
    with _lock:
        if _state.get("registered"):
            return True
        if Loss.__bases__ != (keras.losses.Loss,):
            Loss.__bases__ = (keras.losses.Loss,)
        for name, obj in _OBJECTS.items():
            if name in KERAS_ALIASES or saving.get_registered_object(registered_name(obj)) is not None:
                continue
            saving.register_keras_serializable(package=PACKAGE, name=obj.__name__)(obj)
        _state["registered"] = True
    return True


class _Loader(importlib.abc.Loader):
    """Keras' own loader, which registers losskit's losses once ``keras`` has been executed."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        with contextlib.suppress(Exception):  # never break `import keras`; the losses still work, unregistered
            register_with_keras()

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _KerasImportHook(importlib.abc.MetaPathFinder):
    """Finds ``keras`` with the other finders and wraps its loader; removes itself after one use."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "keras":
            return None
        uninstall()
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            spec = find(fullname, path, target) if find is not None else None
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


_HOOK = _KerasImportHook()


def install() -> None:
    """Register now if Keras is imported, else once it is."""
    if "keras" in sys.modules:
        try:
            register_with_keras()
        except Exception as err:  # noqa: BLE001 - a Keras we cannot register with still leaves the losses usable
            warnings.warn(f"losskit.keras: could not register the losses with Keras ({err})", stacklevel=3)
    elif _HOOK not in sys.meta_path:
        sys.meta_path.insert(0, _HOOK)


def uninstall() -> None:
    if _HOOK in sys.meta_path:
        sys.meta_path.remove(_HOOK)
