"""Shared helpers of the ``tests/test_keras_*.py`` files: inputs for each kind of Keras loss, ``sample_weight``
forms, the comparison with Keras 3 itself (values, dtypes, gradients), the grid of reductions x weights x options
every loss class runs, and the loader that runs Keras' own test modules against losskit.

Keras (``KERAS_BACKEND=torch``) is the oracle; :func:`keras_or_skip` imports it (and skips without it).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import pathlib
import types

import pytest
import torch

N, T, C = 4, 3, 5  # batch, time, classes: all different, so a misplaced axis cannot broadcast by luck
RTOL = ATOL = 1e-6
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none", None]
# layout: (rank, axis). ("r3a1": rank 3 with the class/mean axis at 1)
LAYOUTS = {"r2": (2, -1), "r3": (3, -1), "r3a1": (3, 1)}
WEIGHTS = [None, "sample", "sample_col", "element", "scalar", "zeros"]


def keras_or_skip():
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":  # keras was imported earlier with another backend
        pytest.skip("Keras is not running on the torch backend", allow_module_level=True)
    return keras


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def pred_shape(layout: str) -> tuple[int, ...]:
    return {"r2": (N, C), "r3": (N, T, C), "r3a1": (N, C, T)}[layout]


def loss_shape(layout: str) -> tuple[int, ...]:
    return (N,) if layout == "r2" else (N, T)


def make_inputs(kind: str, layout: str, from_logits: bool, seed: int):
    """``(y_true, y_pred)`` float32 (labels int64 for 'sparse') for a kind of loss and a layout."""
    g = gen(seed)
    shape = pred_shape(layout)
    axis = LAYOUTS[layout][1]
    if kind in ("categorical", "sparse", "gce"):
        if from_logits:
            y_pred = torch.randn(shape, generator=g) * 3
        elif kind == "gce":
            y_pred = torch.softmax(torch.randn(shape, generator=g), dim=axis)
        else:
            y_pred = torch.rand(shape, generator=g) + 0.05  # not normalised: Keras renormalises
            y_pred.view(-1)[::7] = 0.0  # exact zeros exercise the clip at 1e-7
        if kind in ("sparse", "gce"):
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
    if kind == "hinge01":  # labels 0/1, converted to -1/1
        return (torch.rand(shape, generator=g) < 0.5).float(), torch.randn(shape, generator=g)
    if kind == "hinge":  # labels -1/1 and one 0.5 (not converted then)
        y_true = torch.where(torch.rand(shape, generator=g) < 0.5, -1.0, 1.0)
        y_true.view(-1)[3] = 0.5
        return y_true, torch.randn(shape, generator=g)
    if kind == "positive":  # counts and rates (Poisson), non-negative values (MSLE, MAPE)
        y_true = torch.randint(0, 4, shape, generator=g).float()
        return y_true, torch.rand(shape, generator=g) * 3 + 0.01
    if kind == "probability":  # distributions (KL divergence), with some zeros
        y_true = torch.softmax(torch.randn(shape, generator=g) * 2, dim=-1)
        y_true.view(-1)[::7] = 0.0
        return y_true, torch.softmax(torch.randn(shape, generator=g), dim=-1)
    if kind == "mask":  # segmentation masks (Dice, Tversky)
        return (torch.rand(shape, generator=g) < 0.4).float(), torch.rand(shape, generator=g)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)  # regression


def make_weight(variant, layout: str, seed: int):
    g = gen(seed + 1000)
    if variant is None:
        return None
    if variant == "scalar":
        return 2.5
    if variant == "zeros":
        return torch.zeros(N)
    if variant == "element":
        # the per-sample loss's shape for rank 3; for rank 2, y_pred's shape (N, C): does not broadcast
        shape = loss_shape(layout) if layout != "r2" else (N, C)
        return torch.rand(shape, generator=g) + 0.1
    w = torch.rand(N, generator=g) + 0.1
    w[1] = 0.0
    return w if variant == "sample" else w.unsqueeze(1)


def keras_weight(sw, mask_shape=None):
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


def assert_like_keras(ours, ref, what="value", rtol=RTOL, atol=ATOL):
    assert isinstance(ours, torch.Tensor), f"{what}: {type(ours).__name__} is not a torch.Tensor"
    assert ours.shape == ref.shape, f"{what}: shape {tuple(ours.shape)} != Keras' {tuple(ref.shape)}"
    assert ours.dtype == ref.dtype, f"{what}: dtype {ours.dtype} != Keras' {ref.dtype}"
    torch.testing.assert_close(
        ours.detach(), ref.detach(), rtol=rtol, atol=atol, equal_nan=True, msg=lambda m: f"{what}: {m}"
    )


def grad_check(ours_out, ref_out, ours_leaf, ref_leaf, what, rtol=1e-5, atol=ATOL):
    g = torch.randn(ref_out.shape, generator=gen(7)) if ref_out.dim() else torch.tensor(1.75)
    (g_ref,) = torch.autograd.grad(ref_out, ref_leaf, grad_outputs=g.to(ref_out.dtype), allow_unused=True)
    (g_ours,) = torch.autograd.grad(ours_out, ours_leaf, grad_outputs=g.to(ours_out.dtype), allow_unused=True)
    g_ref = torch.zeros_like(ref_leaf) if g_ref is None else g_ref
    g_ours = torch.zeros_like(ours_leaf) if g_ours is None else g_ours
    torch.testing.assert_close(g_ours, g_ref, rtol=rtol, atol=atol, msg=lambda m: f"{what} gradient: {m}")


# --------------------------------------------------------------------------------------------- grid


def grid(cls: str, kind: str, option_sets: list[dict], layouts=("r2", "r3")) -> list[tuple]:
    """Every (class, kind, options, layout, reduction, weight) cell: the six reductions x the six weight forms."""
    return [
        (cls, kind, dict(opts), layout, red, w)
        for opts, layout, red, w in itertools.product(option_sets, layouts, REDUCTIONS, WEIGHTS)
    ]


def grid_id(cell) -> str:
    cls, _, kw, lay, red, w = cell
    return f"{cls}-{lay}-{red}-{'-'.join(f'{k}={v}' for k, v in kw.items())}-w={w}"


def run_grid_cell(keras, LK, cls, kind, kwargs, layout, reduction, weight, rtol=RTOL, atol=ATOL):
    """losskit's class against Keras' on one cell: value, dtype and gradient w.r.t. ``y_pred``; where Keras
    raises (a weight that does not broadcast), losskit must raise one of its errors naming the argument.
    Returns whether numbers were compared."""
    import losskit

    seed = sum(map(ord, f"{cls}{layout}")) % 1000
    kwargs = dict(kwargs)
    if "axis" in kwargs and kwargs["axis"] == "layout":
        kwargs["axis"] = LAYOUTS[layout][1]
    y_true, y_pred = make_inputs(kind, layout, kwargs.get("from_logits", False), seed)
    if kwargs.get("ignore_class") is not None:
        y_true.view(-1)[::3] = kwargs["ignore_class"]  # some of the entries are ignored
    sw = make_weight(weight, layout, seed)
    mask_shape = loss_shape(layout) if kwargs.get("ignore_class") is not None else None
    ref_loss = getattr(keras.losses, cls)(reduction=reduction, **kwargs)
    ours_loss = getattr(LK, cls)(reduction=reduction, **kwargs)
    ref_leaf = y_pred.clone().requires_grad_()
    ours_leaf = y_pred.clone().requires_grad_()
    try:
        ref = ref_loss(y_true, ref_leaf, sample_weight=keras_weight(sw, mask_shape))
    except (ValueError, RuntimeError, IndexError, TypeError):
        with pytest.raises(losskit.LossError, match="sample_weight"):
            ours_loss(y_true, ours_leaf, sample_weight=sw)
        return False
    ours = ours_loss(y_true, ours_leaf, sample_weight=sw)
    assert_like_keras(ours, ref, rtol=rtol, atol=atol)
    if ref.requires_grad:
        grad_check(ours, ref, ours_leaf, ref_leaf, "y_pred", rtol=max(rtol, 1e-5), atol=atol)
    return True


# ------------------------------------------------------------------------------ Keras' own test files


def keras_test_module(keras, name: str, alias: str) -> types.ModuleType:
    """A private copy of ``keras/src/losses/<name>.py`` (Keras' own tests), to patch without touching Keras'."""
    path = pathlib.Path(keras.__file__).parent / "src" / "losses" / f"{name}.py"
    if not path.exists():
        pytest.skip(f"this Keras wheel has no {path.name}", allow_module_level=True)
    spec = importlib.util.spec_from_file_location(alias, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def to_torch(value):
    """numpy arrays (and lists/tuples/dicts of them) as torch tensors of the same dtype."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, (list, tuple)) and any(isinstance(v, np.ndarray) for v in value):
        return type(value)(to_torch(v) for v in value)
    return value


def tolerance(dtype: torch.dtype) -> tuple[float, float]:
    return {torch.bfloat16: (1.6e-2, 1e-2), torch.float16: (2e-3, 1e-3)}.get(dtype, (1e-5, 1e-6))


def compare_with_keras(ours, ref, what: str) -> None:
    """The second oracle of the Keras-suite runs: losskit's result against the installed Keras' on the same
    call (shape, dtype, values; and the ``_keras_mask`` a function returns)."""
    ref = torch.as_tensor(ref)
    rtol, atol = tolerance(ref.dtype)
    assert_like_keras(ours, ref, what, rtol=rtol, atol=atol)
    ref_mask = getattr(ref, "_keras_mask", None)
    ours_mask = getattr(ours, "_keras_mask", None)
    assert (ref_mask is None) == (ours_mask is None), f"{what}: _keras_mask {ours_mask} vs Keras' {ref_mask}"
    if ref_mask is not None:
        assert torch.equal(ours_mask.bool(), torch.as_tensor(ref_mask).bool()), what


def run_function_case(keras, LK, fn, kind, kwargs, layout, seed=11, rtol=RTOL, atol=ATOL):
    """losskit's function against Keras' on one input: value, dtype, ``_keras_mask`` and gradient w.r.t. y_pred."""
    kwargs = dict(kwargs)
    if kwargs.get("axis") == "layout":
        kwargs["axis"] = LAYOUTS[layout][1]
    y_true, y_pred = make_inputs(kind, layout, kwargs.get("from_logits", False), seed)
    if kwargs.get("ignore_class") is not None:
        y_true.view(-1)[1::2] = kwargs["ignore_class"]
    ref_leaf, ours_leaf = y_pred.clone().requires_grad_(), y_pred.clone().requires_grad_()
    ref = getattr(keras.losses, fn)(y_true, ref_leaf, **kwargs)
    ours = getattr(LK, fn)(y_true, ours_leaf, **kwargs)
    compare_with_keras(ours, ref, fn)
    assert_like_keras(ours, ref, fn, rtol=rtol, atol=atol)
    grad_check(ours, ref, ours_leaf, ref_leaf, "y_pred", rtol=max(rtol, 1e-5), atol=atol)
