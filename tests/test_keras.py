"""Oracle tests for ``losskit.keras`` against Keras 3 itself (``KERAS_BACKEND=torch``).

* One grid over every loss class x reduction x from_logits x label_smoothing / ignore_class / delta x
  sample_weight (None, per-sample ``(N,)``, ``(N, 1)``, per-element, scalar) x layout (rank 2; rank 3 with
  the class/mean axis last; rank 3 with axis 1). Values and gradients w.r.t. ``y_pred`` (torch autograd
  through Keras' ops on torch tensors) must match ``keras.losses.X(...)(y_true, y_pred, sample_weight)``
  within rtol = atol = 1e-6 (float32). Cells where Keras itself raises (a weight that does not broadcast)
  are listed statically and must raise a :class:`losskit.LossError` in losskit too.
* The functions against ``keras.losses.x``, the seed's worked numbers (seed 001), ``ignore_class`` and
  ``_keras_mask`` masking, dtypes, errors, and training a small ``keras.Sequential`` with losskit's losses.
"""

from __future__ import annotations

import itertools
import os
import warnings
import zlib

import pytest
import torch

os.environ["KERAS_BACKEND"] = "torch"
keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # keras was imported earlier with another backend
    pytest.skip("Keras is not running on the torch backend", allow_module_level=True)

import losskit  # noqa: E402
import losskit.keras as LK  # noqa: E402

# Keras' torch backend turns torch tensors into numpy arrays here and there, which numpy 2 warns about
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

RTOL = ATOL = 1e-6
N, T, C = 4, 3, 5  # batch, time, classes: all different, so a misplaced axis cannot broadcast by luck
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None]
# layout: (rank, axis). ("r3a1": rank 3 with the class/mean axis at 1)
LAYOUTS = {"r2": (2, -1), "r3": (3, -1), "r3a1": (3, 1)}
WEIGHTS = [None, "sample", "sample_col", "element", "scalar"]


# --------------------------------------------------------------------------------------------- data


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _pred_shape(layout: str) -> tuple[int, ...]:
    return {"r2": (N, C), "r3": (N, T, C), "r3a1": (N, C, T)}[layout]


def _loss_shape(layout: str) -> tuple[int, ...]:
    return (N,) if layout == "r2" else (N, T)


def make_inputs(kind: str, layout: str, from_logits: bool, seed: int):
    """``(y_true, y_pred)`` float32 (labels int64 for 'sparse') for a loss kind and layout."""
    g = _gen(seed)
    shape = _pred_shape(layout)
    axis = LAYOUTS[layout][1]
    if kind in ("categorical", "sparse"):
        if from_logits:
            y_pred = torch.randn(shape, generator=g) * 3
        else:
            y_pred = torch.rand(shape, generator=g) + 0.05  # not normalised: Keras renormalises
            y_pred.view(-1)[::7] = 0.0  # exact zeros exercise the clip at 1e-7
        if kind == "sparse":
            lab_shape = [d for i, d in enumerate(shape) if i != axis % len(shape)]
            return torch.randint(0, C, lab_shape, generator=g), y_pred
        y_true = torch.softmax(torch.randn(shape, generator=g) * 2, dim=axis)  # soft labels...
        onehot = torch.nn.functional.one_hot(y_true.argmax(axis), C).float().movedim(-1, axis % len(shape))
        y_true[0] = onehot[0]  # ...and one-hot ones
        return y_true, y_pred
    if kind == "binary":
        y_true = (torch.rand(shape, generator=g) < 0.5).float()
        y_true.view(-1)[::5] = 0.3  # soft labels too
        if from_logits:
            return y_true, torch.randn(shape, generator=g) * 4
        y_pred = torch.rand(shape, generator=g)
        y_pred.view(-1)[::6] = 0.0
        y_pred.view(-1)[1::6] = 1.0  # clipped to [1e-7, 1 - 1e-7]
        return y_true, y_pred
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)  # regression


def make_weight(variant, layout: str, seed: int):
    g = _gen(seed + 1000)
    if variant is None:
        return None
    if variant == "scalar":
        return 2.5
    if variant == "element":
        # the per-sample loss's shape for rank 3; for rank 2, y_pred's shape (N, C): does not broadcast
        shape = _loss_shape(layout) if layout != "r2" else (N, C)
        return torch.rand(shape, generator=g) + 0.1
    w = torch.rand(N, generator=g) + 0.1
    w[1] = 0.0
    return w if variant == "sample" else w.unsqueeze(1)


