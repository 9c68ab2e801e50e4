"""Module-level oracle tests: every ``losskit.nn`` module against the ``torch.nn`` module of the same name
(constructor signature, forward values and gradients, buffers / state_dict, ``.to()``, ``__constants__``,
legacy ``size_average``/``reduce`` arguments and their warnings), plus ``losskit.functional``'s signatures
against ``torch.nn.functional``'s."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
import torch.nn as TNN
import torch.nn.functional as TF

import losskit.functional as LF
import losskit.nn as LNN
from helpers import LEGACY, assert_close_to, assert_matches_torch
from losskit._catalog import entries

pytestmark = pytest.mark.filterwarnings("error")

MODULES = [
    "CrossEntropyLoss",
    "NLLLoss",
    "NLLLoss2d",
    "MSELoss",
    "L1Loss",
    "SmoothL1Loss",
    "HuberLoss",
    "BCELoss",
    "BCEWithLogitsLoss",
    "KLDivLoss",
    "MarginRankingLoss",
    "MultiLabelMarginLoss",
    "SoftMarginLoss",
]
WEIGHTED = ["CrossEntropyLoss", "NLLLoss", "NLLLoss2d", "BCELoss", "BCEWithLogitsLoss"]

# losskit's documented keyword-only extensions beyond torch's signature (name -> default); anything else
# that differs from torch fails the signature test.
FUNCTIONAL_EXTENSIONS = {
    "cross_entropy": {"inplace": False, "z_loss": 0.0, "softcap": None},
    "linear_cross_entropy": {
        "z_loss": 0.0,
        "softcap": None,
        "chunk_size": None,
        "memory_budget": None,
        "accumulate_grad": False,
    },
}
CORE_FUNCTIONS = {
    "cross_entropy",
    "nll_loss",
    "mse_loss",
    "l1_loss",
    "smooth_l1_loss",
    "huber_loss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "kl_div",
    "margin_ranking_loss",
    "multilabel_margin_loss",
    "soft_margin_loss",
}

N, C = 4, 5


def _make(cls_name: str, module, **kwargs):
    """Construct ``module.<cls_name>(**kwargs)``; NLLLoss2d's FutureWarning is expected and swallowed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message="`NLLLoss2d` has been deprecated")
        return getattr(module, cls_name)(**kwargs)


