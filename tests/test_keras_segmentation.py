"""losskit.keras.segmentation (Dice, Tversky) against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import grid, grid_id, keras_or_skip, run_function_case, run_grid_cell

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GRID = (
    grid("Dice", "mask", [{"axis": None}], layouts=("r2",))
    + grid("Dice", "mask", [{"axis": (1,)}], layouts=("r2",))
    + grid("Dice", "mask", [{"axis": (1, 2)}, {"axis": -1}], layouts=("r3",))
    + grid("Tversky", "mask", [{"axis": None, "alpha": 0.3, "beta": 0.7}], layouts=("r2",))
    + grid("Tversky", "mask", [{"axis": (1, 2), "alpha": 0.5, "beta": 0.5}, {"axis": 1}], layouts=("r3",))
)


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3"])
@pytest.mark.parametrize(
    "fn, kwargs",
    [("dice", {}), ("dice", {"axis": 1}), ("dice", {"axis": (0, 1)})]
    + [("tversky", {}), ("tversky", {"alpha": 0.1, "beta": 0.9, "axis": -1}), ("tversky", {"axis": (0,)})],
    ids=str,
)
def test_functions_match_keras(fn, kwargs, layout):
    run_function_case(keras, LK, fn, "mask", kwargs, layout)


def test_tversky_with_equal_weights_is_dice_up_to_epsilon():
    y_true = (torch.rand(3, 8, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    y_pred = torch.rand(3, 8, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(LK.tversky(y_true, y_pred, axis=1), LK.dice(y_true, y_pred, axis=1))


def test_axis_errors():
    with pytest.raises(losskit.LossIndexError, match="'axis' 3"):
        LK.dice(torch.ones(2, 3), torch.ones(2, 3), axis=(1, 3))
    with pytest.raises(losskit.LossValueError, match="'axis'"):
        LK.Dice(axis=(1, 1))(torch.ones(2, 3), torch.ones(2, 3))
    with pytest.raises(losskit.LossTypeError, match="'axis'"):
        LK.Tversky(axis="1")
