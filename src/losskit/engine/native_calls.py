"""The Python side of one kernel call, shared by the kernels' callers: a 0-dim tensor for the reduced loss, and the
call's argument struct filled in one step (each thread its own struct: the kernel reads it with the GIL released).
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Callable

import torch

_per_thread = threading.local()
_SCALARS = {dtype: torch.empty((), dtype=dtype) for dtype in (torch.float32, torch.float64, torch.bfloat16)}


def scalar(dtype: torch.dtype) -> torch.Tensor:
    """A new uninitialised 0-dim CPU tensor of ``dtype`` (fp32, fp64 or bf16) for a kernel's reduced loss:
    ``empty_like`` of a template, half the cost of ``torch.empty((), dtype=...)``'s argument parsing."""
    return torch.empty_like(_SCALARS[dtype])


_FIELD_CODES = {ctypes.c_int64: "q", ctypes.c_void_p: "Q", ctypes.c_double: "d"}


def packer(cls: type[ctypes.Structure]) -> Callable[..., tuple]:
    """``fill(*values) -> (instance, address)``: this thread's instance of the ctypes Structure ``cls`` (see
    :func:`thread_struct`) filled with its fields' values in declaration order (pointers as ints, 0 for null) by
    one C-implemented ``struct.pack_into``, instead of one ctypes attribute store per field (a third of a small
    call's Python bytecode). The format comes from ``cls._fields_``: int64, pointer and double fields only, so
    there is no padding to mirror."""
    # (a field of another type is a KeyError here, at import; all three are 8 bytes, so no padding)
    pack = struct.Struct("<" + "".join(_FIELD_CODES[field[1]] for field in cls._fields_)).pack_into

    def fill(*values) -> tuple:
        slot = thread_struct(cls)
        pack(slot[0], 0, *values)
        return slot

    return fill


def thread_struct(cls: type) -> tuple:
    """This thread's one instance of the ctypes Structure ``cls`` and its address: a kernel's arguments are
    filled into it in place (one converted argument per call instead of one per field) and the kernel reads it
    while the GIL is released, so each thread has its own."""
    slots = getattr(_per_thread, "slots", None)
    if slots is None:
        slots = _per_thread.slots = {}
    slot = slots.get(cls)  # keyed by the class itself: two kernels' structs may share a name
    if slot is None:
        instance = cls()
        slot = slots[cls] = (instance, ctypes.addressof(instance))
    return slot