def _inputs(name: str, seed: int = 0):
    """Forward inputs (by forward's parameter names) and the names to differentiate for each module."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x = torch.randn(N, C, generator=g, dtype=f64)
    if name == "CrossEntropyLoss":
        return {"input": x, "target": torch.tensor([0, 4, 1, 2])}, ("input",)
    if name == "NLLLoss":
        return {"input": x.log_softmax(1), "target": torch.tensor([3, 1, 1, 0])}, ("input",)
    if name == "NLLLoss2d":
        x4 = torch.randn(2, C, 3, 2, generator=g, dtype=f64).log_softmax(1)
        return {"input": x4, "target": torch.randint(0, C, (2, 3, 2), generator=g)}, ("input",)
    if name in ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss"):
        return {"input": x, "target": torch.randn(N, C, generator=g, dtype=f64)}, ("input", "target")
    if name == "BCELoss":
        p = torch.rand(N, C, generator=g, dtype=f64) * 0.9 + 0.05
        return {"input": p, "target": torch.rand(N, C, generator=g, dtype=f64)}, ("input", "target")
    if name == "BCEWithLogitsLoss":
        return {"input": x * 3, "target": torch.rand(N, C, generator=g, dtype=f64)}, ("input", "target")
    if name == "KLDivLoss":
        t = torch.rand(N, C, generator=g, dtype=f64)
        t[0, 0] = 0.0
        return {"input": x.log_softmax(1), "target": t}, ("input", "target")
    if name == "MarginRankingLoss":
        y = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0, 1.0], dtype=f64)
        x1, x2 = torch.randn(6, generator=g, dtype=f64), torch.randn(6, generator=g, dtype=f64)
        return {"input1": x1, "input2": x2, "target": y}, ("input1", "input2", "target")
    if name == "MultiLabelMarginLoss":
        t = torch.tensor([[3, 0, -1, 1, 2], [4, -1, 0, 0, 0], [-1, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
        return {"input": x, "target": t}, ("input",)
    if name == "SoftMarginLoss":
        y = torch.where(torch.rand(N, C, generator=g) < 0.5, -1.0, 1.0).to(f64)
        return {"input": x, "target": y}, ("input",)
    raise AssertionError(name)


def _w(shape, seed=1, dtype=torch.float64):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=dtype) + 0.5


# constructor options per module (beyond the default construction)
OPTIONS = {
    "CrossEntropyLoss": [
        {"weight": _w(C), "ignore_index": 1, "label_smoothing": 0.1, "reduction": "sum"},
        {"reduction": "none", "label_smoothing": 0.3},
        {"weight": _w(C), "ignore_index": 4},
    ],
    "NLLLoss": [{"weight": _w(C), "ignore_index": 1, "reduction": "none"}, {"weight": _w(C)}],
    "NLLLoss2d": [{"weight": _w(C), "ignore_index": 2}, {"reduction": "sum"}],
    "MSELoss": [{"reduction": "sum"}, {"reduction": "none"}],
    "L1Loss": [{"reduction": "none"}, {"reduction": "sum"}],
    "SmoothL1Loss": [{"beta": 0.5}, {"beta": 0.0, "reduction": "sum"}, {"beta": 2.5, "reduction": "none"}],
    "HuberLoss": [{"delta": 0.3}, {"delta": 2.0, "reduction": "none"}],
    "BCELoss": [{"weight": _w(C)}, {"weight": _w((N, C)), "reduction": "none"}],
    "BCEWithLogitsLoss": [
        {"weight": _w(C), "pos_weight": _w(C, 2)},
        {"pos_weight": _w((N, C), 3), "reduction": "sum"},
        {"weight": _w((N, C)), "reduction": "none"},
    ],
    "KLDivLoss": [
        {"reduction": "batchmean"},
        {"reduction": "sum", "log_target": True},
        {"reduction": "none"},
    ],
    "MarginRankingLoss": [{"margin": 0.5}, {"margin": -0.2, "reduction": "none"}],
    "MultiLabelMarginLoss": [{"reduction": "none"}, {"reduction": "sum"}],
    "SoftMarginLoss": [{"reduction": "sum"}, {"reduction": "none"}],
}
CASES = [(name, {}) for name in MODULES] + [(name, opt) for name in MODULES for opt in OPTIONS[name]]
CASE_IDS = [f"{n}-{'-'.join(sorted(o)) or 'default'}-{i}" for i, (n, o) in enumerate(CASES)]

# the functional each module calls, and how its options are spelled there (identically, for all)
FUNCTIONAL = {
    "CrossEntropyLoss": "cross_entropy",
    "NLLLoss": "nll_loss",
    "NLLLoss2d": "nll_loss",
    "MSELoss": "mse_loss",
    "L1Loss": "l1_loss",
    "SmoothL1Loss": "smooth_l1_loss",
    "HuberLoss": "huber_loss",
    "BCELoss": "binary_cross_entropy",
    "BCEWithLogitsLoss": "binary_cross_entropy_with_logits",
    "KLDivLoss": "kl_div",
    "MarginRankingLoss": "margin_ranking_loss",
    "MultiLabelMarginLoss": "multilabel_margin_loss",
    "SoftMarginLoss": "soft_margin_loss",
}


def _mean_warning_filter():
    warnings.filterwarnings("ignore", message="reduction: 'mean' divides", category=UserWarning)


# --------------------------------------------------------------------------------------- signatures


def _extras(module_name: str) -> tuple[str, ...]:
    """The keyword-only options beyond torch's that the catalog declares for a module (e.g. z_loss)."""
    return next((e.extras for e in entries() if e.module is not None and e.module.__name__ == module_name), ())


def _params(sig: inspect.Signature):
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


def _assert_same_params(ours, ref, what):
    assert [p[:2] for p in ours] == [p[:2] for p in ref], f"{what}: names/kinds {ours} != torch's {ref}"
    for (name, _, od), (_, _, rd) in zip(ours, ref, strict=True):
        assert od is rd or (type(od) is type(rd) and od == rd), f"{what}: default of {name!r} {od!r} != {rd!r}"


def test_module_list_is_torchs():
    assert set(LNN.__all__) >= set(MODULES)
    for name in LNN.__all__:
        assert issubclass(getattr(LNN, name), torch.nn.Module)
        assert issubclass(getattr(TNN, name, None), torch.nn.Module), f"torch.nn has no {name}"


