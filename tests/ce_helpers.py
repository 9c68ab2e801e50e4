"""Shared grids, input makers and hypothesis strategies of the cross-entropy test files
(``test_cross_entropy*.py``, ``test_nll_loss.py``)."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from helpers import class_target, randn_logits
from helpers import target_shape as _target_shape

REDUCTIONS = ("none", "mean", "sum")


DTYPES = {"f64": torch.float64, "f32": torch.float32}


LOW_DTYPES = {"f16": torch.float16, "bf16": torch.bfloat16}


# input shapes: (C,) unbatched, (N, C), (N, C, d1, ..., dK)
SHAPES = {
    "C5": (5,),
    "1x1": (1, 1),
    "5x3": (5, 3),
    "7x13": (7, 13),
    "0x4": (0, 4),
    "K1_2x3x4": (2, 3, 4),
    "K2_2x3x4x5": (2, 3, 4, 5),
    "K3_2x3x2x2x3": (2, 3, 2, 2, 3),
    "3x1000": (3, 1000),
}


IGNORE_INDICES = {"ii-100": -100, "ii0": 0, "ii3": 3, "ii-1": -1, "ii1000": 1000}


SMOOTHINGS = {"ls0": 0.0, "ls0.1": 0.1, "ls0.7": 0.7, "ls1": 1.0, "ls-0.3": -0.3}


def logits(shape, g: torch.Generator, scale: float = 2.0) -> torch.Tensor:
    return randn_logits(shape, g, scale)


def indices_target(shape, ignore_index: int, g: torch.Generator) -> torch.Tensor:
    """Class indices in [0, C); every third one (from the second) is set to ``ignore_index``."""
    return class_target(shape, g, ignore_index)


def probability_target(shape, kind: str, g: torch.Generator) -> torch.Tensor:
    """Rows (along the class dim) of softmax(randn), or non-negative rows that do not sum to 1."""
    raw = torch.randn(shape, generator=g, dtype=torch.float64)
    dim = 0 if len(shape) == 1 else 1
    if kind == "softmax":
        return torch.softmax(raw * 2, dim=dim)
    # non-negative rows that do not sum to 1 (about 3.2 on average, any C); bigger sums only grow the fp32
    # cancellation in the gradient p·Σt - t, which both torch and losskit then get wrong by some ulps
    return raw.abs() * (4.0 / shape[dim])


def param_ids(d: dict) -> dict:
    return {"argvalues": list(d.values()), "ids": list(d.keys())}


# (label_smoothing, dtype) pairs of the big grids: every smoothing in float64; float32 (which only adds
# rounding) at the values that take different code paths (none, some, all), to keep the file fast
SMOOTHING_DTYPE = {
    f"{ls_id}-{dt_id}": (ls, dt)
    for dt_id, dt in DTYPES.items()
    for ls_id, ls in SMOOTHINGS.items()
    if dt == torch.float64 or ls in (0.0, 0.1, 1.0)
}


MODULE_KWARGS = {
    "default": {},
    "sum": {"reduction": "sum"},
    "none_ignore1": {"reduction": "none", "ignore_index": 1},
    "weight": {"weight": "w"},
    "weight_smooth": {"weight": "w", "label_smoothing": 0.2},
    "weight_ignore_none_smooth": {"weight": "w", "ignore_index": 0, "reduction": "none", "label_smoothing": 0.4},
    "smooth_neg": {"label_smoothing": -0.1, "reduction": "sum"},
}


# --------------------------------------------------------------------------------------- hypothesis


F64 = torch.float64


@st.composite
def class_problems(draw, *, allow_smoothing=True, allow_weight=True, allow_ignore=True):
    """(x, y, kwargs) with random N, C, K dims, scale, weights, ignore_index, smoothing and reduction."""
    kdims = draw(st.lists(st.integers(1, 3), max_size=3))
    unbatched = not kdims and draw(st.booleans())
    n = draw(st.integers(0, 6))
    c = draw(st.integers(1, 9))
    seed = draw(st.integers(0, 2**31 - 1))
    scale = draw(st.sampled_from([0.01, 1.0, 3.0, 30.0, 300.0]))
    g = torch.Generator().manual_seed(seed)
    shape = (c,) if unbatched else (n, c, *kdims)
    x = torch.randn(shape, generator=g, dtype=F64) * scale
    y = torch.randint(0, c, _target_shape(shape), generator=g)
    kwargs = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    if allow_ignore and draw(st.booleans()):
        ignore_index = draw(st.one_of(st.just(-100), st.integers(-3, c + 2)))
        frac = draw(st.sampled_from([0.0, 0.3, 1.0]))
        mask = torch.rand(y.shape, generator=g) < frac
        y = torch.where(mask, torch.full_like(y, ignore_index), y)
        kwargs["ignore_index"] = ignore_index
    if allow_weight and draw(st.booleans()):
        w = torch.rand(c, generator=g, dtype=F64) * 2 + 0.05
        kwargs["weight"] = w
    if allow_smoothing and draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([-0.5, 0.0, 0.05, 0.5, 0.99, 1.0]))
    if draw(st.booleans()):
        y = y.clamp(0, 255).to(torch.uint8) if y.numel() == 0 or (y.min() >= 0 and y.max() <= 255) else y
    return x, y, kwargs


@st.composite
def probability_problems(draw):
    kdims = draw(st.lists(st.integers(1, 3), max_size=3))
    unbatched = not kdims and draw(st.booleans())
    n = draw(st.integers(0, 6))
    c = draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    shape = (c,) if unbatched else (n, c, *kdims)
    x = torch.randn(shape, generator=g, dtype=F64) * draw(st.sampled_from([0.01, 1.0, 10.0, 300.0]))
    t = probability_target(shape, draw(st.sampled_from(["softmax", "nonneg"])), g)
    if draw(st.booleans()):  # some exact zeros (hard labels mixed in)
        t = t * (torch.rand(shape, generator=g) < 0.5)
    kwargs = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    if draw(st.booleans()):
        kwargs["weight"] = torch.rand(c, generator=g, dtype=F64) * 2 + 0.05
    if draw(st.booleans()):
        kwargs["label_smoothing"] = draw(st.sampled_from([-0.5, 0.0, 0.05, 0.5, 1.0]))
    return x, t, kwargs


def long_target(torch_fn):
    """torch's function on the class indices as int64: torch takes uint8 indices only for (C,)/(N, C) input
    (and not with weight + smoothing); its results on uint8 equal those on int64 where it takes them."""

    def call(input, target, **kw):
        return torch_fn(input, target if target.is_floating_point() else target.long(), **kw)

    return call


def split_weight(kwargs):
    """Move the weight tensor into the helper's inputs (so it is cast and cloned with the rest)."""
    kwargs = dict(kwargs)
    w = kwargs.pop("weight", None)
    return ({} if w is None else {"weight": w}), kwargs
