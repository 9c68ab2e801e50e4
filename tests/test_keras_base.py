"""losskit.keras.base: the Loss base class (subclassed as keras.losses.Loss is), reductions, sample_weight,
masks, dtypes and Keras' floatx, against Keras 3 itself."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from keras_helpers import REDUCTIONS, N, assert_like_keras, gen, keras_or_skip, make_inputs

keras = keras_or_skip()

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402
from losskit.keras import base  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


class Squared(LK.Loss):
    def call(self, y_true, y_pred):
        return (y_true - y_pred) ** 2


class KerasSquared(keras.losses.Loss):
    def call(self, y_true, y_pred):
        return (y_true - y_pred) ** 2


WEIGHTS = [None, 0.5, [0.4, 0.3, 0.2, 0.1], [[0.4], [0.3], [0.2], [0.1]], [[1.0, 2.0, 0.0]] * 4, 0]


@pytest.mark.parametrize("weight", range(len(WEIGHTS)))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("rank", [1, 2])
def test_subclass_reduces_like_keras(rank, reduction, weight):
    y_true, y_pred = make_inputs("regression", "r2", False, seed=1)
    y_true, y_pred = y_true[:, :3], y_pred[:, :3]
    if rank == 1:
        y_true, y_pred = y_true[:, 0], y_pred[:, 0]
    sw = WEIGHTS[weight]
    try:
        ref = KerasSquared(reduction=reduction)(y_true, y_pred, sample_weight=sw)
    except (ValueError, RuntimeError):
        with pytest.raises(losskit.LossValueError, match="sample_weight"):
            Squared(reduction=reduction)(y_true, y_pred, sample_weight=sw)
        return
    assert_like_keras(Squared(reduction=reduction)(y_true, y_pred, sample_weight=sw), ref)


def test_subclass_name_and_config():
    loss = Squared()
    assert loss.name == "squared" and loss.get_config() == {"name": "squared", "reduction": "sum_over_batch_size"}
    assert Squared.from_config({"name": "sq", "reduction": "sum"}).reduction == "sum"
    assert isinstance(loss, keras.losses.Loss)  # once Keras is imported, Keras sees its own base class


def test_call_not_defined_raises_not_implemented():
    with pytest.raises(NotImplementedError, match="call"):
        LK.Loss()([1.0], [1.0])


def test_mask_on_y_pred_and_sample_weight_like_keras():
    y_true = torch.tensor([1.0, 0.0, 1.0, 0.0])
    for reduction in REDUCTIONS:
        ref_pred, ours_pred = torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.1, 0.2, 0.3, 0.4])
        ref_pred._keras_mask = ours_pred._keras_mask = torch.tensor([True, False, True, True])
        sw = torch.tensor([0.4, 0.3, 0.2, 0.1])
        ref = KerasSquared(reduction=reduction)(y_true, ref_pred, sample_weight=sw.clone())
        assert_like_keras(Squared(reduction=reduction)(y_true, ours_pred, sample_weight=sw), ref, str(reduction))


def test_empty_batch_like_keras():
    y_true, y_pred = torch.zeros(0, 5), torch.zeros(0, 5)
    for reduction in ("sum_over_batch_size", "sum"):
        ours = LK.MeanSquaredError(reduction=reduction)(y_true, y_pred)
        assert_like_keras(ours, keras.losses.MeanSquaredError(reduction=reduction)(y_true, y_pred))


def test_dtypes_follow_keras():
    np = pytest.importorskip("numpy")
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    b = np.array([[0.2, 0.8], [0.6, 0.4]])
    for fn in ("mean_squared_error", "binary_crossentropy", "categorical_crossentropy", "huber", "poisson"):
        # functions keep a float64 array's dtype; nested lists of Python floats are floatx (float32)
        assert getattr(LK, fn)(a, b).dtype == getattr(keras.losses, fn)(a, b).dtype == torch.float64
        assert getattr(LK, fn)(a.tolist(), b.tolist()).dtype == torch.float32
        assert_like_keras(getattr(LK, fn)(a, b), getattr(keras.losses, fn)(a, b))
    t64 = torch.tensor(b, dtype=torch.float64)
    for cls in ("MeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy", "KLDivergence", "LogCosh"):
        assert_like_keras(getattr(LK, cls)()(a, t64), getattr(keras.losses, cls)()(a, t64))
        for reduction in REDUCTIONS:
            # float64 computes in float64; but Keras' divide-no-nan returns float32 for the mean reductions
            ours64 = getattr(LK, cls)(dtype="float64", reduction=reduction)(a, t64)
            assert_like_keras(ours64, getattr(keras.losses, cls)(dtype="float64", reduction=reduction)(a, t64))
            assert ours64.dtype == (torch.float64 if reduction in ("sum", "none", None) else torch.float32)
        assert getattr(LK, cls)(dtype=torch.float64).dtype == "float64"
        assert getattr(LK, cls)().dtype == getattr(keras.losses, cls)().dtype == "float32"


def test_dtype_policy_and_read_only_dtype():
    policy = keras.DTypePolicy("mixed_bfloat16")
    assert LK.MeanSquaredError(dtype=policy).dtype == keras.losses.MeanSquaredError(dtype=policy).dtype == "bfloat16"
    with pytest.raises(AttributeError):
        LK.MeanSquaredError().dtype = "float64"


def test_floatx_is_honoured_when_keras_is_imported():
    old = keras.config.floatx()
    try:
        keras.config.set_floatx("float64")
        assert LK.MeanSquaredError().dtype == keras.losses.MeanSquaredError().dtype == "float64"
        assert LK.mean_squared_error([[1.0, 2.0]], [[0.5, 0.5]]).dtype == torch.float64
        assert LK.Huber()([[1.0]], [[0.5]]).dtype == keras.losses.Huber()([[1.0]], [[0.5]]).dtype
        keras.config.set_floatx("float16")
        assert LK.Poisson()([[1.0]], [[0.5]]).dtype == torch.float16
    finally:
        keras.config.set_floatx(old)
    assert LK.MeanSquaredError().dtype == "float32"


@pytest.mark.parametrize("cls", [n for n in LK.__all__ if n[0].isupper() and n != "Loss"])
@pytest.mark.parametrize("reduction", ["auto", "avg", "Sum", 3])
def test_invalid_reduction_says_what_keras_says(cls, reduction):
    with pytest.raises(losskit.LossValueError, match="Invalid value for argument `reduction`"):
        getattr(LK, cls)(reduction=reduction)
    with pytest.raises(ValueError, match="Invalid value for argument"):
        getattr(keras.losses, cls)(reduction=reduction)


def test_invalid_dtype_and_inputs():
    with pytest.raises(losskit.LossTypeError, match="'dtype'"):
        LK.MeanSquaredError(dtype="int32")
    with pytest.raises(losskit.LossTypeError, match="'dtype'"):
        LK.MeanSquaredError(dtype=torch.int64)
    with pytest.raises(losskit.LossTypeError, match="'y_pred'"):
        LK.MeanSquaredError()([1.0], object())


def test_squeeze_or_expand_like_keras():
    from keras.src.losses.loss import squeeze_or_expand_to_same_rank

    shapes = [
        ((3,), (3, 1)),
        ((3, 2), (3, 2, 1)),
        ((3, 1), (3,)),
        ((3, 2, 1), (3, 2)),
        ((2,), (2, 3)),
        ((4, 1), (4, 1)),
    ]
    for s1, s2 in shapes:
        ours = base.squeeze_or_expand(torch.ones(s1), torch.ones(s2))
        ref = squeeze_or_expand_to_same_rank(torch.ones(s1), torch.ones(s2))
        assert [o.shape for o in ours] == [r.shape for r in ref]


def test_sample_weight_is_not_modified_in_place():
    sw = torch.tensor([1.0, 2.0, 0.5, 0.0])
    y_true = torch.randint(0, 5, (N,), generator=gen(0))
    y_true[0] = 1
    LK.SparseCategoricalCrossentropy(ignore_class=1)(y_true, torch.rand(N, 5), sample_weight=sw)
    assert torch.equal(sw, torch.tensor([1.0, 2.0, 0.5, 0.0]))


def test_library_never_imports_keras():
    code = "import sys, losskit, losskit.keras; assert 'keras' not in sys.modules, 'keras was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_no_raise_outside_the_checks_module():
    """Every user-facing exception of losskit.keras is raised by a losskit._checks.keras helper."""
    import ast
    import pathlib

    package = pathlib.Path(LK.__file__).parent
    raises = [
        f"{path.name}:{node.lineno}"
        for path in sorted(package.glob("*.py"))
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Raise)
    ]
    assert raises == []


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
@pytest.mark.parametrize(
    "cls, kind, kwargs",
    [
        ("SparseCategoricalCrossentropy", "sparse", {"from_logits": True}),
        ("BinaryCrossentropy", "binary", {"from_logits": True}),
        ("MeanSquaredError", "regression", {}),
        ("Huber", "regression", {}),
        ("LogCosh", "regression", {}),
        ("Hinge", "hinge", {}),
    ],
)
def test_half_precision_dtype_like_keras(dtype, tol, cls, kind, kwargs):
    """Low precision: the dtype is Keras', the values within about one unit in the last place."""
    y_true, y_pred = make_inputs(kind, "r2", kwargs.get("from_logits", False), seed=21)
    for reduction in ("sum_over_batch_size", None):
        ours = getattr(LK, cls)(dtype=dtype, reduction=reduction, **kwargs)(y_true, y_pred)
        ref = getattr(keras.losses, cls)(dtype=dtype, reduction=reduction, **kwargs)(y_true, y_pred)
        assert ours.dtype == ref.dtype == getattr(torch, dtype)
        torch.testing.assert_close(ours.float(), ref.float(), rtol=tol, atol=tol)
