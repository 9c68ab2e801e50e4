"""losskit.keras.circle against Keras 3 itself."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import REDUCTIONS, assert_like_keras, gen, grad_check, keras_or_skip

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _embeddings(n=6, d=4, seed=0):
    x = torch.randn(n, d, generator=gen(seed))
    return torch.nn.functional.normalize(x, dim=1)


LABELS = torch.tensor([0, 0, 1, 1, 2, 3])  # 2 and 3 have no positive: loss 0, masked out
WEIGHTS = [None, torch.tensor([2.0, 1.0, 0.5, 1.0, 1.0, 3.0]), 1.5, torch.zeros(6)]


@pytest.mark.parametrize("weight", range(len(WEIGHTS)))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("options", [{}, {"gamma": 32.0, "margin": 0.25}, {"remove_diagonal": False}], ids=str)
def test_class_matches_keras(options, reduction, weight):
    y_pred = _embeddings()
    leaf_o, leaf_r = y_pred.clone().requires_grad_(), y_pred.clone().requires_grad_()
    sw = WEIGHTS[weight]
    ours = LK.Circle(reduction=reduction, **options)(LABELS, leaf_o, sample_weight=sw)
    # Keras multiplies the weight by the loss's mask in place, which fails for a scalar weight: give it (N,)
    ref_sw = None if sw is None else torch.broadcast_to(torch.as_tensor(sw), (6,)).clone()
    ref = keras.losses.Circle(reduction=reduction, **options)(LABELS, leaf_r, sample_weight=ref_sw)
    assert_like_keras(ours, ref, rtol=1e-5, atol=1e-5)
    grad_check(ours, ref, leaf_o, leaf_r, "y_pred", rtol=1e-4, atol=1e-4)


def test_function_with_references_matches_keras():
    y_pred, refs = _embeddings(5, 4, 1), _embeddings(6, 4, 2)
    kwargs = {"ref_labels": torch.tensor([0, 1, 1, 2, 3, 3]), "ref_embeddings": refs, "remove_diagonal": False}
    ours = LK.circle(torch.tensor([0, 1, 2, 3, 4]), y_pred, **kwargs)
    ref = keras.losses.circle(torch.tensor([0, 1, 2, 3, 4]), y_pred, **kwargs)
    assert_like_keras(ours, ref, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours._keras_mask, ref._keras_mask)


def test_gradient_is_finite_where_a_query_has_no_positive():
    y_pred = _embeddings().requires_grad_()
    loss = LK.Circle()(LABELS, y_pred)
    assert torch.isfinite(torch.autograd.grad(loss, y_pred)[0]).all()


def test_bad_shapes():
    with pytest.raises(losskit.LossValueError, match="'y_true'"):
        LK.circle(torch.zeros(3, 1, dtype=torch.long), _embeddings(3))
    with pytest.raises(losskit.LossValueError, match="'ref_embeddings'"):
        LK.circle(torch.zeros(3, dtype=torch.long), _embeddings(3), ref_embeddings=torch.rand(3, 5))
