"""losskit.keras.cosine_similarity against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import assert_like_keras, grid, grid_id, keras_or_skip, run_function_case, run_grid_cell

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GRID = grid("CosineSimilarity", "regression", [{"axis": -1}, {"axis": 1}], layouts=("r2", "r3"))


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3"])
@pytest.mark.parametrize("axis", [-1, 0, 1])
def test_function_matches_keras(axis, layout):
    run_function_case(keras, LK, "cosine_similarity", "regression", {"axis": axis}, layout)


def test_zero_vector_gives_zero_and_finite_gradient():
    y_pred = torch.zeros(2, 3, requires_grad=True)
    loss = LK.cosine_similarity(torch.ones(2, 3), y_pred)
    assert_like_keras(loss, keras.losses.cosine_similarity(torch.ones(2, 3), torch.zeros(2, 3)))
    assert torch.isfinite(torch.autograd.grad(loss.sum(), y_pred)[0]).all()


def test_axis_errors():
    with pytest.raises(losskit.LossIndexError, match="'axis' 2"):
        LK.cosine_similarity(torch.ones(2, 3), torch.ones(2, 3), axis=2)
    with pytest.raises(losskit.LossTypeError, match="'axis'"):
        LK.CosineSimilarity(axis=None)