@pytest.mark.parametrize("name", sorted(LNN.__all__))
def test_init_signature_equals_torch(name):
    extras = _extras(name)
    ours = [p for p in _params(inspect.signature(getattr(LNN, name).__init__)) if p[0] not in extras]
    ref = _params(inspect.signature(getattr(TNN, name).__init__))
    _assert_same_params(ours, ref, f"{name}.__init__")


@pytest.mark.parametrize("name", sorted(LNN.__all__))
def test_forward_parameter_names_equal_torch(name):
    ours = [p.name for p in inspect.signature(getattr(LNN, name).forward).parameters.values()]
    ref = [p.name for p in inspect.signature(getattr(TNN, name).forward).parameters.values()]
    assert ours == ref


def test_functional_names_are_torch_functions():
    assert set(LF.__all__) >= CORE_FUNCTIONS
    for name in LF.__all__:
        assert callable(getattr(TF, name, None)), f"torch.nn.functional has no {name}"


@pytest.mark.parametrize("name", sorted(LF.__all__))
def test_functional_signature_equals_torch(name):
    """Parameter names, kinds, order and defaults of torch; only the listed keyword-only extensions on top."""
    ours = _params(inspect.signature(getattr(LF, name)))
    ref = _params(inspect.signature(getattr(TF, name)))
    extra = FUNCTIONAL_EXTENSIONS.get(name, {})
    head, tail = ours[: len(ref)], ours[len(ref) :]
    _assert_same_params(head, ref, name)
    assert {n: d for n, _, d in tail} == extra, f"{name}: extra parameters {tail} (allowed: {extra})"
    assert all(kind is inspect.Parameter.KEYWORD_ONLY for _, kind, _ in tail)


# ------------------------------------------------------------------------------------------ forward


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_module_matches_torch_module(name, options):
    ours = _make(name, LNN, **options)
    ref = _make(name, TNN, **options)
    inputs, grad_wrt = _inputs(name, seed=len(options))
    with warnings.catch_warnings():
        _mean_warning_filter()
        assert_matches_torch(ours, ref, inputs, grad_wrt=grad_wrt)
        if not any(isinstance(v, torch.Tensor) for v in options.values()):  # float64 buffers: float64 only
            assert_matches_torch(ours, ref, inputs, dtype=torch.float32, grad_wrt=grad_wrt)


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_module_equals_functional_with_same_options(name, options):
    module = _make(name, LNN, **options)
    inputs, _ = _inputs(name, seed=len(options))
    with warnings.catch_warnings():
        _mean_warning_filter()
        out = module(*inputs.values())
        fn_out = getattr(LF, FUNCTIONAL[name])(*inputs.values(), **options)
        ref = getattr(TF, FUNCTIONAL[name])(*inputs.values(), **options)
    assert_close_to(out, fn_out, torch.float64, "module vs functional")
    assert_close_to(out, ref, torch.float64, "module vs torch functional")


@pytest.mark.parametrize("name", ["MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss", "SoftMarginLoss"])
def test_module_on_broadcast_and_0d_inputs(name):
    """Shapes beyond (N, C): 0-d pairs, and for the regression losses a broadcast target (with warning)."""
    ours, ref = _make(name, LNN), _make(name, TNN)
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn((), generator=g, dtype=torch.float64)
    y0 = torch.rand((), generator=g, dtype=torch.float64)
    with warnings.catch_warnings():
        _mean_warning_filter()
        assert_matches_torch(ours, ref, {"input": x0, "target": y0})
    if name in ("MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss"):
        x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
        with warnings.catch_warnings(record=True) as w_ours:
            warnings.simplefilter("always")
            o = ours(x, y)
        with warnings.catch_warnings(record=True) as w_ref:
            warnings.simplefilter("always")
            r = ref(x, y)
        assert [str(w.message) for w in w_ours] == [str(w.message) for w in w_ref] != []
        assert_close_to(o, r, torch.float64)


# ----------------------------------------------------------------------------------- buffers, .to()


def _weighted_options(name: str, dtype=torch.float64):
    if name == "BCEWithLogitsLoss":
        return [
            {},
            {"weight": _w(C, dtype=dtype)},
            {"pos_weight": _w(C, 2, dtype=dtype)},
            {"weight": _w(C, dtype=dtype), "pos_weight": _w(C, 2, dtype=dtype)},
        ]
    return [{}, {"weight": _w(C, dtype=dtype)}]


