"""Keras' regression losses: mean squared / absolute / absolute percentage / squared logarithmic error, Huber and
log-cosh. Each is ``mean_{-1}(e(y_true, y_pred))`` for an element-wise error ``e``; ``y_true`` and ``y_pred``
broadcast after Keras' squeeze/expand of ranks that differ by one, and the result has the broadcast shape without
its last axis."""

from __future__ import annotations

import math

import torch

from .._checks import keras as checks
from ..losses.huber_loss import huber as _huber_elementwise
from ..losses.l1_loss import absolute_error
from ..losses.mse_loss import squared_error
from .base import EPSILON, FunctionLoss, broadcast_pair, pair, rowwise

_LOG2 = math.log(2.0)


def _mse(fn, y_true, y_pred):
    y_true, y_pred = broadcast_pair(fn, y_true, y_pred)
    return squared_error(y_pred, y_true).mean(dim=-1)


def _mae(fn, y_true, y_pred):
    y_true, y_pred = broadcast_pair(fn, y_true, y_pred)
    return absolute_error(y_pred, y_true).mean(dim=-1)


def _mape_rows(x, t):
    return 100.0 * ((t - x) / t.abs().clamp_min(EPSILON)).abs().mean(dim=-1)


def _msle_rows(x, t):
    d = torch.log(x.clamp_min(EPSILON) + 1.0) - torch.log(t.clamp_min(EPSILON) + 1.0)
    return (d * d).mean(dim=-1)


def _log_cosh_rows(x, t):
    e = x - t
    # log cosh e = e + softplus(-2e) - log 2: finite for any e
    return (e + torch.nn.functional.softplus(-2.0 * e) - _LOG2).mean(dim=-1)


def _mape(fn, y_true, y_pred):
    return rowwise(_mape_rows, *broadcast_pair(fn, y_true, y_pred))


def _msle(fn, y_true, y_pred):
    return rowwise(_msle_rows, *broadcast_pair(fn, y_true, y_pred))


def _huber(fn, y_true, y_pred, delta):
    return rowwise(lambda x, t: _huber_elementwise(x, t, delta).mean(dim=-1), *broadcast_pair(fn, y_true, y_pred))


def _log_cosh(fn, y_true, y_pred):
    return rowwise(_log_cosh_rows, *broadcast_pair(fn, y_true, y_pred))


# ---------------------------------------------------------------------------------------- functions


def mean_squared_error(y_true, y_pred) -> torch.Tensor:
    r"""Mean squared error over the last axis: ``l = mean_{-1}((y_true - y_pred)²)``.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable (after Keras' squeeze/expand of a trailing size-1 axis).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.mean_squared_error([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]])
        tensor([0.5000, 0.5000])
    """
    y_true, y_pred = pair("mean_squared_error", y_true, y_pred)
    return _mse("mean_squared_error", y_true, y_pred)


def mean_absolute_error(y_true, y_pred) -> torch.Tensor:
    r"""Mean absolute error over the last axis: ``l = mean_{-1}(|y_true - y_pred|)``.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable (after Keras' squeeze/expand of a trailing size-1 axis).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.mean_absolute_error([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [1.0, 0.5]])
        tensor([0.5000, 0.7500])
    """
    y_true, y_pred = pair("mean_absolute_error", y_true, y_pred)
    return _mae("mean_absolute_error", y_true, y_pred)


def mean_absolute_percentage_error(y_true, y_pred) -> torch.Tensor:
    r"""Mean absolute percentage error: ``l = 100·mean_{-1}(|y_true - y_pred| / max(|y_true|, ε))``, ``ε = 1e-7``.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable (after Keras' squeeze/expand of a trailing size-1 axis).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.mean_absolute_percentage_error([[1.0, 2.0], [4.0, 0.5]], [[1.5, 2.0], [3.0, 0.5]])
        tensor([25.0000, 12.5000])
    """
    y_true, y_pred = pair("mean_absolute_percentage_error", y_true, y_pred)
    return _mape("mean_absolute_percentage_error", y_true, y_pred)


def mean_squared_logarithmic_error(y_true, y_pred) -> torch.Tensor:
    r"""Mean squared logarithmic error: ``l = mean_{-1}((log(1 + max(y_pred, ε)) - log(1 + max(y_true, ε)))²)``.

    Values below ``ε = 1e-7`` (negative ones too) count as ``ε``.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable (after Keras' squeeze/expand of a trailing size-1 axis).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.mean_squared_logarithmic_error([[0.0, 1.0], [3.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]])
        tensor([0.2402, 0.2402])
    """
    y_true, y_pred = pair("mean_squared_logarithmic_error", y_true, y_pred)
    return _msle("mean_squared_logarithmic_error", y_true, y_pred)