def _copy(sw, mask_shape=None):
    """The weight to give Keras. Keras' Loss multiplies a float32 ``sample_weight`` tensor by the mask IN
    PLACE, so it gets a copy; and, when there is a mask, a copy broadcast to the mask's shape, since the
    in-place product raises in Keras when the weight is smaller than the mask (losskit gives that value)."""
    if sw is None:
        return None
    if mask_shape is not None:
        sw = torch.as_tensor(sw, dtype=torch.float32)
        if sw.dim() < len(mask_shape) or sw.shape[-1] == 1:
            try:
                return torch.broadcast_to(sw, mask_shape).clone()
            except RuntimeError:
                pass
    return sw.clone() if isinstance(sw, torch.Tensor) else sw


def keras_raises(layout: str, weight) -> bool:
    """Cells where Keras' own squeeze/expand + broadcast rejects the weight: ``(N,)`` against a ``(N, T)``
    loss, and a ``(N, C)`` weight against a ``(N,)`` loss."""
    return (weight == "sample" and layout != "r2") or (weight == "element" and layout == "r2")


# --------------------------------------------------------------------------------------------- grid


def _grid():
    cells = []
    for layout, red, fl, ls, w in itertools.product(LAYOUTS, REDUCTIONS, [False, True], [0.0, 0.2], WEIGHTS):
        cells.append(
            (
                "CategoricalCrossentropy",
                "categorical",
                {"from_logits": fl, "label_smoothing": ls},
                layout,
                red,
                w,
            )
        )
        cells.append(("BinaryCrossentropy", "binary", {"from_logits": fl, "label_smoothing": ls}, layout, red, w))
    for layout, red, fl, ig, w in itertools.product(LAYOUTS, REDUCTIONS, [False, True], [None, 2], WEIGHTS):
        kw = {"from_logits": fl, "ignore_class": ig}
        cells.append(("SparseCategoricalCrossentropy", "sparse", kw, layout, red, w))
    for layout, red, w in itertools.product(["r2", "r3"], REDUCTIONS, WEIGHTS):
        cells.append(("MeanSquaredError", "regression", {}, layout, red, w))
        cells.append(("MeanAbsoluteError", "regression", {}, layout, red, w))
        for delta in (1.0, 0.3):
            cells.append(("Huber", "regression", {"delta": delta}, layout, red, w))
    return cells


GRID = _grid()
GRID_IDS = [f"{c}-{lay}-{red}-{'-'.join(f'{k}={v}' for k, v in kw.items())}-w={w}" for c, _, kw, lay, red, w in GRID]


def test_grid_is_not_trivial():
    # CCE, BCE, SCCE: 3 layouts x 6 reductions x 2 x 2 x 5 weights each; MSE, MAE, Huber x 2 deltas:
    # 2 layouts x 6 reductions x 5 weights each
    assert len(GRID) == 3 * 360 + 4 * 60
    failing = sum(keras_raises(lay, w) for _, _, _, lay, _, w in GRID)
    assert failing < len(GRID) // 3  # most cells compare numbers


def _grad_check(ours_out, ref_out, ours_leaf, ref_leaf, what):
    g = torch.randn(ref_out.shape, generator=_gen(7)) if ref_out.dim() else torch.tensor(1.75)
    (g_ref,) = torch.autograd.grad(ref_out, ref_leaf, grad_outputs=g, allow_unused=True)
    (g_ours,) = torch.autograd.grad(ours_out, ours_leaf, grad_outputs=g, allow_unused=True)
    if g_ref is None:
        g_ref = torch.zeros_like(ref_leaf)
    if g_ours is None:
        g_ours = torch.zeros_like(ours_leaf)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-5, atol=ATOL, msg=lambda m: f"{what} gradient: {m}")