@pytest.mark.parametrize("name", WEIGHTED)
def test_state_dict_and_buffers_like_torch(name):
    for options in _weighted_options(name):
        ours, ref = _make(name, LNN, **options), _make(name, TNN, **options)
        assert list(ours.state_dict().keys()) == list(ref.state_dict().keys()), options
        assert [n for n, _ in ours.named_buffers()] == [n for n, _ in ref.named_buffers()]
        assert list(ours.parameters()) == list(ref.parameters()) == []
        for key, value in ref.state_dict().items():
            assert torch.equal(ours.state_dict()[key], value)
        # a state_dict saved from torch's module loads into ours and vice versa
        ours.load_state_dict(ref.state_dict())
        ref.load_state_dict(ours.state_dict())
        for attr in ("weight", "pos_weight"):
            if hasattr(ref, attr):
                assert (getattr(ours, attr) is None) == (getattr(ref, attr) is None)


@pytest.mark.parametrize("name", WEIGHTED)
def test_to_float64_moves_buffers(name):
    inputs, grad_wrt = _inputs(name)
    for options in _weighted_options(name, dtype=torch.float32)[1:]:
        ours, ref = _make(name, LNN, **options), _make(name, TNN, **options)
        assert ours.to(torch.float64) is ours
        ref.to(torch.float64)
        for key in options:
            assert getattr(ours, key).dtype == getattr(ref, key).dtype == torch.float64
            assert ours.state_dict()[key].dtype == torch.float64
        assert_matches_torch(ours, ref, inputs, grad_wrt=grad_wrt)
        ours.to(torch.float32)
        assert all(getattr(ours, key).dtype == torch.float32 for key in options)


@pytest.mark.parametrize("name", sorted(LNN.__all__))
def test_constants_like_torch(name):
    ours = getattr(getattr(LNN, name), "__constants__", None)
    ref = getattr(getattr(TNN, name), "__constants__", None)
    assert ours == ref, f"{name}.__constants__ {ours} != torch's {ref}"


@pytest.mark.parametrize(("name", "options"), CASES, ids=CASE_IDS)
def test_public_attributes_like_torch(name, options):
    """The options land on the same attributes with the same values (``reduction``, ``beta``, ...)."""
    ours, ref = _make(name, LNN, **options), _make(name, TNN, **options)

    def public(m):
        return {k: v for k, v in vars(m).items() if not k.startswith("_")}

    o, r = public(ours), public(ref)
    assert o.keys() - set(_extras(name)) == r.keys()
    for key in r:
        assert type(o[key]) is type(r[key]) and o[key] == r[key], key


# ------------------------------------------------------------------------------------------- legacy


def _recording(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [(w.category, str(w.message)) for w in caught]


@pytest.mark.parametrize("legacy", LEGACY, ids=str)
@pytest.mark.parametrize(
    "name", [n for n in MODULES if "size_average" in inspect.signature(getattr(TNN, n).__init__).parameters]
)
def test_legacy_constructor_args(name, legacy):
    size_average, reduce = legacy
    for reduction in ("mean", "none", "sum"):
        kw = {"size_average": size_average, "reduce": reduce, "reduction": reduction}
        ours, ours_w = _recording(lambda kw=kw: getattr(LNN, name)(**kw))
        ref, ref_w = _recording(lambda kw=kw: getattr(TNN, name)(**kw))
        assert ours.reduction == ref.reduction
        assert ref_w and ours_w == ref_w
    inputs, _ = _inputs(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = getattr(LNN, name)(size_average=size_average, reduce=reduce)
        ref = getattr(TNN, name)(size_average=size_average, reduce=reduce)
        assert_close_to(ours(*inputs.values()), ref(*inputs.values()), torch.float64)


def test_legacy_modules_cover_the_expected_set():
    legacy = {n for n in MODULES if "size_average" in inspect.signature(getattr(TNN, n).__init__).parameters}
    assert legacy == set(MODULES) - {"HuberLoss"}


def test_nllloss2d_warns_future_warning_like_torch():
    _, ours_w = _recording(lambda: LNN.NLLLoss2d())
    _, ref_w = _recording(lambda: TNN.NLLLoss2d())
    assert ref_w and ref_w[0][0] is FutureWarning
    assert ours_w == ref_w
    assert isinstance(_make("NLLLoss2d", LNN), LNN.NLLLoss)


def test_default_construction_does_not_warn():
    for name in MODULES:
        if name == "NLLLoss2d":
            continue
        _, caught = _recording(lambda name=name: getattr(LNN, name)())
        assert caught == [], name
