"""losskit.keras.categorical_crossentropy against Keras 3 itself, and its fused from-logits path."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

from keras_helpers import (
    REDUCTIONS,
    C,
    N,
    T,
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
from losskit.losses import cross_entropy as ce_module  # noqa: E402

cce_module = importlib.import_module("losskit.keras.categorical_crossentropy")
base = importlib.import_module("losskit.keras.base")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

OPTIONS = [{"from_logits": fl, "label_smoothing": ls, "axis": "layout"} for fl in (False, True) for ls in (0.0, 0.2)]
GRID = grid("CategoricalCrossentropy", "categorical", OPTIONS, layouts=("r2", "r3", "r3a1"))


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


def test_grid_is_not_trivial():
    compared = sum(run_grid_cell(keras, LK, *cell) for cell in GRID[::9])
    assert compared > len(GRID[::9]) // 2  # most cells compare numbers, not errors


@pytest.mark.parametrize("layout", ["r2", "r3", "r3a1"])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_function_matches_keras(options, layout):
    run_function_case(keras, LK, "categorical_crossentropy", "categorical", options, layout)


def test_seed_numbers():
    """Seed 001: categorical cross entropy 1.176939 (and per sample -log 0.95, -log 0.1)."""
    y_true, y_pred = [[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]]
    ours = LK.CategoricalCrossentropy()(y_true, y_pred)
    assert ours.shape == () and ours.dtype == torch.float32
    assert abs(ours.item() - 1.176939) <= 1e-6
    assert_like_keras(ours, keras.losses.CategoricalCrossentropy()(y_true, y_pred))
    per_sample = LK.categorical_crossentropy(y_true, y_pred)
    torch.testing.assert_close(per_sample, torch.tensor([-torch.tensor(0.95).log(), -torch.tensor(0.1).log()]))


def test_from_logits_is_fused(monkeypatch):
    """Categorical from logits runs the fused rows (loss and gradient in one pass); sparse from logits runs
    losskit's fused cross-entropy engine; probabilities run neither."""
    rows, engine = [], []
    real_rows, real_engine = base.FusedRows.apply, ce_module.cross_entropy
    monkeypatch.setattr(base.FusedRows, "apply", lambda *a: rows.append(a[0].shape) or real_rows(*a))

    def spy(input, target, *args, **kwargs):
        engine.append((tuple(input.shape), tuple(target.shape), target.dtype, kwargs.get("reduction")))
        return real_engine(input, target, *args, **kwargs)

    monkeypatch.setattr(ce_module, "cross_entropy", spy)
    y_true, y_pred = make_inputs("categorical", "r3a1", True, seed=0)
    LK.CategoricalCrossentropy(from_logits=True, axis=1)(y_true, y_pred)
    labels, logits = make_inputs("sparse", "r3", True, seed=0)
    LK.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    assert rows == [torch.Size([N * T, C])]
    assert engine == [((N, C, T), (N, T), torch.int64, "none")]
    LK.categorical_crossentropy(y_true, y_pred.abs(), axis=1)
    assert len(rows) == 1 and len(engine) == 1


def test_fused_gradient_against_finite_differences(monkeypatch):
    monkeypatch.setattr(base, "_CHUNK_ELEMENTS", 8)  # 2 rows a chunk
    x = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)
    t = torch.rand(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))  # any mass, not only 1
    rows = cce_module._soft_cross_entropy_rows
    assert torch.autograd.gradcheck(lambda x: base.FusedRows.apply(x, t, rows), (x,))
    expected = -(t * torch.log_softmax(x, -1)).sum(-1)
    torch.testing.assert_close(base.FusedRows.apply(x, t, rows), expected)


def test_single_class_warns_like_keras():
    with pytest.warns(SyntaxWarning, match="binary_crossentropy"):
        LK.categorical_crossentropy([[1.0], [1.0]], [[0.3], [0.9]])


def test_no_warnings_in_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y_true, y_pred = make_inputs("categorical", "r2", True, seed=3)
        LK.CategoricalCrossentropy(from_logits=True)(y_true, y_pred)


def test_keras_mask_on_y_pred_is_honoured():
    """A ``_keras_mask`` on ``y_pred`` (set by Keras masking layers) drops entries, as in Keras' Loss."""
    y_true, y_pred = make_inputs("categorical", "r3", True, seed=5)
    mask = torch.rand(N, T, generator=torch.Generator().manual_seed(9)) < 0.6
    for reduction in REDUCTIONS:
        ref_pred, ours_pred = y_pred.clone(), y_pred.clone()
        ref_pred._keras_mask = mask
        ours_pred._keras_mask = mask
        args = {"from_logits": True, "reduction": reduction}
        ref = keras.losses.CategoricalCrossentropy(**args)(y_true, ref_pred)
        assert_like_keras(LK.CategoricalCrossentropy(**args)(y_true, ours_pred), ref, str(reduction))


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
@pytest.mark.parametrize("from_logits", [False, True])
def test_half_precision_like_keras(dtype, tol, from_logits):
    """The dtype is Keras'; the values within about one unit in the last place (losskit's fused cross
    entropy accumulates in float32, Keras' log_softmax does not)."""
    y_true, y_pred = make_inputs("categorical", "r2", from_logits, seed=21)
    for reduction in ("sum_over_batch_size", None):
        args = {"dtype": dtype, "reduction": reduction, "from_logits": from_logits}
        ours = LK.CategoricalCrossentropy(**args)(y_true, y_pred)
        ref = keras.losses.CategoricalCrossentropy(**args)(y_true, y_pred)
        assert ours.dtype == ref.dtype == getattr(torch, dtype)
        torch.testing.assert_close(ours.float(), ref.float(), rtol=tol, atol=tol)


def test_bad_input_names_the_argument():
    y4x5 = torch.rand(N, C)
    with pytest.raises(losskit.LossValueError, match="must have the same shape"):
        LK.CategoricalCrossentropy()(torch.rand(N, C + 1), y4x5)
    with pytest.raises(ValueError, match="must have the same shape"):  # Keras' words
        keras.losses.CategoricalCrossentropy()(torch.rand(N, C + 1), y4x5)
    with pytest.raises(losskit.LossValueError, match="'label_smoothing'"):
        LK.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(losskit.LossTypeError, match="'axis'"):
        LK.categorical_crossentropy([[1.0, 0.0]], [[0.5, 0.5]], axis=True)
    with pytest.raises(losskit.LossIndexError, match="'axis' 2"):
        LK.categorical_crossentropy([[1.0, 0.0]], [[0.5, 0.5]], axis=2)
    with pytest.raises(losskit.LossTypeError, match="'from_logits'"):
        LK.CategoricalCrossentropy(from_logits="yes")
    with pytest.raises(losskit.LossValueError, match="'y_true'"):  # rank 2 vs rank 1: Keras raises too
        LK.CategoricalCrossentropy()(torch.tensor([[1.0, 0.0]]), torch.tensor([0.3, 0.7]))
