"""losskit.keras.ctc against Keras 3 itself (which runs torch's ctc_loss on the torch backend)."""

from __future__ import annotations

import pytest
import torch

from keras_helpers import REDUCTIONS, assert_like_keras, gen, grad_check, keras_or_skip

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _problem(batch=4, steps=12, classes=6, length=5, seed=0):
    g = gen(seed)
    labels = torch.randint(1, classes, (batch, length), generator=g)
    labels[1, 3:] = 0  # shorter sequences, zero-padded
    labels[2, :] = 0  # an empty one
    labels[3, 1] = labels[3, 0]  # a repeat: needs a blank between
    return labels, torch.randn(batch, steps, classes, generator=g)


@pytest.mark.parametrize("sample_weight", [None, "vector", "scalar"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_matches_keras(reduction, sample_weight):
    labels, logits = _problem()
    sw = {None: None, "vector": torch.tensor([1.0, 0.5, 2.0, 0.0]), "scalar": 3.0}[sample_weight]
    leaf_o, leaf_r = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = LK.CTC(reduction=reduction)(labels, leaf_o, sample_weight=sw)
    ref = keras.losses.CTC(reduction=reduction)(labels, leaf_r, sample_weight=sw)
    assert_like_keras(ours, ref, rtol=1e-5, atol=1e-5)
    grad_check(ours, ref, leaf_o, leaf_r, "y_pred", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_function_matches_keras(seed):
    labels, logits = _problem(batch=4, steps=7 + seed, classes=4 + seed, length=3, seed=seed)
    labels[0, 1] = 0  # a blank inside the sequence: Keras counts non-zero labels and takes the first that many
    assert_like_keras(LK.ctc(labels, logits), keras.losses.ctc(labels, logits), rtol=1e-5, atol=1e-5)


def test_float64_and_bfloat16_dtypes_like_keras():
    labels, logits = _problem()
    assert_like_keras(LK.ctc(labels, logits.double()), keras.losses.ctc(labels, logits.double()), rtol=1e-5, atol=1e-5)
    ours = LK.CTC(dtype="bfloat16")(labels, logits)
    assert ours.dtype == keras.losses.CTC(dtype="bfloat16")(labels, logits).dtype == torch.bfloat16


def test_bad_input():
    labels, logits = _problem()
    with pytest.raises(losskit.LossValueError, match="'y_true'"):
        LK.ctc(labels[0], logits)
    with pytest.raises(losskit.LossValueError, match="'y_pred'"):
        LK.ctc(labels, logits[0])
    with pytest.raises(losskit.LossIndexError, match="'y_true' label 9"):
        LK.ctc(torch.full((4, 2), 9), logits)
    with pytest.raises(losskit.LossValueError, match="longer than"):
        LK.ctc(torch.ones(4, 20, dtype=torch.long), logits)


def test_fused_function_equals_the_autograd_reference():
    import importlib

    ctc_module = importlib.import_module("losskit.keras.ctc")
    for seed in range(3):
        labels, logits = _problem(batch=4, steps=9, classes=5, length=4, seed=seed)
        torch.testing.assert_close(LK.ctc(labels, logits), ctc_module.ctc_reference(labels, logits))


def test_gradient_against_finite_differences():
    labels, logits = _problem(batch=4, steps=6, classes=4, length=2, seed=5)
    x = logits.double().requires_grad_()

    def loss64(x):  # the fused Function itself in float64 (the public function computes in float32, as Keras)
        import importlib

        ctc_module = importlib.import_module("losskit.keras.ctc")
        states = 2 * labels.shape[1] + 1
        ext = torch.zeros((4, states), dtype=torch.long)
        ext[:, 1::2] = labels
        skip = torch.zeros((4, states), dtype=torch.bool)
        skip[:, 2:] = ext[:, 2:] != ext[:, :-2]
        return ctc_module._CTC.apply(x, ext, skip, (labels != 0).sum(1))

    assert torch.autograd.gradcheck(loss64, (x,))
