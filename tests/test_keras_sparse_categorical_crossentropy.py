"""losskit.keras.sparse_categorical_crossentropy against Keras 3 itself: labels, ignore_class, masks."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import (
    REDUCTIONS,
    C,
    N,
    T,
    assert_like_keras,
    gen,
    grad_check,
    grid,
    grid_id,
    keras_or_skip,
    keras_weight,
    make_inputs,
    run_function_case,
    run_grid_cell,
)

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

OPTIONS = [{"from_logits": fl, "ignore_class": ig, "axis": "layout"} for fl in (False, True) for ig in (None, 2)]
GRID = grid("SparseCategoricalCrossentropy", "sparse", OPTIONS, layouts=("r2", "r3", "r3a1"))


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3", "r3a1"])
@pytest.mark.parametrize(
    "options", [{"from_logits": fl, "ignore_class": ig, "axis": "layout"} for fl in (0, 1) for ig in (None, 0)], ids=str
)
def test_function_matches_keras(options, layout):
    run_function_case(keras, LK, "sparse_categorical_crossentropy", "sparse", options, layout)


def test_seed_number():
    sparse = LK.SparseCategoricalCrossentropy()([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    assert abs(sparse.item() - 1.176939) <= 1e-6


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("from_logits", [False, True])
def test_ignore_class_all_ignored_gives_zero(reduction, from_logits):
    y_true = torch.full((N,), 3)
    y_pred = torch.rand(N, C, generator=gen(1)) + 0.1
    args = {"from_logits": from_logits, "ignore_class": 3, "reduction": reduction}
    leaf_o, leaf_r = y_pred.clone().requires_grad_(), y_pred.clone().requires_grad_()
    ours = LK.SparseCategoricalCrossentropy(**args)(y_true, leaf_o, sample_weight=torch.ones(N))
    ref = keras.losses.SparseCategoricalCrossentropy(**args)(y_true, leaf_r, sample_weight=torch.ones(N))
    assert_like_keras(ours, ref)
    assert torch.count_nonzero(ours) == 0
    assert torch.count_nonzero(torch.autograd.grad(ours.sum(), leaf_o, retain_graph=True)[0]) == 0
    grad_check(ours, ref, leaf_o, leaf_r, "y_pred")


@pytest.mark.parametrize("ignore_class", [-1, 0, 255])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight", None])
def test_ignore_class_values(ignore_class, reduction):
    y_true = torch.tensor([[0, 1, 2], [ignore_class, 4, ignore_class], [3, ignore_class, 0], [2, 2, 1]])
    y_pred = torch.randn(N, T, C, generator=gen(3))
    args = {"from_logits": True, "ignore_class": ignore_class, "reduction": reduction}
    sw = torch.tensor([[1.0], [2.0], [0.5], [0.0]])
    ours = LK.SparseCategoricalCrossentropy(**args)(y_true, y_pred, sample_weight=sw)
    ref = keras.losses.SparseCategoricalCrossentropy(**args)(y_true, y_pred, sample_weight=keras_weight(sw, (N, T)))
    assert_like_keras(ours, ref)
    assert torch.equal(sw, torch.tensor([[1.0], [2.0], [0.5], [0.0]]))  # unlike Keras, not changed in place
    if reduction == "sum_over_batch_size":  # the mean over the 9 kept entries, not over all 12
        per = LK.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True, ignore_class=ignore_class)
        keep = (y_true != ignore_class).float()
        torch.testing.assert_close(ours, (per * sw).sum() / keep.sum())


def test_masks_combine_with_ignore_class():
    _, y_pred = make_inputs("categorical", "r3", True, seed=5)
    mask = torch.rand(N, T, generator=gen(9)) < 0.6
    y_lab = torch.randint(0, C, (N, T), generator=gen(2))
    y_lab[0, 0] = 4
    ref_pred, ours_pred = y_pred.clone(), y_pred.clone()
    ref_pred._keras_mask = ours_pred._keras_mask = mask
    args = {"from_logits": True, "ignore_class": 4}
    ref = keras.losses.SparseCategoricalCrossentropy(**args)(y_lab, ref_pred)
    assert_like_keras(LK.SparseCategoricalCrossentropy(**args)(y_lab, ours_pred), ref)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("bad", [C, 7, -1])
def test_labels_out_of_range(from_logits, bad):
    y_pred = torch.rand(N, C) + 0.1
    y_true = torch.tensor([0, 1, bad, 2])
    with pytest.raises(losskit.LossIndexError, match=rf"'y_true' label {bad} is out of range for {C} classes"):
        LK.SparseCategoricalCrossentropy(from_logits=from_logits)(y_true, y_pred)
    with pytest.raises(IndexError):  # Keras (torch's nll_loss / cross_entropy) raises IndexError too
        keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)(y_true, y_pred)
    # the ignored label may be anything; the others must still be in range
    LK.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=bad)(y_true, y_pred)
    with pytest.raises(losskit.LossIndexError, match="or ignore_class=99"):
        LK.sparse_categorical_crossentropy(y_true, y_pred, from_logits=from_logits, ignore_class=99)


def test_non_integral_labels():
    with pytest.raises(losskit.LossValueError, match="'y_true'.*whole numbers; found 1.5"):
        LK.sparse_categorical_crossentropy([0.0, 1.5], torch.rand(2, 3))
    # whole floats are fine (Keras' Loss turns labels into floats before they reach the loss)
    torch.testing.assert_close(
        LK.sparse_categorical_crossentropy([0.0, 2.0], torch.rand(2, 3, generator=gen(0))),
        LK.sparse_categorical_crossentropy([0, 2], torch.rand(2, 3, generator=gen(0))),
    )


def test_shape_errors():
    y4x5 = torch.rand(N, C)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*without its class axis"):
        LK.SparseCategoricalCrossentropy()(torch.zeros(N + 1, dtype=torch.long), y4x5)
    with pytest.raises(ValueError):
        keras.losses.SparseCategoricalCrossentropy()(torch.zeros(N + 1, dtype=torch.long), y4x5)
    with pytest.raises(losskit.LossValueError, match="'y_pred' must have rank"):
        LK.sparse_categorical_crossentropy(torch.tensor(0), torch.tensor(0.5))
    with pytest.raises(losskit.LossTypeError, match="'ignore_class'"):
        LK.SparseCategoricalCrossentropy(ignore_class="void")


def test_rank_fixup_of_labels_like_keras():
    y_true, y_pred = torch.tensor([[1], [0]]), torch.tensor([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]])
    ref = keras.losses.SparseCategoricalCrossentropy()(y_true, y_pred)
    assert_like_keras(LK.SparseCategoricalCrossentropy()(y_true, y_pred), ref)
