"""losskit.keras.kl_divergence and losskit.keras.poisson against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import assert_like_keras, grid, grid_id, keras_or_skip, run_function_case, run_grid_cell

keras = keras_or_skip()

import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

GRID = grid("KLDivergence", "probability", [{}]) + grid("Poisson", "positive", [{}])


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=[grid_id(c) for c in GRID])
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight)


@pytest.mark.parametrize("layout", ["r2", "r3"])
@pytest.mark.parametrize(
    "fn, kind", [("kl_divergence", "probability"), ("kl_divergence", "regression"), ("poisson", "positive")]
)
def test_functions_match_keras(fn, kind, layout):
    run_function_case(keras, LK, fn, kind, {}, layout)


def test_kl_divergence_clips_and_is_zero_for_equal_distributions():
    p = torch.tensor([[0.2, 0.8], [1.0, 0.0]])
    torch.testing.assert_close(LK.kl_divergence(p, p), torch.zeros(2), atol=1e-6, rtol=0)
    assert_like_keras(LK.kl_divergence(p, p.flip(-1)), keras.losses.kl_divergence(p, p.flip(-1)))