def assert_like_keras(ours, ref, what="value"):
    assert isinstance(ours, torch.Tensor), f"{what}: {type(ours).__name__} is not a torch.Tensor"
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != Keras' {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != Keras' {ref.dtype}"
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=RTOL, atol=ATOL, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("cls, kind, kwargs, layout, reduction, weight", GRID, ids=GRID_IDS)
def test_class_grid_matches_keras(cls, kind, kwargs, layout, reduction, weight):
    seed = zlib.crc32(f"{cls}{layout}".encode()) % 1000
    kwargs = dict(kwargs)
    if kind != "regression":
        kwargs["axis"] = LAYOUTS[layout][1]
    y_true, y_pred = make_inputs(kind, layout, kwargs.get("from_logits", False), seed)
    if kwargs.get("ignore_class") is not None:
        y_true.view(-1)[::3] = kwargs["ignore_class"]  # some of the entries are ignored
    sw = make_weight(weight, layout, seed)
    mask_shape = _loss_shape(layout) if kwargs.get("ignore_class") is not None else None
    ref_loss = getattr(keras.losses, cls)(reduction=reduction, **kwargs)
    ours_loss = getattr(LK, cls)(reduction=reduction, **kwargs)
    ref_leaf = y_pred.clone().requires_grad_()
    ours_leaf = y_pred.clone().requires_grad_()
    if keras_raises(layout, weight):
        with pytest.raises(Exception):  # noqa: B017 - Keras raises whatever torch raises
            ref_loss(y_true, ref_leaf, sample_weight=_copy(sw, mask_shape))
        with pytest.raises(losskit.LossValueError, match="sample_weight"):
            ours_loss(y_true, ours_leaf, sample_weight=sw)
        return
    ref = ref_loss(y_true, ref_leaf, sample_weight=_copy(sw, mask_shape))
    ours = ours_loss(y_true, ours_leaf, sample_weight=sw)
    assert_like_keras(ours, ref)
    _grad_check(ours, ref, ours_leaf, ref_leaf, "y_pred")


# ---------------------------------------------------------------------------------------- functions


FUNCTION_CASES = (
    [
        ("categorical_crossentropy", "categorical", {"from_logits": fl, "label_smoothing": ls}, lay)
        for fl, ls, lay in itertools.product([False, True], [0.0, 0.2], LAYOUTS)
    ]
    + [
        ("binary_crossentropy", "binary", {"from_logits": fl, "label_smoothing": ls}, lay)
        for fl, ls, lay in itertools.product([False, True], [0.0, 0.2], LAYOUTS)
    ]
    + [
        ("sparse_categorical_crossentropy", "sparse", {"from_logits": fl, "ignore_class": ig}, lay)
        for fl, ig, lay in itertools.product([False, True], [None, 0], LAYOUTS)
    ]
    + [(f, "regression", {}, lay) for f in ("mean_squared_error", "mean_absolute_error") for lay in ("r2", "r3")]
    + [("huber", "regression", {"delta": d}, lay) for d in (1.0, 0.3, 2.5) for lay in ("r2", "r3")]
)


@pytest.mark.parametrize("fn, kind, kwargs, layout", FUNCTION_CASES, ids=lambda v: str(v))
def test_functions_match_keras(fn, kind, kwargs, layout):
    kwargs = dict(kwargs)
    if kind != "regression":
        kwargs["axis"] = LAYOUTS[layout][1]
    y_true, y_pred = make_inputs(kind, layout, kwargs.get("from_logits", False), seed=11)
    if kwargs.get("ignore_class") is not None:
        y_true.view(-1)[1::2] = kwargs["ignore_class"]
    ref_leaf, ours_leaf = y_pred.clone().requires_grad_(), y_pred.clone().requires_grad_()
    ref = getattr(keras.losses, fn)(y_true, ref_leaf, **kwargs)
    ours = getattr(LK, fn)(y_true, ours_leaf, **kwargs)
    assert_like_keras(ours, ref)
    _grad_check(ours, ref, ours_leaf, ref_leaf, "y_pred")
    ref_mask = getattr(ref, "_keras_mask", None)
    ours_mask = getattr(ours, "_keras_mask", None)
    assert (ref_mask is None) == (ours_mask is None)
    if ref_mask is not None:
        assert torch.equal(ours_mask, ref_mask.bool())


@pytest.mark.parametrize(
    "fn, y_true, y_pred",
    [
        ("mean_squared_error", [[1.0, 2.0, 3.0], [0.0, 1.0, 0.0]], [0.5, 2.0, 4.0]),  # broadcast (3,)
        ("mean_absolute_error", [[1.0], [2.0]], [1.5, 0.0]),  # (2, 1) vs (2,): Keras expands the rank-1 one
        ("huber", [1.0, 2.0, 5.0], [[0.5], [2.5], [1.0]]),
        ("mean_squared_error", 1.5, 0.25),  # scalars
        ("huber", [[[0.0], [1.0]]], [[0.2, 0.9], [3.0, -1.0]]),  # rank 3 (1,2,1) squeezed to (1,2)
    ],
)
def test_regression_broadcasting_like_keras(fn, y_true, y_pred):
    y_pred = torch.tensor(y_pred)
    y_true = torch.tensor(y_true)
    assert_like_keras(getattr(LK, fn)(y_true, y_pred), getattr(keras.losses, fn)(y_true, y_pred))
    cls = {
        "mean_squared_error": "MeanSquaredError",
        "mean_absolute_error": "MeanAbsoluteError",
        "huber": "Huber",
    }
    assert_like_keras(getattr(LK, cls[fn])()(y_true, y_pred), getattr(keras.losses, cls[fn])()(y_true, y_pred))


