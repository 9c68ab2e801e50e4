"""``losskit explain``: one loss computed step by step, from the logits to the value and its gradient.

The steps are plain float64 torch ops (max-shift, exp, softmax, log-probabilities, weights, smoothing,
reduction, gradient); the final ``value:`` line is ``losskit``'s own result, and the command checks
that the steps, losskit's value and losskit's autograd gradient all agree before printing it.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import _keras_steps, _steps
from ._util import CliError, loss_name, num

_TORCH = ("none", "mean", "sum")
_KERAS = ("none", "mean", "sum", "sum_over_batch_size")


@dataclass(frozen=True)
class _Spec:
    explain: Callable
    options: tuple[str, ...]
    reductions: tuple[str, ...] = _TORCH
    module: str = "losskit.functional"
    index_target: bool = False  # an all-integer JSON target becomes int64 class indices

    def call(self, name: str, p: _steps.Problem, x: torch.Tensor) -> tuple[str, torch.Tensor]:
        """Run losskit's own function on ``x`` (the input); return the call as text and the value."""
        import importlib

        try:
            module = importlib.import_module(self.module)
        except ImportError as err:
            raise CliError(f"{self.module} is not available in this losskit ({err})", status=1) from None
        fn = getattr(module, name, None)
        if fn is None:
            raise CliError(f"{self.module}.{name} is not available in this losskit", status=1)
        kwargs, shown = _kwargs(self, p)
        if self.module == "losskit.keras":
            value = fn(p.target, x, **kwargs)
            value = {"none": value, "sum": value.sum(), "mean": value.mean()}[p.reduction]
            call = f"{self.module}.{name}(y_true=target, y_pred=input{shown})"
            if p.reduction != "none":
                call += f".{p.reduction}()"
        else:
            value = fn(x, p.target, **kwargs)
            call = f"{self.module}.{name}(input, target{shown})"
        return call, value


_DEFAULTS = {"reduction": "mean", "label_smoothing": 0.0, "ignore_index": -100, "beta": 1.0, "delta": 1.0}


def _kwargs(spec: _Spec, p: _steps.Problem) -> tuple[dict, str]:
    """losskit's keyword arguments for the options that apply, and the non-default ones as text."""
    kwargs, shown = {}, []
    for opt in spec.options:
        if opt == "reduction" and spec.module == "losskit.keras":
            continue  # Keras' functions return one loss per sample; the reduction is applied after
        value = getattr(p, opt)
        kwargs[opt] = value
        if opt in ("weight", "pos_weight"):
            if value is not None:
                shown.append(f"{opt}={opt}")
        elif isinstance(value, bool):
            if value:
                shown.append(f"{opt}=True")
        elif value != _DEFAULTS.get(opt):
            shown.append(f"{opt}={value!r}")
    return kwargs, "".join(f", {s}" for s in shown)


_TORCH_OPTIONS = ("weight", "pos_weight", "reduction", "label_smoothing", "ignore_index", "beta", "delta", "log_target")


def _torch_specs() -> dict[str, _Spec]:
    """Every catalog loss with a step-by-step explanation in :mod:`._steps`; its options are the ones in its
    signature that the command has flags for."""
    import inspect

    from .._catalog import entries

    specs = {}
    for entry in entries():
        steps = getattr(_steps, entry.name, None)
        if steps is None:
            continue
        params = inspect.signature(entry.function).parameters
        options = tuple(o for o in _TORCH_OPTIONS if o in params)
        specs[entry.name] = _Spec(steps, options, entry.reductions, index_target=entry.family == "classification")
    return specs


_LOSSES: dict[str, _Spec] = {
    **_torch_specs(),
    "categorical_crossentropy": _Spec(
        _keras_steps.categorical_crossentropy,
        ("reduction", "label_smoothing", "from_logits"),
        reductions=_KERAS,
        module="losskit.keras",
    ),
    "binary_crossentropy": _Spec(
        _keras_steps.binary_crossentropy,
        ("reduction", "label_smoothing", "from_logits"),
        reductions=_KERAS,
        module="losskit.keras",
    ),
}

_FLAGS = {
    "weight": "--weight",
    "pos_weight": "--pos-weight",
    "reduction": "--reduction",
    "label_smoothing": "--label-smoothing",
    "ignore_index": "--ignore-index",
    "beta": "--beta",
    "delta": "--delta",
    "from_logits": "--from-logits",
    "log_target": "--log-target",
}


