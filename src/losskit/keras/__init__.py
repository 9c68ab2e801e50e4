"""Keras 3 losses on torch tensors, with Keras' numerics: ``import losskit.keras as losses``.

Every loss class and function of ``keras.losses`` (Keras 3.15): Keras' names, parameters (order and defaults),
per-sample shapes, reductions, ``sample_weight``, masks, dtypes and values; the :class:`Loss` base class to subclass
(override ``call``); :func:`get`, :func:`serialize`, :func:`deserialize`, with Keras' aliases (``'mse'``,
``'mae'``, ``'mape'``, ``'msle'``, ``'kld'``, ``'bce'`` and their upper-case forms) as names for :func:`get`, as in
``keras.losses`` (which has no module attributes for them either). This package never imports keras.

* Inputs: torch tensors, numpy arrays, nested lists or numbers; outputs are torch tensors, differentiable with
  respect to ``y_pred`` (the from-logits categorical and focal losses, which run fused, give no gradient to
  ``y_true``). Python floats become ``keras.config.floatx()`` when Keras has been imported, else float32.
* Functions return the per-sample loss; calling an object, ``loss(y_true, y_pred, sample_weight=None)``, weights
  and reduces it with ``reduction`` (see :class:`Loss`).
* In Keras (``KERAS_BACKEND=torch``): ``model.compile(loss=losskit.keras.CategoricalCrossentropy(from_logits=True))``;
  ``fit`` applies ``sample_weight`` and ``class_weight`` as for Keras' own losses; ``model.save`` and
  ``keras.models.load_model`` round-trip without ``custom_objects`` (see :mod:`losskit.keras.saving`).
* ``get_config()`` has the keys of Keras 3.15's class, plus three deliberate extras that Keras' configs drop (and a
  saved model would silently lose): ``Huber``'s ``delta``, ``CosineSimilarity``'s and
  ``SparseCategoricalCrossentropy``'s ``axis``. There is no ``dtype`` key (Keras' configs have none).

Errors (:class:`losskit.LossValueError`, :class:`losskit.LossTypeError`, :class:`losskit.LossIndexError`) name the
argument. Where losskit is stricter than Keras: ``label_smoothing`` must lie in [0, 1], ``delta`` must be > 0,
class labels must be whole numbers in ``[0, C)`` (Keras' torch backend truncates float labels, silently drops the
label -100 and clamps negative ones), and ``categorical_generalized_cross_entropy`` squeezes ``(N, 1)`` labels
(which Keras broadcasts into an ``(N, N)`` result).
"""

from __future__ import annotations

from . import saving as _saving
from .base import Loss
from .binary_crossentropy import (
    BinaryCrossentropy,
    BinaryFocalCrossentropy,
    binary_crossentropy,
    binary_focal_crossentropy,
)
from .categorical_crossentropy import CategoricalCrossentropy, categorical_crossentropy
from .categorical_focal_crossentropy import CategoricalFocalCrossentropy, categorical_focal_crossentropy
from .categorical_generalized_cross_entropy import (
    CategoricalGeneralizedCrossEntropy,
    categorical_generalized_cross_entropy,
)
from .circle import Circle, circle
from .cosine_similarity import CosineSimilarity, cosine_similarity
from .ctc import CTC, ctc
from .hinge import CategoricalHinge, Hinge, SquaredHinge, categorical_hinge, hinge, squared_hinge
from .kl_divergence import KLDivergence, kl_divergence
from .poisson import Poisson, poisson
from .regression import (
    Huber,
    LogCosh,
    MeanAbsoluteError,
    MeanAbsolutePercentageError,
    MeanSquaredError,
    MeanSquaredLogarithmicError,
    huber,
    log_cosh,
    mean_absolute_error,
    mean_absolute_percentage_error,
    mean_squared_error,
    mean_squared_logarithmic_error,
)
from .saving import deserialize, get, serialize
from .segmentation import Dice, Tversky, dice, tversky
from .sparse_categorical_crossentropy import SparseCategoricalCrossentropy, sparse_categorical_crossentropy

__all__ = [
    "CTC",
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "CategoricalGeneralizedCrossEntropy",
    "CategoricalHinge",
    "Circle",
    "CosineSimilarity",
    "Dice",
    "Hinge",
    "Huber",
    "KLDivergence",
    "LogCosh",
    "Loss",
    "MeanAbsoluteError",
    "MeanAbsolutePercentageError",
    "MeanSquaredError",
    "MeanSquaredLogarithmicError",
    "Poisson",
    "SparseCategoricalCrossentropy",
    "SquaredHinge",
    "Tversky",
    "binary_crossentropy",
    "binary_focal_crossentropy",
    "categorical_crossentropy",
    "categorical_focal_crossentropy",
    "categorical_generalized_cross_entropy",
    "categorical_hinge",
    "circle",
    "cosine_similarity",
    "ctc",
    "deserialize",
    "dice",
    "get",
    "hinge",
    "huber",
    "kl_divergence",
    "log_cosh",
    "mean_absolute_error",
    "mean_absolute_percentage_error",
    "mean_squared_error",
    "mean_squared_logarithmic_error",
    "poisson",
    "serialize",
    "sparse_categorical_crossentropy",
    "squared_hinge",
    "tversky",
]

# the losses (every public name but Loss, get, serialize, deserialize), as get() and deserialize() know them
LOSSES = [globals()[name] for name in __all__ if name not in ("Loss", "get", "serialize", "deserialize")]
for _obj in (Loss, *LOSSES, get, serialize, deserialize):
    _obj.__module__ = __name__  # serialized configs and pickles name the public module, not the file
_saving.add_objects([Loss, *LOSSES])
_saving.install()