# ------------------------------------------------------------------------------------- seed numbers


SEED_CASES = [
    # (class, y_true, y_pred, the number seed 001 prints)
    ("CategoricalCrossentropy", [[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]], 1.176939),
    ("BinaryCrossentropy", [[0], [1]], [[0.4], [0.6]], 0.5108254),
    ("MeanAbsoluteError", [[0.0], [0.0]], [[1.0], [1.0]], 1.0),
    ("MeanSquaredError", [[0.0], [1.0]], [[1.0], [1.0]], 0.5),
    ("Huber", [[0], [1]], [[0.6], [0.4]], 0.18),
]


@pytest.mark.parametrize("cls, y_true, y_pred, expected", SEED_CASES, ids=[c[0] for c in SEED_CASES])
def test_seed_numbers(cls, y_true, y_pred, expected):
    """Seed 001's tf.keras examples. Its BCE number, 0.5108254, is tf.keras' log(p + 1e-7); Keras 3 clips p
    instead and gives -log(0.6) = 0.5108256 in float32 (within 1e-6 of the seed)."""
    ours = getattr(LK, cls)()(y_true, y_pred)
    assert ours.shape == () and ours.dtype == torch.float32
    assert abs(ours.item() - expected) <= 1e-6, (ours.item(), expected)
    assert_like_keras(ours, getattr(keras.losses, cls)()(y_true, y_pred))
    # numpy arrays and torch tensors give the same as nested lists
    np = pytest.importorskip("numpy")
    assert_like_keras(getattr(LK, cls)()(np.array(y_true), np.array(y_pred)), ours)
    assert_like_keras(getattr(LK, cls)()(torch.tensor(y_true), torch.tensor(y_pred)), ours)


def test_seed_categorical_per_sample_and_sparse():
    ours = LK.categorical_crossentropy([[0, 1, 0], [0, 0, 1]], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    torch.testing.assert_close(ours, torch.tensor([-torch.tensor(0.95).log(), -torch.tensor(0.1).log()]))
    sparse = LK.SparseCategoricalCrossentropy()([1, 2], [[0.05, 0.95, 0], [0.1, 0.8, 0.1]])
    assert abs(sparse.item() - 1.176939) <= 1e-6


# ------------------------------------------------------------------------------------- ignore_class


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("from_logits", [False, True])
def test_ignore_class_all_ignored_gives_zero(reduction, from_logits):
    y_true = torch.full((N,), 3)
    y_pred = torch.rand(N, C, generator=_gen(1)) + 0.1
    args = {"from_logits": from_logits, "ignore_class": 3, "reduction": reduction}
    leaf_o, leaf_r = y_pred.clone().requires_grad_(), y_pred.clone().requires_grad_()
    ours = LK.SparseCategoricalCrossentropy(**args)(y_true, leaf_o, sample_weight=torch.ones(N))
    ref = keras.losses.SparseCategoricalCrossentropy(**args)(y_true, leaf_r, sample_weight=torch.ones(N))
    assert_like_keras(ours, ref)
    assert torch.count_nonzero(ours) == 0
    assert torch.count_nonzero(torch.autograd.grad(ours.sum(), leaf_o, retain_graph=True)[0]) == 0
    _grad_check(ours, ref, leaf_o, leaf_r, "y_pred")


@pytest.mark.parametrize("ignore_class", [-1, 0, 255])
@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "sum", "mean_with_sample_weight", None])
def test_ignore_class_values(ignore_class, reduction):
    y_true = torch.tensor([[0, 1, 2], [ignore_class, 4, ignore_class], [3, ignore_class, 0], [2, 2, 1]])
    y_pred = torch.randn(N, T, C, generator=_gen(3))
    args = {"from_logits": True, "ignore_class": ignore_class, "reduction": reduction}
    sw = torch.tensor([[1.0], [2.0], [0.5], [0.0]])
    ours = LK.SparseCategoricalCrossentropy(**args)(y_true, y_pred, sample_weight=sw)
    ref = keras.losses.SparseCategoricalCrossentropy(**args)(y_true, y_pred, sample_weight=_copy(sw, (N, T)))
    assert_like_keras(ours, ref)
    assert torch.equal(sw, torch.tensor([[1.0], [2.0], [0.5], [0.0]]))  # unlike Keras, not changed in place
    if reduction == "sum_over_batch_size":  # the mean over the 9 kept entries, not over all 12
        per = LK.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True, ignore_class=ignore_class)
        keep = (y_true != ignore_class).float()
        torch.testing.assert_close(ours, (per * sw).sum() / keep.sum())