def add_parser(commands) -> None:
    p = commands.add_parser(
        "explain",
        help="compute a loss step by step, ending with its value",
        description="Compute a loss step by step (float64), with the gradient w.r.t. the input, ending with "
        "'value: X' from losskit itself. Tensors are JSON, e.g. --input '[[1.3, 1.3, 2.6]]' --target '[2]'. "
        f"Losses: {', '.join(_LOSSES)}.",
    )
    p.add_argument("loss", metavar="LOSS", help="e.g. cross_entropy (or ce), mse_loss (or mse), kl_div, ...")
    p.add_argument("--input", required=True, metavar="JSON", help="the input (logits, probabilities, ...)")
    p.add_argument("--target", required=True, metavar="JSON", help="class indices, probabilities or values")
    p.add_argument("--weight", metavar="JSON", help="class weights (cross_entropy, nll) or element weights")
    p.add_argument("--pos-weight", metavar="JSON", help="weight of the positive class (bce_with_logits)")
    p.add_argument("--reduction", metavar="R", help="none | mean | sum (kl_div: batchmean too)")
    p.add_argument("--label-smoothing", type=float, metavar="E", help="ε in [0, 1] (cross_entropy, Keras)")
    p.add_argument("--ignore-index", type=int, metavar="I", help="target value to skip (default -100)")
    p.add_argument("--beta", type=float, metavar="B", help="smooth_l1_loss's β (default 1)")
    p.add_argument("--delta", type=float, metavar="D", help="huber_loss's δ (default 1)")
    p.add_argument("--from-logits", action="store_true", default=None, help="Keras losses: y_pred are logits")
    p.add_argument("--log-target", action="store_true", default=None, help="kl_div: the target is log t")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    name = loss_name(args.loss, tuple(_LOSSES), "explain")
    spec = _LOSSES[name]
    given = [opt for opt in _FLAGS if getattr(args, opt) is not None]
    for opt in given:
        if opt not in spec.options:
            usable = ", ".join(_FLAGS[o] for o in spec.options)
            raise CliError(f"{_FLAGS[opt]} does not apply to {name} (its options: {usable})")
    reduction = args.reduction if args.reduction is not None else "mean"
    if reduction not in spec.reductions:
        raise CliError(f"--reduction {reduction!r} is not one of {', '.join(spec.reductions)} for {name}")
    problem = _steps.Problem(
        name=name,
        input=_json_tensor("--input", args.input),
        target=_json_tensor("--target", args.target, integers=spec.index_target),
        weight=_json_tensor("--weight", args.weight) if args.weight is not None else None,
        pos_weight=_json_tensor("--pos-weight", args.pos_weight) if args.pos_weight is not None else None,
        reduction="mean" if reduction == "sum_over_batch_size" else reduction,
        label_smoothing=args.label_smoothing if args.label_smoothing is not None else 0.0,
        ignore_index=args.ignore_index if args.ignore_index is not None else -100,
        beta=args.beta if args.beta is not None else 1.0,
        delta=args.delta if args.delta is not None else 1.0,
        from_logits=bool(args.from_logits),
        log_target=bool(args.log_target),
    )
    for line in explain(spec, problem):
        print(line)
    return 0


def explain(spec: _Spec, p: _steps.Problem) -> list[str]:
    """The lines of the explanation; raises CliError for bad input or if the steps and losskit disagree."""
    import losskit

    x = p.input.clone().requires_grad_()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call, value = spec.call(p.name, p, x)
            grad = _grad(value, x)
    except CliError:
        raise
    except (losskit.LossError, ValueError, TypeError, IndexError, RuntimeError) as err:
        raise CliError(_one_line(err)) from None
    notes = [f"note: {_one_line(w.message)}" for w in caught]

    steps = _steps.Steps()
    try:
        expected, expected_grad = spec.explain(p, steps)
    except (ValueError, TypeError, IndexError, RuntimeError) as err:  # input losskit took but the steps cannot
        raise CliError(f"cannot explain this input: {_one_line(err)}") from None
    value = value.detach()
    tolerance = {"rtol": 1e-8, "atol": 1e-12} if value.dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-7}
    _agree(call, "value", expected, value, tolerance)
    _agree(call, "gradient", expected_grad, grad, tolerance)

    header = f"{call}   [input {list(p.input.shape)}, target {list(p.target.shape)}, {p.input.dtype}]"
    return [
        header,
        *steps.lines,
        "",
        *notes,
        f"check: {call} = {_show(value)}, and its autograd gradient, match the steps above",
        f"value: {json.dumps(value.tolist())}",
    ]


def _grad(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not value.requires_grad:
        return torch.zeros_like(x)
    (grad,) = torch.autograd.grad(value.sum(), x, allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def _agree(call: str, what: str, expected: torch.Tensor, got: torch.Tensor, tolerance: dict) -> None:
    got = got.detach().to(torch.float64)
    same = expected.shape == got.shape and torch.allclose(expected, got, equal_nan=True, **tolerance)
    if not same:
        raise CliError(
            f"the steps give the {what} {_show(expected)} {list(expected.shape)} but {call} gives {_show(got)} "
            f"{list(got.shape)}; please report this at losskit's issue tracker",
            status=1,
        )


def _show(t: torch.Tensor) -> str:
    return num(t) if t.dim() == 0 else _steps.vec(t)


def _one_line(err: object) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _json_tensor(option: str, text: str, integers: bool = False) -> torch.Tensor:
    """Parse a JSON number or (nested) list of numbers; float64, or int64 if ``integers`` and all are ints."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliError(f"{option} is not valid JSON ({err.msg} at character {err.pos}): {text!r}") from None
    values: list = []
    _check_nested(option, data, values)
    if integers and values and all(isinstance(v, int) for v in values):
        return torch.tensor(data, dtype=torch.int64)
    return torch.tensor(data, dtype=torch.float64)


def _check_nested(option: str, data: object, values: list, depth: int = 0) -> tuple[int, ...]:
    """The shape of a rectangular nested list of numbers; a one-line error for anything else."""
    if isinstance(data, bool) or not isinstance(data, (int, float, list)):
        raise CliError(f"{option} must hold numbers or lists of numbers, found {json.dumps(data)}")
    if isinstance(data, list):
        shapes = {_check_nested(option, item, values, depth + 1) for item in data}
        if len(shapes) > 1:
            lengths = sorted(shapes)
            raise CliError(f"{option} is ragged: its lists at depth {depth + 1} have different shapes {lengths}")
        return (len(data), *(shapes.pop() if shapes else ()))
    if isinstance(data, int) and abs(data) >= 2**63:
        raise CliError(f"{option} holds {data}, which does not fit in 64 bits")
    values.append(data)
    return ()
