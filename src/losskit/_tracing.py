"""Whether a call is being traced rather than run: the one question that picks a loss's path.

Under ``torch.compile`` / ``torch.export`` (dynamo), ``torch.jit.trace``, the ``torch.func`` transforms
(``grad``, ``vmap``, ``jacrev``, ...) and on fake or meta tensors, losskit's eager machinery cannot run: host
syncs (``.item()``, ``bool(tensor)``), raw pointers handed to C++ and autograd Functions without a vmap rule
all break tracing. There every loss takes its traceable path: the same formulas as plain differentiable torch
ops, with the data-dependent input checks inside custom operators (:mod:`losskit.engine.ops`).
"""

from __future__ import annotations

import os
import sys
import warnings
from types import FrameType

import torch
import torch.autograd.forward_ad as _forward_ad

_functorch_active = torch._C._are_functorch_transforms_active


_jit_tracing = torch._C._get_tracing_state
_is_compiling = torch.compiler.is_compiling
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def capturing() -> bool:
    """Whether dynamo, ``jit.trace``, a torch.func transform or a forward-mode AD level (``dual_level``) is active:
    then every loss takes its traceable path (plain differentiable torch ops carry the tangents of forward-mode AD;
    the kernels' fused gradients do not). Dynamo's check comes first: it folds it."""
    return _is_compiling() or _functorch_active() or _jit_tracing() is not None or _forward_ad._current_level >= 0


def tracing(*tensors: torch.Tensor | None) -> bool:
    """True when the call must take the traceable path (see the module docstring): while dynamo, jit.trace,
    a torch.func transform or forward-mode AD is active (:func:`capturing`), or for meta, fake and other
    subclassed tensors (nn.Parameter is plain)."""
    if capturing():
        return True
    return any(t is not None and (type(t) not in _PLAIN or t.is_meta) for t in tensors)


def warn(message: str, category: type[Warning] = UserWarning, stacklevel: int = 2) -> None:
    """``warnings.warn`` in eager calls, attributed to the user's line (the first frame outside losskit,
    whatever decorators sit between); nothing while dynamo traces (a warning there would break the graph
    that ``fullgraph=True`` and ``torch.export`` need, for a message the eager call already shows).
    ``stacklevel`` is accepted for the call sites' documentation; the frame walk decides."""
    if torch.compiler.is_compiling():
        return
    frame: FrameType | None = sys._getframe(1)
    level = 2  # stacklevel 2: the caller of warn()
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


_PACKAGE = os.path.dirname(os.path.abspath(__file__)) + os.sep
