"""Shared pieces of the command line: the error type, optional imports, loss names, number format."""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from types import ModuleType
from typing import SupportsFloat

_EXTRA = "pip install 'losskit[cli]'"

# short names of the Keras losses the CLI explains; the torch losses' short names live in the catalog
_KERAS_ALIASES = {"cce": "categorical_crossentropy", "binary_crossentropy_keras": "binary_crossentropy"}


def _aliases() -> dict[str, str]:
    from .._catalog import aliases

    return {**aliases(), **_KERAS_ALIASES}


class CliError(Exception):
    """A problem to report in one line; ``status`` 2 is bad input, anything else is losskit's fault."""

    def __init__(self, message: str, status: int = 2) -> None:
        super().__init__(message)
        self.status = status


def require(command: str, *modules: str) -> list[ModuleType]:
    """Import the optional packages a command needs, or fail with one line saying how to get them."""
    loaded, missing = [], []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError:
            missing.append(name.split(".")[0])
    if missing:
        names = ", ".join(dict.fromkeys(missing))
        raise CliError(f"`losskit {command}` needs {names}, from the optional extra: {_EXTRA}")
    return loaded


def pyplot(command: str):
    """matplotlib's pyplot on the Agg backend (PNG files, no display needed)."""
    (matplotlib,) = require(command, "matplotlib")
    matplotlib.use("Agg")
    (plt,) = require(command, "matplotlib.pyplot")
    return plt


def loss_name(name: str, known: list[str] | tuple[str, ...], command: str) -> str:
    """Resolve ``name`` (any case, ``-`` or ``_``, with or without ``_loss``) to one of ``known``."""
    key = name.strip().lower().replace("-", "_")
    for candidate in (key, _aliases().get(key), f"{key}_loss", key.removesuffix("_loss")):
        if candidate is not None and candidate in known:
            return candidate
    raise CliError(f"unknown loss {name!r} for `losskit {command}`; choose from: {', '.join(known)}")


def save_figure(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (creating its folder); a write failure is a one-line error."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=130, bbox_inches="tight")
    except OSError as err:
        raise CliError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def num(value: SupportsFloat) -> str:
    """A number with 4 decimals (scientific notation when it is tiny or huge)."""
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if value == 0:
        return "0.0000"
    if abs(value) < 1e-3 or abs(value) >= 1e6:
        return f"{value:.4e}"
    return f"{value:.4f}"