def test_keras_mask_on_y_pred_is_honoured():
    """A ``_keras_mask`` on ``y_pred`` (set by Keras masking layers) drops entries, as in Keras' Loss."""
    y_true, y_pred = make_inputs("categorical", "r3", True, seed=5)
    mask = torch.rand(N, T, generator=_gen(9)) < 0.6
    for reduction in REDUCTIONS:
        ref_pred, ours_pred = y_pred.clone(), y_pred.clone()
        ref_pred._keras_mask = mask
        ours_pred._keras_mask = mask
        args = {"from_logits": True, "reduction": reduction}
        ref = keras.losses.CategoricalCrossentropy(**args)(y_true, ref_pred)
        assert_like_keras(LK.CategoricalCrossentropy(**args)(y_true, ours_pred), ref, str(reduction))
    y_lab = torch.randint(0, C, (N, T), generator=_gen(2))
    y_lab[0, 0] = 4
    ref_pred, ours_pred = y_pred.clone(), y_pred.clone()
    ref_pred._keras_mask = ours_pred._keras_mask = mask
    args = {"from_logits": True, "ignore_class": 4}  # the two masks combine
    ref = keras.losses.SparseCategoricalCrossentropy(**args)(y_lab, ref_pred)
    assert_like_keras(LK.SparseCategoricalCrossentropy(**args)(y_lab, ours_pred), ref)


def test_mean_with_sample_weight_all_zero_weights_gives_zero():
    y_true, y_pred = make_inputs("regression", "r2", False, seed=4)
    for cls in ("MeanSquaredError", "MeanAbsoluteError", "Huber"):
        args = {"reduction": "mean_with_sample_weight"}
        ours = getattr(LK, cls)(**args)(y_true, y_pred, sample_weight=torch.zeros(N))
        assert_like_keras(ours, getattr(keras.losses, cls)(**args)(y_true, y_pred, sample_weight=torch.zeros(N)))
        assert ours.item() == 0.0


def test_sample_weight_as_list_and_numpy():
    np = pytest.importorskip("numpy")
    y_true, y_pred = make_inputs("binary", "r2", True, seed=8)
    ref = keras.losses.BinaryCrossentropy(from_logits=True)(y_true, y_pred, sample_weight=[0.5, 1.0, 2.0, 0.0])
    for sw in ([0.5, 1.0, 2.0, 0.0], np.array([0.5, 1.0, 2.0, 0.0]), torch.tensor([0.5, 1.0, 2.0, 0.0])):
        assert_like_keras(LK.BinaryCrossentropy(from_logits=True)(y_true, y_pred, sample_weight=sw), ref)


def test_empty_batch_like_keras():
    y_true, y_pred = torch.zeros(0, C), torch.zeros(0, C)
    for reduction in ("sum_over_batch_size", "sum"):
        ours = LK.MeanSquaredError(reduction=reduction)(y_true, y_pred)
        assert_like_keras(ours, keras.losses.MeanSquaredError(reduction=reduction)(y_true, y_pred))


# ------------------------------------------------------------------------------------------- dtypes


def test_dtypes_follow_keras():
    np = pytest.importorskip("numpy")
    a = np.array([[0.0, 1.0], [1.0, 0.0]])
    b = np.array([[0.2, 0.8], [0.6, 0.4]])
    for fn in ("mean_squared_error", "binary_crossentropy", "categorical_crossentropy", "huber"):
        # functions keep a float64 array's dtype; nested lists of Python floats are float32
        assert getattr(LK, fn)(a, b).dtype == getattr(keras.losses, fn)(a, b).dtype == torch.float64
        assert getattr(LK, fn)(a.tolist(), b.tolist()).dtype == torch.float32
        assert_like_keras(getattr(LK, fn)(a, b), getattr(keras.losses, fn)(a, b))
    t64 = torch.tensor(b, dtype=torch.float64)
    for cls in ("MeanSquaredError", "BinaryCrossentropy", "CategoricalCrossentropy"):
        # a Loss object computes in its dtype: float32 unless told otherwise
        assert_like_keras(getattr(LK, cls)()(a, t64), getattr(keras.losses, cls)()(a, t64))
        for reduction in REDUCTIONS:
            # float64 computes in float64; but Keras' divide-no-nan returns float32 for the mean reductions
            ours64 = getattr(LK, cls)(dtype="float64", reduction=reduction)(a, t64)
            assert_like_keras(ours64, getattr(keras.losses, cls)(dtype="float64", reduction=reduction)(a, t64))
            assert ours64.dtype == (torch.float64 if reduction in ("sum", "none", None) else torch.float32)
        assert getattr(LK, cls)(dtype=torch.float64).dtype == "float64"
        assert getattr(LK, cls)().dtype == getattr(keras.losses, cls)().dtype == "float32"


