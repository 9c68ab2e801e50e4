"""Whether a call is being traced rather than run: the one question that picks a loss's path.

Under ``torch.compile`` / ``torch.export`` (dynamo), ``torch.jit.trace``, the ``torch.func`` transforms
(``grad``, ``vmap``, ``jacrev``, ...) and on fake or meta tensors, losskit's eager machinery cannot run: host
syncs (``.item()``, ``bool(tensor)``), raw pointers handed to C++ and autograd Functions without a vmap rule
all break tracing. There every loss takes its traceable path: the same formulas as plain differentiable torch
ops, with the data-dependent input checks inside custom operators (:mod:`losskit.engine.ops`).
"""

from __future__ import annotations

import warnings

import torch

_functorch_active = torch._C._are_functorch_transforms_active


def tracing(*tensors: object) -> bool:
    """True when the call must take the traceable path (see the module docstring)."""
    if torch.compiler.is_compiling() or _functorch_active() or torch.jit.is_tracing():
        return True
    for t in tensors:
        if isinstance(t, torch.Tensor) and (t.is_meta or type(t) is not torch.Tensor and _is_subclass(t)):
            return True
    return False


def _is_subclass(t: torch.Tensor) -> bool:
    """Fake tensors and other tensor subclasses (FunctionalTensor, ...); nn.Parameter is a plain tensor."""
    return not isinstance(t, torch.nn.Parameter)


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """``warnings.warn`` in eager calls; nothing while dynamo traces (a warning there would break the graph
    that ``fullgraph=True`` and ``torch.export`` need, for a message the eager call already shows)."""
    if not torch.compiler.is_compiling():
        warnings.warn(message, category, stacklevel=stacklevel + 1)
