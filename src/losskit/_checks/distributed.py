"""Checks of the distributed losses: the process group, every rank's arguments, the ranks' agreement."""

from __future__ import annotations

import torch

from .classes import class_target
from .errors import LossError, LossTypeError, LossValueError
from .tensors import same_device, same_dtype, shape


def process_group(fn: str, available: bool, initialized: bool, rank: int | None = None) -> None:
    """torch.distributed is built in, a process group exists, and this process is a member of it."""
    if not available:
        raise LossError(f"{fn}(): torch.distributed is not available in this build of torch")
    if not initialized:
        raise LossValueError(
            f"{fn}(): no process group: call torch.distributed.init_process_group(...) on every rank first "
            "(backend 'gloo' for CPU tensors, 'nccl' for CUDA tensors)"
        )
    if rank is not None and rank < 0:
        raise LossValueError(f"{fn}(): this process is not a member of the given process group")


def own_error(error: LossError | None) -> None:
    """Re-raise this rank's own argument error, once every rank has heard of it."""
    if error is not None:
        raise error


def no_rank_failed(fn: str, failed_rank: int | None) -> None:
    """``failed_rank``: a rank that rejected its arguments (so no rank computed the loss), or None."""
    if failed_rank is not None:
        which = "another rank" if failed_rank < 0 else f"rank {failed_rank}"
        raise LossValueError(
            f"{fn}(): {which} of the group rejected its arguments (see the error raised there), "
            "so no rank computed the loss"
        )


def ranks_agree(fn: str, disagreements: list[str]) -> None:
    if disagreements:
        raise LossValueError(
            f"{fn}(): the ranks of the group disagree on " + "; ".join(disagreements) + ". Every rank must pass "
            "the same target and options and an equal slice [r·C_local, (r+1)·C_local) of the class dimension"
        )


def vocab_shard(fn: str, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, rank: int) -> int:
    """One rank's logits ``(.., C_local, ..)``, global class-index target, local class weights; returns C_local."""
    if not logits.is_floating_point():
        raise LossTypeError(f"{fn}(): 'logits' must be a floating point tensor, got dtype {logits.dtype}")
    if logits.dim() == 0:
        raise LossValueError(f"{fn}(): 'logits' must have 1 or more dimensions (C_l,), (N, C_l), ..., got shape []")
    if target.is_floating_point():
        raise LossTypeError(
            f"{fn}(): 'target' must hold global class indices (int64 or uint8); class-probability targets "
            f"are not supported, got dtype {target.dtype}"
        )
    class_target(fn, logits, target)
    same_device(fn, "target", target, logits, "logits")
    cl = logits.shape[0] if logits.dim() == 1 else logits.shape[1]
    if cl == 0:
        raise LossValueError(f"{fn}(): 'logits' has no classes on rank {rank} (shape {shape(logits)})")
    if weight is not None:
        if weight.dim() != 1 or weight.numel() != cl:
            raise LossValueError(
                f"{fn}(): 'weight' must be rank {rank}'s slice of the class weights, of shape [{cl}] "
                f"(C_local), got shape {shape(weight)}"
            )
        same_dtype(fn, "weight", weight, logits, "logits")
        same_device(fn, "weight", weight, logits, "logits")
    return cl


def classes_split(fn: str, num_classes: int, world_size: int) -> None:
    if world_size < 1 or num_classes % world_size:
        raise LossValueError(f"{fn}(): {num_classes} classes do not split over {world_size} ranks")


def global_mean_options(fn: str, options: dict) -> None:
    """The data-parallel loss is the mean over the global batch: no reduction of its own."""
    given = sorted({"reduction", "size_average", "reduce"} & options.keys())
    if given:
        raise LossValueError(
            f"{fn}(): {', '.join(given)} cannot be given: the loss is the mean over the global batch; "
            "use losskit.functional.cross_entropy for other reductions"
        )