@pytest.mark.parametrize("dtype, tol", [("float16", 2e-3), ("bfloat16", 1.6e-2)])
@pytest.mark.parametrize(
    "cls, kind, kwargs",
    [
        ("CategoricalCrossentropy", "categorical", {"from_logits": True}),
        ("CategoricalCrossentropy", "categorical", {}),
        ("SparseCategoricalCrossentropy", "sparse", {"from_logits": True}),
        ("BinaryCrossentropy", "binary", {"from_logits": True}),
        ("MeanSquaredError", "regression", {}),
        ("Huber", "regression", {}),
    ],
)
def test_half_precision_dtype_like_keras(dtype, tol, cls, kind, kwargs):
    """Low precision: the dtype is Keras', the values within about one unit in the last place (losskit's
    fused cross entropy accumulates in float32, Keras' log_softmax does not)."""
    y_true, y_pred = make_inputs(kind, "r2", kwargs.get("from_logits", False), seed=21)
    for reduction in ("sum_over_batch_size", None):
        ours = getattr(LK, cls)(dtype=dtype, reduction=reduction, **kwargs)(y_true, y_pred)
        ref = getattr(keras.losses, cls)(dtype=dtype, reduction=reduction, **kwargs)(y_true, y_pred)
        assert ours.dtype == ref.dtype == getattr(torch, dtype)
        torch.testing.assert_close(ours.float(), ref.float(), rtol=tol, atol=tol)


def test_defaults_and_config_like_keras():
    import inspect

    for cls in ("CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy"):
        ours_sig = inspect.signature(getattr(LK, cls))
        ref_sig = inspect.signature(getattr(keras.losses, cls))
        assert list(ours_sig.parameters) == list(ref_sig.parameters)
        for p in ours_sig.parameters.values():
            assert p.default == ref_sig.parameters[p.name].default, (cls, p.name)
    for cls in ("MeanSquaredError", "MeanAbsoluteError", "Huber"):
        ours_sig, ref_sig = inspect.signature(getattr(LK, cls)), inspect.signature(getattr(keras.losses, cls))
        assert [(p.name, p.default) for p in ours_sig.parameters.values()] == [
            (p.name, p.default) for p in ref_sig.parameters.values()
        ]
    for fn in LK.__all__:
        if fn[0].islower():
            ours_sig, ref_sig = (
                inspect.signature(getattr(LK, fn)),
                inspect.signature(getattr(keras.losses, fn)),
            )
            assert [(p.name, p.default) for p in ours_sig.parameters.values()] == [
                (p.name, p.default) for p in ref_sig.parameters.values()
            ], fn
    loss = LK.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, axis=1, reduction="sum", name="cce")
    again = LK.CategoricalCrossentropy.from_config(loss.get_config())
    assert again.get_config() == loss.get_config()
    assert (again.from_logits, again.label_smoothing, again.axis, again.reduction, again.name) == (
        True,
        0.1,
        1,
        "sum",
        "cce",
    )
    assert LK.Huber(delta=0.5).delta == 0.5 and LK.Huber().name == keras.losses.Huber().name


def test_categorical_single_class_warns_like_keras():
    with pytest.warns(SyntaxWarning, match="binary_crossentropy"):
        LK.categorical_crossentropy([[1.0], [1.0]], [[0.3], [0.9]])


# ------------------------------------------------------------------------------------------- errors


