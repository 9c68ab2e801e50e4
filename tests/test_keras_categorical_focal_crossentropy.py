"""losskit.keras.categorical_focal_crossentropy against Keras 3 itself, and its fused from-logits path."""

from __future__ import annotations

import importlib

import pytest
import torch

from keras_helpers import (
    C,
    N,
    assert_like_keras,
    gen,
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

focal_module = importlib.import_module("losskit.keras.categorical_focal_crossentropy")
cce_module = importlib.import_module("losskit.keras.categorical_crossentropy")
base = importlib.import_module("losskit.keras.base")

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

OPTIONS = [
    {"from_logits": fl, "gamma": g, "alpha": a, "label_smoothing": ls, "axis": "layout"}
    for fl, g, a, ls in [(False, 2.0, 0.25, 0.0), (True, 2.0, 0.25, 0.0), (True, 0.5, 1.0, 0.2), (True, 0.0, 0.7, 0.0)]
]
GRID = grid("CategoricalFocalCrossentropy", "categorical", OPTIONS, layouts=("r2", "r3", "r3a1"))


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3", "r3a1"])
@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_function_matches_keras(options, layout):
    run_function_case(keras, LK, "categorical_focal_crossentropy", "categorical", options, layout)


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("layout", ["r2", "r3a1"])
def test_per_class_alpha_like_keras(from_logits, layout):
    """alpha as a list broadcasts against the LAST axis in Keras (the class axis only when axis=-1)."""
    alpha = [0.1, 0.2, 0.3, 0.4, 0.5] if layout == "r2" else [0.5, 0.2, 0.3]
    opts = {"from_logits": from_logits, "alpha": alpha, "axis": "layout"}
    run_function_case(keras, LK, "categorical_focal_crossentropy", "categorical", opts, layout)


def test_fused_path_used(monkeypatch):
    calls = []
    real = base.FusedRows.apply
    monkeypatch.setattr(base.FusedRows, "apply", lambda *a: calls.append(a[0].shape) or real(*a))
    y_true, y_pred = make_inputs("categorical", "r3", True, seed=0)
    LK.CategoricalFocalCrossentropy(from_logits=True)(y_true, y_pred)
    assert calls == [torch.Size([N * 3, C])]
    LK.CategoricalFocalCrossentropy()(y_true, y_pred.softmax(-1))  # probabilities do not
    assert len(calls) == 1


@pytest.mark.parametrize("alpha", [0.3, "per-class"])
def test_fused_gradient_against_finite_differences(monkeypatch, alpha):
    """float64 gradcheck of the fused rows, across chunk boundaries (2 rows a chunk)."""
    monkeypatch.setattr(base, "_CHUNK_ELEMENTS", 8)
    x = torch.randn(7, 4, dtype=torch.float64, generator=gen(2), requires_grad=True)
    t = torch.softmax(torch.randn(7, 4, dtype=torch.float64, generator=gen(3)), -1)
    a = torch.tensor([0.1, 0.5, 1.0, 2.0], dtype=torch.float64) if alpha == "per-class" else alpha
    rows = focal_module._focal_rows(a, 1.7)
    assert torch.autograd.gradcheck(lambda x: base.FusedRows.apply(x, t, rows), (x,))


@pytest.mark.parametrize("dtype, tol", [("float16", 3e-3), ("bfloat16", 2e-2)])
def test_half_precision(dtype, tol):
    y_true, y_pred = make_inputs("categorical", "r2", True, seed=21)
    ours = LK.CategoricalFocalCrossentropy(from_logits=True, dtype=dtype, reduction=None)(y_true, y_pred)
    ref = keras.losses.CategoricalFocalCrossentropy(from_logits=True, reduction=None)(y_true, y_pred)
    assert ours.dtype == getattr(torch, dtype)
    torch.testing.assert_close(ours.float(), ref, rtol=tol, atol=tol)


def test_keras_doc_numbers():
    ours = LK.categorical_focal_crossentropy([[0, 1, 0], [0, 0, 1]], [[0.05, 0.9, 0.05], [0.1, 0.85, 0.05]])
    torch.testing.assert_close(ours, torch.tensor([2.63401289e-04, 6.75912094e-01]))


def test_bad_input():
    with pytest.raises(losskit.LossValueError, match="must have the same shape"):
        LK.CategoricalFocalCrossentropy()(torch.rand(N, C + 1), torch.rand(N, C))
    with pytest.raises(losskit.LossValueError, match="'gamma'"):
        LK.CategoricalFocalCrossentropy(gamma=-0.5)
    with pytest.raises(losskit.LossValueError, match="'alpha'"):
        LK.categorical_focal_crossentropy(torch.eye(3), torch.rand(3, 3), alpha=[0.1, 0.2])
    assert_like_keras(
        LK.categorical_focal_crossentropy(torch.eye(3), torch.eye(3) * 0.9 + 0.03),
        keras.losses.categorical_focal_crossentropy(torch.eye(3), torch.eye(3) * 0.9 + 0.03),
    )