def huber(y_true, y_pred, delta=1.0) -> torch.Tensor:
    r"""Huber loss over the last axis: ``l = mean_{-1}(h(y_pred - y_true))``.

    ``h(e) = e²/2`` where ``|e| <= δ``, else ``δ·|e| - δ²/2``.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable (after Keras' squeeze/expand of a trailing size-1 axis).
        delta: ``δ > 0`` (default 1.0).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.huber([[0, 1], [0, 0]], [[0.6, 0.4], [0.4, 0.6]])
        tensor([0.1800, 0.1300])
    """
    delta = checks.number_in("huber", "delta", delta, 0.0, float("inf"), open_low=True)
    y_true, y_pred = pair("huber", y_true, y_pred)
    return _huber("huber", y_true, y_pred, delta)


def log_cosh(y_true, y_pred) -> torch.Tensor:
    r"""Log-cosh error: ``l = mean_{-1}(log cosh(y_pred - y_true))``, computed as ``x + softplus(-2x) - log 2``.

    About ``x²/2`` for small errors and ``|x| - log 2`` for large ones.

    Args:
        y_true, y_pred: ``(..., D)``, broadcastable (after Keras' squeeze/expand of a trailing size-1 axis).

    Returns:
        the broadcast shape without its last axis.

    Example::

        >>> import losskit.keras as K
        >>> K.log_cosh([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
        tensor([0.2169, 0.0000])
    """
    y_true, y_pred = pair("log_cosh", y_true, y_pred)
    return _log_cosh("log_cosh", y_true, y_pred)


# ------------------------------------------------------------------------------------------ classes


class MeanSquaredError(FunctionLoss):
    r"""Mean squared error, ``mean_{-1}((y_true - y_pred)²)`` per sample, reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.MeanSquaredError()([[0.0], [1.0]], [[1.0], [1.0]])
        tensor(0.5000)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _mse(fn, y_true, y_pred)


class MeanAbsoluteError(FunctionLoss):
    r"""Mean absolute error, ``mean_{-1}(|y_true - y_pred|)`` per sample, reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.MeanAbsoluteError()([[0.0], [0.0]], [[1.0], [1.0]])
        tensor(1.)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _mae(fn, y_true, y_pred)


class MeanAbsolutePercentageError(FunctionLoss):
    r"""Mean absolute percentage error, ``100·mean_{-1}(|y_true - y_pred| / max(|y_true|, 1e-7))``, reduced.

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.MeanAbsolutePercentageError()([[1.0, 2.0], [4.0, 0.5]], [[1.5, 2.0], [3.0, 0.5]])
        tensor(18.7500)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_absolute_percentage_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _mape(fn, y_true, y_pred)


class MeanSquaredLogarithmicError(FunctionLoss):
    r"""Mean squared logarithmic error, ``mean_{-1}((log(1 + max(p, ε)) - log(1 + max(t, ε)))²)``, reduced.

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.MeanSquaredLogarithmicError()([[0.0, 1.0], [3.0, 0.0]], [[1.0, 1.0], [1.0, 0.0]])
        tensor(0.2402)
    """

    def __init__(self, reduction="sum_over_batch_size", name="mean_squared_logarithmic_error", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _msle(fn, y_true, y_pred)


class Huber(FunctionLoss):
    r"""Huber loss, ``mean_{-1}(h(y_pred - y_true))`` per sample, reduced (see :class:`Loss`).

    ``h(e) = e²/2`` where ``|e| <= δ``, else ``δ·|e| - δ²/2``.

    Args:
        delta: ``δ > 0`` (default 1.0). reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    ``get_config()`` has ``delta`` besides Keras 3.15's keys (Keras' own config drops it, so a saved
    ``Huber(delta=0.5)`` would come back with ``delta=1.0``).

    Example (seed 001)::

        >>> import losskit.keras as K
        >>> K.Huber()([[0], [1]], [[0.6], [0.4]])
        tensor(0.1800)
    """

    _config = ("delta",)

    def __init__(self, delta=1.0, reduction="sum_over_batch_size", name="huber_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.delta = checks.number_in(type(self).__name__, "delta", delta, 0.0, float("inf"), open_low=True)

    def _losses(self, fn, y_true, y_pred):
        return _huber(fn, y_true, y_pred, self.delta)


class LogCosh(FunctionLoss):
    r"""Log-cosh error, ``mean_{-1}(log cosh(y_pred - y_true))`` per sample, reduced (see :class:`Loss`).

    Args:
        reduction, name, dtype: as for :class:`Loss`.

    Shapes: ``y_true``, ``y_pred`` broadcastable, e.g. ``(N, D)``; per-sample loss ``(N,)``.

    Example::

        >>> import losskit.keras as K
        >>> K.LogCosh()([[0.0, 1.0], [0.0, 0.0]], [[1.0, 1.0], [0.0, 0.0]])
        tensor(0.1084)
    """

    def __init__(self, reduction="sum_over_batch_size", name="log_cosh", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def _losses(self, fn, y_true, y_pred):
        return _log_cosh(fn, y_true, y_pred)