def test_shape_mismatch_errors():
    y4x5 = torch.rand(N, C)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*'y_pred'"):
        LK.CategoricalCrossentropy()(torch.rand(N, C + 1), y4x5)
    with pytest.raises(ValueError):  # Keras raises ValueError there too
        keras.losses.CategoricalCrossentropy()(torch.rand(N, C + 1), y4x5)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*'y_pred'"):
        LK.binary_crossentropy(torch.rand(N, 2), y4x5)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*'y_pred'"):
        LK.MeanSquaredError()(torch.rand(N, 2), y4x5)
    with pytest.raises(losskit.LossValueError, match="'y_true'.*without its class axis"):
        LK.SparseCategoricalCrossentropy()(torch.zeros(N + 1, dtype=torch.long), y4x5)
    with pytest.raises(ValueError):
        keras.losses.SparseCategoricalCrossentropy()(torch.zeros(N + 1, dtype=torch.long), y4x5)
    with pytest.raises(losskit.LossValueError, match="'y_pred' must have rank"):
        LK.sparse_categorical_crossentropy(torch.tensor(0), torch.tensor(0.5))
    with pytest.raises(losskit.LossValueError, match="'sample_weight'"):
        LK.MeanSquaredError()(y4x5, y4x5, sample_weight=torch.ones(N + 1))
    with pytest.raises(losskit.LossValueError, match="'y_pred'.*ragged"):
        LK.mean_squared_error([[1.0, 2.0]], [[1.0], [2.0, 3.0]])
    with pytest.raises(losskit.LossTypeError, match="'y_pred'"):
        LK.mean_squared_error([1.0], "abc")
    with pytest.raises(losskit.LossTypeError, match="'y_true'"):
        LK.mean_squared_error(torch.tensor([1j]), [1.0])


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
        LK.sparse_categorical_crossentropy([0.0, 2.0], torch.rand(2, 3, generator=_gen(0))),
        LK.sparse_categorical_crossentropy([0, 2], torch.rand(2, 3, generator=_gen(0))),
    )


@pytest.mark.parametrize(
    "cls",
    ["CategoricalCrossentropy", "SparseCategoricalCrossentropy", "BinaryCrossentropy", "MeanSquaredError"],
)
@pytest.mark.parametrize("reduction", ["auto", "avg", "Sum", 3])
def test_invalid_reduction(cls, reduction):
    with pytest.raises(losskit.LossValueError, match="'reduction'"):
        getattr(LK, cls)(reduction=reduction)
    with pytest.raises(ValueError, match="reduction"):
        getattr(keras.losses, cls)(reduction=reduction)


def test_invalid_options():
    with pytest.raises(losskit.LossValueError, match="'label_smoothing'"):
        LK.CategoricalCrossentropy(label_smoothing=1.5)
    with pytest.raises(losskit.LossValueError, match="'label_smoothing'"):
        LK.binary_crossentropy([1.0], [0.5], label_smoothing=-0.1)
    with pytest.raises(losskit.LossTypeError, match="'label_smoothing'"):
        LK.BinaryCrossentropy(label_smoothing="0.1")
    with pytest.raises(losskit.LossValueError, match="'delta'"):
        LK.Huber(delta=-1.0)
    with pytest.raises(losskit.LossValueError, match="'delta'"):
        LK.huber([1.0], [0.5], delta=-0.5)
    with pytest.raises(losskit.LossTypeError, match="'axis'"):
        LK.categorical_crossentropy([[1.0, 0.0]], [[0.5, 0.5]], axis=True)
    with pytest.raises(losskit.LossIndexError, match="'axis' 2"):
        LK.categorical_crossentropy([[1.0, 0.0]], [[0.5, 0.5]], axis=2)
    with pytest.raises(losskit.LossIndexError, match="'axis' -3"):
        LK.BinaryCrossentropy(axis=-3)([[1.0, 0.0]], [[0.5, 0.5]])
    with pytest.raises(losskit.LossTypeError, match="'ignore_class'"):
        LK.SparseCategoricalCrossentropy(ignore_class="void")
    with pytest.raises(losskit.LossTypeError, match="'dtype'"):
        LK.MeanSquaredError(dtype="int32")
    with pytest.raises(losskit.LossTypeError, match="'dtype'"):
        LK.MeanSquaredError(dtype=torch.int64)


# ------------------------------------------------------------------------------------- Keras models


def _separable(num: int, features: int, classes: int, seed: int):
    g = _gen(seed)
    x = torch.randn(num, features, generator=g)
    w = torch.randn(features, classes, generator=g)
    return x.numpy(), (x @ w).argmax(1).numpy()


def _fit(model, loss, x, y, epochs=6):
    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.05), loss=loss)
    return model.fit(x, y, epochs=epochs, batch_size=32, verbose=0, shuffle=False).history["loss"]


def test_keras_model_trains_with_categorical_crossentropy():
    np = pytest.importorskip("numpy")
    keras.utils.set_random_seed(0)
    x, labels = _separable(192, 6, 3, seed=0)
    y = np.eye(3, dtype="float32")[labels]
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    history = _fit(model, LK.CategoricalCrossentropy(from_logits=True), x, y)
    assert all(np.isfinite(history)) and history[-1] < 0.6 * history[0], history
    # evaluate() with losskit's loss gives Keras' own loss on the trained model
    logits = model.predict(x, verbose=0)
    expected = keras.losses.CategoricalCrossentropy(from_logits=True)(y, logits)
    got = model.evaluate(x, y, batch_size=len(x), verbose=0)
    assert abs(got - float(expected)) < 1e-5
    # reduction=None: Keras weights and reduces losskit's per-sample loss, exactly as for its own losses
    sw = np.linspace(0.0, 2.0, len(x)).astype("float32")
    model.compile(loss=LK.CategoricalCrossentropy(from_logits=True, reduction=None))
    expected = keras.losses.CategoricalCrossentropy(from_logits=True)(y, logits, sample_weight=sw)
    got = model.evaluate(x, y, sample_weight=sw, batch_size=len(x), verbose=0)
    assert abs(got - float(expected)) < 1e-5


