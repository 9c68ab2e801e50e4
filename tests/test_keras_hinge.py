"""losskit.keras.hinge (Hinge, SquaredHinge, CategoricalHinge) against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import assert_like_keras, grid, grid_id, keras_or_skip, run_function_case, run_grid_cell

keras = keras_or_skip()

import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GRID = (
    grid("Hinge", "hinge01", [{}])
    + grid("Hinge", "hinge", [{}], layouts=("r2",))
    + grid("SquaredHinge", "hinge01", [{}])
    + grid("SquaredHinge", "hinge", [{}], layouts=("r2",))
    + grid("CategoricalHinge", "categorical", [{}])
)


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3"])
@pytest.mark.parametrize(
    "fn, kind",
    [("hinge", "hinge01"), ("hinge", "hinge"), ("squared_hinge", "hinge01"), ("squared_hinge", "hinge")]
    + [("categorical_hinge", "categorical"), ("categorical_hinge", "hinge")],
)
def test_functions_match_keras(fn, kind, layout):
    run_function_case(keras, LK, fn, kind, {}, layout)


def test_binary_labels_are_converted_only_when_all_are_binary():
    y_pred = torch.tensor([[0.3, -0.4]])
    torch.testing.assert_close(LK.hinge([[0.0, 1.0]], y_pred), LK.hinge([[-1.0, 1.0]], y_pred))
    assert_like_keras(LK.hinge([[0.0, 2.0]], y_pred), keras.losses.hinge(torch.tensor([[0.0, 2.0]]), y_pred))
