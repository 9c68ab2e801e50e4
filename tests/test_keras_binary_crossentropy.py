"""losskit.keras.binary_crossentropy (binary cross entropy, binary focal cross entropy) against Keras 3 itself."""

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

BCE_OPTIONS = [
    {"from_logits": fl, "label_smoothing": ls, "axis": "layout"} for fl in (False, True) for ls in (0.0, 0.2)
]
FOCAL_OPTIONS = [
    {"from_logits": fl, "apply_class_balancing": cb, "gamma": g, "alpha": 0.4, "label_smoothing": ls, "axis": "layout"}
    for fl, cb, g, ls in [
        (False, False, 2.0, 0.0),
        (True, True, 1.5, 0.1),
        (True, False, 0.0, 0.0),
        (False, True, 3, 0.2),
    ]
]
GRID = grid("BinaryCrossentropy", "binary", BCE_OPTIONS, layouts=("r2", "r3", "r3a1")) + grid(
    "BinaryFocalCrossentropy", "binary", FOCAL_OPTIONS, layouts=("r2", "r3a1")
)


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3", "r3a1"])
@pytest.mark.parametrize(
    "fn, options",
    [("binary_crossentropy", o) for o in BCE_OPTIONS] + [("binary_focal_crossentropy", o) for o in FOCAL_OPTIONS],
    ids=str,
)
def test_functions_match_keras(fn, options, layout):
    run_function_case(keras, LK, fn, "binary", options, layout)


def test_seed_number():
    """Seed 001 prints tf.keras' 0.5108254 (log(p + 1e-7)); Keras 3 clips p and gives -log(0.6) = 0.5108256."""
    ours = LK.BinaryCrossentropy()([[0], [1]], [[0.4], [0.6]])
    assert abs(ours.item() - 0.5108254) <= 1e-6
    assert_like_keras(ours, keras.losses.BinaryCrossentropy()([[0], [1]], [[0.4], [0.6]]))


def test_focal_with_gamma_zero_is_binary_crossentropy():
    y_true, y_pred = make_inputs("binary", "r2", True, seed=3)
    focal = LK.binary_focal_crossentropy(y_true, y_pred, gamma=0.0, from_logits=True)
    bce = LK.binary_crossentropy(y_true, torch.sigmoid(y_pred))
    torch.testing.assert_close(focal, bce)
    assert (LK.binary_focal_crossentropy(y_true, y_pred, from_logits=True) <= focal + 1e-7).all()


@pytest.mark.parametrize("cls", ["BinaryCrossentropy", "BinaryFocalCrossentropy"])
def test_bfloat16_which_keras_cannot_run_in_torch(cls):
    """Keras skips its bfloat16 test of these on torch (torch's BCE kernel has no bfloat16); losskit runs it."""
    y_true, y_pred = make_inputs("binary", "r2", False, seed=8)
    y_pred = y_pred.clamp(0.01, 0.99)  # in bfloat16, 1 - 1e-7 is 1: the clip does not keep log(1 - p) finite
    ours = getattr(LK, cls)(dtype="bfloat16")(y_true, y_pred)
    assert ours.dtype == torch.bfloat16
    ref = getattr(keras.losses, cls)()(y_true, y_pred.bfloat16().float())
    torch.testing.assert_close(ours.float(), ref, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize(
    "y_true, y_pred",
    [([1.0, 0.0, 1.0], [[0.8], [0.3], [0.6]]), ([[1.0], [0.0]], [0.8, 0.3])],  # rank fix-ups
)
def test_rank_fixups_like_keras(y_true, y_pred):
    y_true, y_pred = torch.tensor(y_true), torch.tensor(y_pred)
    assert_like_keras(LK.BinaryCrossentropy()(y_true, y_pred), keras.losses.BinaryCrossentropy()(y_true, y_pred))


def test_sample_weight_as_list_and_numpy():
    np = pytest.importorskip("numpy")
    y_true, y_pred = make_inputs("binary", "r2", True, seed=8)
    ref = keras.losses.BinaryCrossentropy(from_logits=True)(y_true, y_pred, sample_weight=[0.5, 1.0, 2.0, 0.0])
    for sw in ([0.5, 1.0, 2.0, 0.0], np.array([0.5, 1.0, 2.0, 0.0]), torch.tensor([0.5, 1.0, 2.0, 0.0])):
        assert_like_keras(LK.BinaryCrossentropy(from_logits=True)(y_true, y_pred, sample_weight=sw), ref)


def test_bad_input_names_the_argument():
    y4x5 = torch.rand(N, 5)
    with pytest.raises(losskit.LossValueError, match="must have the same shape"):
        LK.binary_crossentropy(torch.rand(N, 2), y4x5)
    with pytest.raises(losskit.LossValueError, match="'label_smoothing'"):
        LK.binary_crossentropy([1.0], [0.5], label_smoothing=-0.1)
    with pytest.raises(losskit.LossTypeError, match="'label_smoothing'"):
        LK.BinaryCrossentropy(label_smoothing="0.1")
    with pytest.raises(losskit.LossIndexError, match="'axis' -3"):
        LK.BinaryCrossentropy(axis=-3)([[1.0, 0.0]], [[0.5, 0.5]])
    with pytest.raises(losskit.LossValueError, match="'gamma'"):
        LK.BinaryFocalCrossentropy(gamma=-1.0)
    with pytest.raises(losskit.LossTypeError, match="'alpha'"):
        LK.binary_focal_crossentropy([1.0], [0.5], alpha="x")