def test_keras_model_trains_with_binary_and_sparse():
    np = pytest.importorskip("numpy")
    keras.utils.set_random_seed(0)
    x, labels = _separable(192, 5, 2, seed=1)
    y = labels.astype("float32")[:, None]
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(1, activation="sigmoid")])
    history = _fit(model, LK.BinaryCrossentropy(), x, y)
    assert all(np.isfinite(history)) and history[-1] < 0.6 * history[0], history
    expected = keras.losses.BinaryCrossentropy()(y, model.predict(x, verbose=0))
    assert abs(model.evaluate(x, y, batch_size=len(x), verbose=0) - float(expected)) < 1e-5

    x, labels = _separable(192, 6, 4, seed=2)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4)])
    history = _fit(model, LK.SparseCategoricalCrossentropy(from_logits=True), x, labels, epochs=4)
    assert all(np.isfinite(history)) and history[-1] < 0.7 * history[0], history
    # ignore_class through compile: the mean over the kept labels, as with Keras' own loss
    logits = model.predict(x, verbose=0)
    for reduction in ("sum_over_batch_size", None):
        model.compile(loss=LK.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0, reduction=reduction))
        expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=0)(labels, logits)
        assert abs(model.evaluate(x, labels, batch_size=len(x), verbose=0) - float(expected)) < 1e-5


@pytest.mark.parametrize(
    "cls, y_true, y_pred",
    [
        ("BinaryCrossentropy", [1.0, 0.0, 1.0], [[0.8], [0.3], [0.6]]),  # (N,) vs (N, 1): y_true expanded
        ("BinaryCrossentropy", [[1.0], [0.0]], [0.8, 0.3]),
        ("SparseCategoricalCrossentropy", [[1], [0]], [[0.2, 0.7, 0.1], [0.5, 0.25, 0.25]]),  # (N, 1) labels
        ("CategoricalCrossentropy", [[1.0, 0.0]], [0.3, 0.7]),  # rank 2 vs rank 1: broadcasts? no: raises
    ],
)
def test_class_rank_fixups_like_keras(cls, y_true, y_pred):
    y_true, y_pred = torch.tensor(y_true), torch.tensor(y_pred)
    try:
        ref = getattr(keras.losses, cls)()(y_true, y_pred)
    except ValueError:
        with pytest.raises(losskit.LossValueError, match="'y_true'"):
            getattr(LK, cls)()(y_true, y_pred)
        return
    assert_like_keras(getattr(LK, cls)()(y_true, y_pred), ref)


# ---------------------------------------------------------------------------------------- the layer


def test_from_logits_categorical_rides_the_fused_engine(monkeypatch):
    calls = []
    real = losskit.functional.cross_entropy

    def spy(input, target, *args, **kwargs):
        calls.append((tuple(input.shape), tuple(target.shape), target.dtype, kwargs.get("reduction")))
        return real(input, target, *args, **kwargs)

    monkeypatch.setattr(losskit.functional, "cross_entropy", spy)
    y_true, y_pred = make_inputs("categorical", "r3a1", True, seed=0)
    LK.CategoricalCrossentropy(from_logits=True, axis=1)(y_true, y_pred)
    labels, logits = make_inputs("sparse", "r3", True, seed=0)
    LK.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    assert calls == [((N, C, T), (N, C, T), torch.float32, "none"), ((N, C, T), (N, T), torch.int64, "none")]
    LK.categorical_crossentropy(y_true, y_pred.abs(), axis=1)  # probabilities do not
    assert len(calls) == 2


def test_library_never_imports_keras():
    import subprocess
    import sys

    code = "import sys, losskit, losskit.keras; assert 'keras' not in sys.modules, 'keras was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_no_warnings_in_normal_use():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y_true, y_pred = make_inputs("categorical", "r2", True, seed=3)
        LK.CategoricalCrossentropy(from_logits=True)(y_true, y_pred)
        LK.MeanSquaredError()(y_true, y_pred)
