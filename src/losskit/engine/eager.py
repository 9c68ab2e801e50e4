"""When a loss may take its fused eager path.

The fused autograd Functions of the issue-13 losses write into buffers they own, in place and chunk by
chunk: the fastest and leanest in eager mode. While :func:`torch.compile` / :func:`torch.export` trace, or
under a :mod:`torch.func` transform (``grad``, ``vmap``, ``jacrev``), the losses use their plain PyTorch
formulas instead: every op is differentiable, batchable and traceable, and the compiler fuses them itself.
"""

from __future__ import annotations

import torch


def fused_allowed() -> bool:
    """True in plain eager mode: not tracing, no torch.func transform active."""
    return not torch.compiler.is_compiling() and not torch._C._are_functorch_transforms_active()
