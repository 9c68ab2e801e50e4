"""The one list of losskit's torch losses, from which the command line's lists and the tests' grids derive.

Each file of :mod:`losskit.losses` ends with ``CATALOG``: one :class:`Entry` per public function, saying
what the loss is called, which module wraps it, how to make a small valid problem for it, which options
to try, and how ``losskit plot`` draws it. :func:`entries` collects them by walking the package, so a new
loss file is listed everywhere without editing a list here.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Problem:
    """Positional arguments of one call; the first ``differentiable`` of them are float inputs to differentiate."""

    args: tuple
    differentiable: int = 1


@dataclass(frozen=True)
class Curve:
    """How ``losskit plot`` draws a loss: against the ``axis`` (``'error'``, ``'score'`` or ``'probability'``),
    ``loss(x, params)`` giving one loss per point; ``label`` is formatted with the plot's params."""

    axis: str
    label: str
    loss: Callable[[torch.Tensor, dict], torch.Tensor]


@dataclass(frozen=True)
class Entry:
    name: str  # torch.nn.functional's name, e.g. "huber_loss"
    function: Callable
    module: type | None  # the torch.nn class, e.g. HuberLoss
    family: str  # one of FAMILIES
    # (shape, dtype, generator) -> a valid Problem; shape is (N, C) (regression losses use it as is)
    sample: Callable[[tuple[int, int], torch.dtype, torch.Generator], Problem]
    aliases: tuple[str, ...] = ()
    options: tuple[dict, ...] = ({},)  # keyword sets the contract tests run, besides every reduction
    reductions: tuple[str, ...] = ("none", "mean", "sum")
    legacy: bool = True  # takes torch's size_average / reduce
    plot: Curve | None = None
    bench: str | None = None  # the benchmark suite that times it ("elementwise")
    # module and function take the same keywords (False: e.g. LinearCrossEntropyLoss owns its weights)
    module_mirrors_function: bool = True
    extras: tuple[str, ...] = ()  # keyword-only arguments beyond torch's signature
    typical: dict = field(default_factory=dict)  # the keywords of a typical call (benchmarks)
    # False where torch's gradient is not the derivative (ctc_loss assumes log_softmax input: its own test
    # gradchecks through a log_softmax)
    gradcheck: bool = True


FAMILIES = ("classification", "fused", "regression", "binary", "divergence", "ranking", "embedding", "sequence")


@functools.cache
def entries() -> tuple[Entry, ...]:
    """Every loss of :mod:`losskit.losses`, by family (:data:`FAMILIES`), then by file name."""
    from . import losses

    found: list[Entry] = []
    for info in sorted(pkgutil.iter_modules(losses.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        found.extend(importlib.import_module(f"{losses.__name__}.{info.name}").CATALOG)
    return tuple(sorted(found, key=lambda e: FAMILIES.index(e.family)))


def names() -> tuple[str, ...]:
    return tuple(e.name for e in entries())


def aliases() -> dict[str, str]:
    """Short names people type (``ce``, ``mse``, ``huber``) mapped to the functional name."""
    return {alias: e.name for e in entries() for alias in e.aliases}


def get(name: str) -> Entry | None:
    name = aliases().get(name, name)
    return next((e for e in entries() if e.name == name), None)


# ------------------------------------------------------------------------------------ problem makers


def randn(shape, dtype, gen) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)


def class_indices(shape, gen) -> torch.Tensor:
    n, c = shape
    return torch.randint(0, c, (n,), generator=gen)


def pair_problem(make_target: Callable[[tuple, torch.dtype, torch.Generator], torch.Tensor] | None = None):
    """Problems ``(input, target)`` of one shape, the target from ``make_target`` (default: standard normal)."""

    def sample(shape, dtype, gen) -> Problem:
        x = randn(shape, dtype, gen)
        t = randn(shape, dtype, gen) if make_target is None else make_target(shape, dtype, gen)
        return Problem((x, t))

    return sample
