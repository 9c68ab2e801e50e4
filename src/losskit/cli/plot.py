"""``losskit plot``: losses and their derivatives as curves, several losses on one figure.

Regression losses are drawn against the error ``d = input - target``; classification losses against
the score (logit) of the true class or against the probability of the true class. Every curve is
``losskit.functional`` evaluated with ``reduction='none'``, and every derivative is autograd's.
"""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .._catalog import Curve, entries
from ._util import CliError, loss_name, pyplot, save_figure

_POINTS = 601


@dataclass(frozen=True)
class _Axis:
    label: str
    lo: float
    hi: float
    derivative_limits: tuple[float, float] | None = None


_AXES = {
    "error": _Axis("error d = input - target", -3.0, 3.0),
    "score": _Axis("score of the true class: logit z, or margin y·x", -6.0, 6.0),
    "probability": _Axis("predicted probability of the true class p", 0.02, 0.98, (-12.0, 4.0)),
}


def _curves() -> dict[str, Curve]:
    """Every catalog loss that says how it is drawn (its ``plot`` curve)."""
    return {e.name: e.plot for e in entries() if e.plot is not None}


_NAMES = tuple(_curves())


def add_parser(commands) -> None:
    p = commands.add_parser(
        "plot",
        help="draw losses and their derivatives to a PNG",
        description="Draw losses and their derivatives (autograd on losskit.functional): regression losses "
        "against the error, classification losses against the true class's score or probability. "
        f"Losses: {', '.join(_NAMES)}.",
    )
    p.add_argument("losses", nargs="+", metavar="LOSS", help="e.g. mse_loss l1_loss smooth_l1_loss huber_loss")
    p.add_argument("-o", "--output", type=Path, default=Path("losskit-plot.png"), metavar="FILE", help="PNG file")
    p.add_argument("--beta", type=float, default=1.0, metavar="B", help="smooth_l1_loss's β (default 1)")
    p.add_argument("--delta", type=float, default=1.0, metavar="D", help="huber_loss's δ (default 1)")
    p.add_argument("--classes", type=int, default=10, metavar="C", help="classes for cross_entropy (default 10)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(loss_name(n, _NAMES, "plot") for n in args.losses))
    if args.beta < 0:
        raise CliError(f"--beta must be non-negative, got {args.beta}")
    if args.delta <= 0:
        raise CliError(f"--delta must be positive, got {args.delta}")
    if args.classes < 2:
        raise CliError(f"--classes must be at least 2, got {args.classes}")
    if args.output.suffix.lower() != ".png":
        raise CliError(f"the output file must end in .png, got {args.output}")
    plt = pyplot("plot")
    curves = _curves()
    params = {"beta": args.beta, "delta": args.delta, "classes": args.classes}
    axes_used = list(dict.fromkeys(curves[n].axis for n in names))
    fig, panels = plt.subplots(2, len(axes_used), figsize=(6.2 * len(axes_used), 7.4), squeeze=False)
    styles = ("-", "--", "-.", ":")
    for column, axis_name in enumerate(axes_used):
        axis = _AXES[axis_name]
        top, bottom = panels[0][column], panels[1][column]
        x = torch.linspace(axis.lo, axis.hi, _POINTS, dtype=torch.float64)
        members = [n for n in names if curves[n].axis == axis_name]
        for i, name in enumerate(members):
            value, slope = _evaluate(_at(curves[name], params), x)
            color = f"C{names.index(name) % 10}"
            style = styles[i % len(styles)]
            top.plot(x, value, style, color=color, linewidth=2, label=curves[name].label.format(**params))
            bottom.plot(x, slope, style, color=color, linewidth=2, label=curves[name].label.format(**params))
        top.set_title("loss")
        bottom.set_title("derivative (autograd)")
        top.set_ylabel("loss")
        bottom.set_ylabel("d loss / d x")
        bottom.set_xlabel(axis.label)
        if axis.derivative_limits is not None:
            bottom.set_ylim(*axis.derivative_limits)
        for panel in (top, bottom):
            panel.axhline(0, color="0.6", linewidth=0.8)
            panel.axvline(0 if axis_name != "probability" else 1, color="0.8", linewidth=0.8)
            panel.grid(True, alpha=0.3)
            panel.legend(fontsize=8)
    fig.suptitle(textwrap.fill("losskit plot: " + ", ".join(names), width=45 * len(axes_used)))
    fig.tight_layout()
    path = save_figure(fig, args.output)
    plt.close(fig)
    print(f"plot: {path}")
    return 0


def _at(curve: Curve, params: dict) -> Callable[[Tensor], Tensor]:
    """The curve's loss as a function of the points alone."""
    return lambda t: curve.loss(t, params)


def _evaluate(loss: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Tensor, Tensor]:
    """The loss at each point and its derivative, by autograd through losskit.functional."""
    x = x.clone().requires_grad_()
    value = loss(x)
    (slope,) = torch.autograd.grad(value.sum(), x)
    return value.detach(), slope.detach()
