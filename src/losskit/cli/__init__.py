"""The ``losskit`` command line: ``demo``, ``explain``, ``plot`` and ``bench``.

Run it as ``losskit COMMAND ...`` (the console script) or ``python -m losskit COMMAND ...``::

    losskit demo                                   # train a small MLP on the bundled digits
    losskit explain cross_entropy --input '[[1.3, 1.3, 2.6]]' --target '[2]'
    losskit plot mse_loss l1_loss smooth_l1_loss huber_loss -o losses.png
    losskit bench --quick                          # time and memory against torch, CSV + PNG

``explain`` needs only torch; ``demo``, ``plot`` and ``bench`` use the optional extra ``losskit[cli]`` (rich,
matplotlib, scikit-learn), imported when the command runs. Bad input prints one line starting with
``losskit: error:`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence

from ._util import CliError

__all__ = ["main"]

_COMMANDS = ("demo", "explain", "plot", "bench")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``losskit: error: ...``) and exit status 2."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise CliError(f"{message} (see '{self.prog} --help')")


def _parser() -> argparse.ArgumentParser:
    import importlib

    from .. import __version__

    parser = _Parser(
        prog="losskit",
        description="Loss functions for PyTorch, exact to torch.nn: see them train, explained and drawn.",
    )
    parser.add_argument("--version", action="version", version=f"losskit {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    _tolerant_stdio()
    try:
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        return int(args.run(args) or 0)
    except CliError as err:
        print(f"losskit: {'internal ' if err.status != 2 else ''}error: {err}", file=sys.stderr)
        return err.status
    except KeyboardInterrupt:
        print("losskit: interrupted", file=sys.stderr)
        return 130


def _tolerant_stdio() -> None:
    """Never die on a character the terminal cannot encode (the output uses Σ, Δ, ε, ...)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            with contextlib.suppress(ValueError, OSError):  # a detached or closed stream
                reconfigure(errors="backslashreplace")
