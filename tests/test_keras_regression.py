"""losskit.keras.regression (MSE, MAE, MAPE, MSLE, Huber, LogCosh) against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import (
    N,
    assert_like_keras,
    grid,
    grid_id,
    keras_or_skip,
    make_inputs,
    run_function_case,
    run_grid_cell,
)

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

CLASSES = {
    "MeanSquaredError": ("regression", [{}]),
    "MeanAbsoluteError": ("regression", [{}]),
    "MeanAbsolutePercentageError": ("positive", [{}]),
    "MeanSquaredLogarithmicError": ("positive", [{}]),
    "Huber": ("regression", [{"delta": 1.0}, {"delta": 0.3}]),
    "LogCosh": ("regression", [{}]),
}
GRID = [cell for cls, (kind, opts) in CLASSES.items() for cell in grid(cls, kind, opts)]


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


FUNCTIONS = [
    ("mean_squared_error", "regression", {}),
    ("mean_absolute_error", "regression", {}),
    ("mean_absolute_percentage_error", "positive", {}),
    ("mean_absolute_percentage_error", "regression", {}),  # negative targets: |y_true| in the denominator
    ("mean_squared_logarithmic_error", "positive", {}),
    ("mean_squared_logarithmic_error", "regression", {}),  # negative values count as 1e-7
    ("huber", "regression", {"delta": 1.0}),
    ("huber", "regression", {"delta": 0.3}),
    ("huber", "regression", {"delta": 2.5}),
    ("log_cosh", "regression", {}),
]


@pytest.mark.parametrize("layout", ["r2", "r3"])
@pytest.mark.parametrize("fn, kind, kwargs", FUNCTIONS, ids=lambda v: str(v))
def test_functions_match_keras(fn, kind, kwargs, layout):
    run_function_case(keras, LK, fn, kind, kwargs, layout)


def test_log_cosh_is_finite_for_large_errors():
    y_pred = torch.tensor([[-200.0, 200.0, 1e4]], requires_grad=True)
    loss = LK.log_cosh(torch.zeros(1, 3), y_pred)
    assert torch.isfinite(loss).all()
    assert_like_keras(loss, keras.losses.log_cosh(torch.zeros(1, 3), y_pred))
    (grad,) = torch.autograd.grad(loss.sum(), y_pred)
    torch.testing.assert_close(grad, torch.tensor([[-1.0, 1.0, 1.0]]) / 3)


@pytest.mark.parametrize(
    "fn, y_true, y_pred",
    [
        ("mean_squared_error", [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]], [0.5, 2.0, 4.0]),  # broadcast (3,)
        ("mean_absolute_error", [[1.0], [2.0]], [1.5, 0.0]),  # (2, 1) vs (2,): Keras expands the rank-1 one
        ("huber", [1.0, 2.0, 5.0], [[0.5], [2.5], [1.0]]),
        ("mean_squared_error", 1.5, 0.25),  # scalars
        ("huber", [[[0.0], [1.0]]], [[0.2, 0.9], [3.0, -1.0]]),  # rank 3 (1,2,1) squeezed to (1,2)
        ("log_cosh", [[1.0], [2.0]], [1.5, 0.0]),
        ("mean_absolute_percentage_error", [1.0, 2.0, 5.0], [[0.5], [2.5], [1.0]]),
    ],
)
def test_broadcasting_like_keras(fn, y_true, y_pred):
    y_pred, y_true = torch.tensor(y_pred), torch.tensor(y_true)
    assert_like_keras(getattr(LK, fn)(y_true, y_pred), getattr(keras.losses, fn)(y_true, y_pred))
    cls = {
        "mean_squared_error": "MeanSquaredError",
        "mean_absolute_error": "MeanAbsoluteError",
        "huber": "Huber",
        "log_cosh": "LogCosh",
        "mean_absolute_percentage_error": "MeanAbsolutePercentageError",
    }[fn]
    assert_like_keras(getattr(LK, cls)()(y_true, y_pred), getattr(keras.losses, cls)()(y_true, y_pred))


SEED_CASES = [  # seed 001's tf.keras examples
    ("MeanAbsoluteError", [[0.0], [0.0]], [[1.0], [1.0]], 1.0),
    ("MeanSquaredError", [[0.0], [1.0]], [[1.0], [1.0]], 0.5),
    ("Huber", [[0], [1]], [[0.6], [0.4]], 0.18),
]


@pytest.mark.parametrize("cls, y_true, y_pred, expected", SEED_CASES, ids=[c[0] for c in SEED_CASES])
def test_seed_numbers(cls, y_true, y_pred, expected):
    np = pytest.importorskip("numpy")
    ours = getattr(LK, cls)()(y_true, y_pred)
    assert ours.shape == () and ours.dtype == torch.float32
    assert abs(ours.item() - expected) <= 1e-6, (ours.item(), expected)
    assert_like_keras(ours, getattr(keras.losses, cls)()(y_true, y_pred))
    assert_like_keras(getattr(LK, cls)()(np.array(y_true), np.array(y_pred)), ours)
    assert_like_keras(getattr(LK, cls)()(torch.tensor(y_true), torch.tensor(y_pred)), ours)


@pytest.mark.parametrize("delta", [0.0, -1.0, float("nan")])
def test_delta_must_be_positive(delta):
    with pytest.raises(losskit.LossValueError, match="'delta'"):
        LK.Huber(delta=delta)
    with pytest.raises(losskit.LossValueError, match="'delta'"):
        LK.huber([1.0], [0.5], delta=delta)
    with pytest.raises(losskit.LossTypeError, match="'delta'"):
        LK.Huber(delta="1")


def test_shape_errors_name_the_arguments():
    y4x5 = torch.rand(N, 5)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*'y_pred'"):
        LK.MeanSquaredError()(torch.rand(N, 2), y4x5)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*'y_pred'"):
        LK.log_cosh(torch.rand(N, 2), y4x5)
    with pytest.raises(losskit.LossValueError, match="'sample_weight'"):
        LK.MeanSquaredError()(y4x5, y4x5, sample_weight=torch.ones(N + 1))
    with pytest.raises(losskit.LossValueError, match="'y_pred'.*ragged"):
        LK.mean_squared_error([[1.0, 2.0]], [[1.0], [2.0, 3.0]])
    with pytest.raises(losskit.LossTypeError, match="'y_pred'"):
        LK.mean_squared_error([1.0], "abc")
    with pytest.raises(losskit.LossTypeError, match="'y_true'"):
        LK.mean_squared_error(torch.tensor([1j]), [1.0])


def test_mean_with_sample_weight_all_zero_weights_gives_zero():
    y_true, y_pred = make_inputs("regression", "r2", False, seed=4)
    for cls in CLASSES:
        args = {"reduction": "mean_with_sample_weight"}
        ours = getattr(LK, cls)(**args)(y_true.abs(), y_pred.abs(), sample_weight=torch.zeros(N))
        ref = getattr(keras.losses, cls)(**args)(y_true.abs(), y_pred.abs(), sample_weight=torch.zeros(N))
        assert_like_keras(ours, ref)
        assert ours.item() == 0.0
