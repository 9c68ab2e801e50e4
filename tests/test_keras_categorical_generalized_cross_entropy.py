"""losskit.keras.categorical_generalized_cross_entropy against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import assert_like_keras, grid, grid_id, keras_or_skip, make_inputs, run_grid_cell

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GRID = grid("CategoricalGeneralizedCrossEntropy", "gce", [{"q": 0.5}, {"q": 0.1}], layouts=("r2", "r3"))


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3"])
@pytest.mark.parametrize("q", [0.5, 0.9])
def test_function_matches_keras(q, layout):
    labels, probs = make_inputs("gce", layout, False, seed=4)
    leaf_o, leaf_r = probs.clone().requires_grad_(), probs.clone().requires_grad_()
    ours = LK.categorical_generalized_cross_entropy(labels, leaf_o, q=q)
    ref = keras.losses.categorical_generalized_cross_entropy(labels, leaf_r, q=q)
    assert_like_keras(ours, ref)
    g = torch.rand(ref.shape)
    torch.testing.assert_close(torch.autograd.grad(ours, leaf_o, g)[0], torch.autograd.grad(ref, leaf_r, g)[0])


def test_column_labels_are_squeezed_not_broadcast():
    """Keras 3.15 broadcasts (N, 1) labels against (N, C) into (N, N); losskit squeezes them (Keras' docs)."""
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.6, 0.4]])
    torch.testing.assert_close(
        LK.categorical_generalized_cross_entropy([[0], [1], [0]], probs, q=0.5),
        LK.categorical_generalized_cross_entropy([0, 1, 0], probs, q=0.5),
    )


@pytest.mark.parametrize("q", [0.0, 1.0, -0.5, 1.5])
def test_q_must_be_in_the_open_interval(q):
    with pytest.raises(losskit.LossValueError, match=r"q must be in the interval \(0, 1\)"):
        LK.CategoricalGeneralizedCrossEntropy(q=q)
    with pytest.raises(ValueError, match=r"q must be in the interval \(0, 1\)"):
        keras.losses.CategoricalGeneralizedCrossEntropy(q=q)


def test_label_range():
    with pytest.raises(losskit.LossIndexError, match="'y_true' label 2"):
        LK.categorical_generalized_cross_entropy([0, 2], torch.rand(2, 2), q=0.5)
