r"""Cross entropy across processes, on ``torch.distributed`` (gloo for CPU tensors, nccl for CUDA).

Two problems, two tools:

**Tensor parallelism: the class dimension is split across ranks.** :func:`vocab_parallel_cross_entropy`
takes this rank's slice of the logits, ``(N, C_local)`` or ``(N, C_local, d1, ..., dK)``, rank ``r``
holding the classes ``[r·C_local, (r+1)·C_local)``, and returns on every rank the value of
``torch.nn.functional.cross_entropy`` on the full logits; its gradient is this rank's slice of the full
gradient. It communicates ``O(N)`` numbers per call (row maxima, sums of exponentials, the target logit,
the weight and smoothing terms: three all-reduces, see :func:`communication_bytes`), never the logits.

**Data parallelism and gradient accumulation: the batch is split.** The usual recipe, each rank taking
the mean of its own batch and DDP averaging the gradients, gives the mean of the per-rank means. That
is the global mean only when every rank (and every accumulation micro-batch) holds the same number of
valid targets (or the same weight sum). With padding (``ignore_index``) or class weights it is not, and
the targets of the rank with fewer of them count for more. Worked example, two ranks::

    rank 0: 3 valid targets, losses 1, 1, 1   -> its mean 1
    rank 1: 1 valid target,  loss 5           -> its mean 5
    mean of the per-rank means: (1 + 5) / 2 = 3        (rank 1's one target weighs 3x the others)
    global mean over the 4 targets: (1+1+1+5) / 4 = 2  (what one process on the whole batch gives)

:func:`data_parallel_cross_entropy` returns ``world_size · Σ(local losses) / D`` with ``D`` the global
number of valid targets (or weight sum), all-reduced by :func:`global_num_items` or given as
``num_items_in_batch`` (the total over every rank *and* every accumulation micro-batch of the optimizer
step); after DDP averages the gradients over ``world_size`` ranks they are exactly the gradients of the
global mean. In the example each rank returns ``2·3/4 = 1.5`` and ``2·5/4 = 2.5``; DDP's average of
their gradients is the gradient of ``(3 + 5) / 4 = 2``.

Bad setups raise a :class:`losskit.LossError` on every rank instead of hanging: each call first checks
its own arguments, then joins one small all-reduce (the same on every rank, whatever went wrong) that
tells every rank whether any rank failed and whether the ranks agree on the shapes, dtype, options and
targets; only then do the ranks make the collectives whose sizes depend on the input.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from . import _checks, _reduction, functional
from ._checks import LossError
from .engine.autograd import acc_dtype
from .engine.rows import as_rows
from .engine.shards import ShardOptions, VocabParallelCrossEntropy, num_stats

__all__ = [
    "communication_bytes",
    "data_parallel_cross_entropy",
    "global_num_items",
    "vocab_parallel_cross_entropy",
]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_REDUCTION_CODES = {"none": 0, "mean": 1, "sum": 2}
# what the agreement check compares across ranks (plus one "did any rank fail" entry)
_FIELDS = (
    "the number of rows N·d1·…·dK",
    "the batch size N",
    "the number of logits dimensions",
    "C_local (the classes per rank)",
    "the logits' dtype",
    "whether 'weight' is given",
    "ignore_index",
    "reduction",
    "label_smoothing",
    "z_loss",
    "the targets (a checksum)",
)
_FINGERPRINT_PERIOD = 1021


# ----------------------------------------------------------------------------------------- helpers


def _group_rank(fn: str, group) -> tuple[int, int]:
    """(rank, world size) in ``group``; a clear error when there is no process group to talk to."""
    _checks.distributed.process_group(fn, dist.is_available(), dist.is_available() and dist.is_initialized())
    rank = dist.get_rank(group)
    _checks.distributed.process_group(fn, True, True, rank)
    return rank, dist.get_world_size(group)


def _comm_device(group, preferred: torch.device | None = None) -> torch.device:
    """Where a collective's small buffer lives: ``preferred`` (the arguments' device) when the backend
    can reduce there, else the current GPU for nccl, else the CPU."""
    nccl = "nccl" in str(dist.get_backend(group)) and torch.cuda.is_available()
    if preferred is not None and not (nccl and preferred.type == "cpu"):
        return preferred
    return torch.device("cuda", torch.cuda.current_device()) if nccl else torch.device("cpu")


def _describe(field: str, value: float) -> str:
    if field == "the logits' dtype":
        return str(_DTYPES[int(value) - 1]) if 1 <= value <= len(_DTYPES) else "other"
    if field == "reduction":
        return next((k for k, v in _REDUCTION_CODES.items() if v == value), str(value))
    return str(int(value)) if float(value).is_integer() else repr(value)


def _agree(fn: str, group, rank: int, device, error: LossError | None, values) -> None:
    """One all-reduce of a fixed size that every rank makes, whatever its arguments: raises on every rank
    if any rank rejected its arguments (that rank raises its own error) or if the ranks' ``values``
    (floats or 0-d tensors, one per entry of ``_FIELDS``) differ."""
    f = len(_FIELDS)
    v = torch.zeros(f + 1, dtype=torch.float64, device=device)
    v[0] = rank + 1 if error is not None else 0
    if error is None:
        for i, value in enumerate(values, start=1):
            v[i] = value
    both = torch.cat([v, -v])  # MAX of v and of -v: the max and the min in one all-reduce
    dist.all_reduce(both, op=dist.ReduceOp.MAX, group=group)
    hi, lo = both[: f + 1].tolist(), [-t for t in both[f + 1 :].tolist()]
    _checks.distributed.own_error(error)
    _checks.distributed.no_rank_failed(fn, int(hi[0]) - 1 if hi[0] > 0 else None)
    bad = [
        f"{name} (min {_describe(name, lo[i])}, max {_describe(name, hi[i])})"
        for i, name in enumerate(_FIELDS, start=1)
        if hi[i] != lo[i]
    ]
    _checks.distributed.ranks_agree(fn, bad)


def _target_fingerprint(y: torch.Tensor) -> torch.Tensor:
    """A cheap checksum of the targets, the same on every rank iff (almost surely) the targets are."""
    y = y.reshape(-1).long()
    position = torch.arange(y.numel(), device=y.device) % _FINGERPRINT_PERIOD + 1
    return (y * position).sum().to(torch.float64)


# ------------------------------------------------------------------------------------ vocab parallel


def vocab_parallel_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    group=None,
    weight: torch.Tensor | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> torch.Tensor:
    r"""Cross entropy of logits whose class dimension is split evenly across the ranks of ``group``.

    Rank ``r`` of ``R`` ranks holds ``x[:, r·C_l:(r+1)·C_l]`` of the full logits ``x`` (``C = R·C_l``
    classes). With global target ``y``, full class weights ``w`` (ones if None), smoothing ``ε``::

        l_n = (1 - ε) · w_{y_n} · (lse_n - x_{n, y_n}) + ε/C · Σ_c w_c · (lse_n - x_{n, c}) + z_loss · lse_n²
        lse_n = log Σ_c exp(x_{n, c})                  (all sums over the C global classes)

    rows whose target is ``ignore_index`` give 0; ``'mean'`` divides ``Σ_n l_n`` by ``Σ_n w_{y_n}`` over the
    kept rows (NaN if every row is ignored): ``torch.nn.functional.cross_entropy(x, y, w, ...)`` plus the
    z-loss. Every rank returns that same value; the gradient w.r.t. ``logits`` is rank ``r``'s slice of
    the full gradient, computed in the forward pass (backward only scales it by ``grad_output``, per row
    for ``'none'``, and makes no collective).

    Communication: an agreement check of 24 float64 numbers, then ``all_reduce(MAX)`` of the ``rows``
    row maxima and one ``all_reduce(SUM)`` of ``k × rows`` statistics, ``k = 2`` (+1 with ``weight``,
    +1 with ``label_smoothing``), in float32 (float64 for float64 logits); ``rows = N·d1·…·dK``. The
    logits are never gathered. See :func:`communication_bytes`. The check and the target-range check
    wait for their results on the host once per call (the single-process range check does too). ``C``
    must be a multiple of the group size: every rank holds ``C_l`` classes.

    Args:
        logits: this rank's slice, ``(C_l,)``, ``(N, C_l)`` or ``(N, C_l, d1, ..., dK)``; floating point
            (float16/bfloat16 accumulate in float32). ``C_l``, ``N``, the dtype and the options must be
            the same on every rank.
        target: global class indices in ``[0, C)`` (or ``ignore_index``), int64 or uint8, of shape
            ``()``, ``(N,)`` or ``(N, d1, ..., dK)``; the same full target on every rank.
        group: the process group over which the classes are split (default: the world).
        weight: this rank's slice ``w[r·C_l:(r+1)·C_l]`` of the class weights, shape ``(C_l,)``, the
            logits' dtype; given on every rank or on none.
        ignore_index, reduction, label_smoothing: as ``torch.nn.functional.cross_entropy``.
        z_loss: ``z`` of the auxiliary ``z·lse²`` term per kept row, reduced like the loss.

    Returns:
        ``'none'``: the target's shape; otherwise a scalar; the logits' dtype; identical on every rank.

    Raises (on every rank, never a hang): :class:`losskit.LossValueError` without an initialised process
    group, or when the ranks disagree on ``C_l``, the batch, the dtype, the options or the targets, or when
    any rank rejected its arguments; :class:`losskit.LossIndexError` for a target outside ``[0, C)``.

    Example (one rank holds every class, so the value is plain cross entropy; with 2 ranks, rank ``r``
    would pass ``x[:, 2*r:2*r+2]`` and get the same value)::

        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from losskit.distributed import vocab_parallel_cross_entropy
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp.name, "s"), 1), rank=0, world_size=1)
        >>> x = torch.tensor([[0.0, 0.0, 1.2685, -1.0]], requires_grad=True)
        >>> vocab_parallel_cross_entropy(x, torch.tensor([2]))  # -log softmax(x)[2]
        tensor(0.5104, grad_fn=<VocabParallelCrossEntropyBackward>)
        >>> torch.nn.functional.cross_entropy(x, torch.tensor([2]))
        tensor(0.5104, grad_fn=<NllLossBackward0>)
        >>> dist.destroy_process_group(); tmp.cleanup()
    """
    fn = "vocab_parallel_cross_entropy"
    rank, world = _group_rank(fn, group)
    error: LossError | None = None
    values: list = []
    device = _comm_device(group, logits.device if isinstance(logits, torch.Tensor) else None)
    try:
        _checks.tensor(fn, "logits", logits)
        _checks.tensor(fn, "target", target)
        weight = _checks.optional_tensor(fn, "weight", weight)
        ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
        reduction = _reduction.resolve(reduction)
        eps = _checks.label_smoothing(fn, label_smoothing)
        z = _checks.non_negative(fn, "z_loss", z_loss)
        cl = _checks.distributed.vocab_shard(fn, logits, target, weight, rank)
        _checks.class_range(fn, target, world * cl, ignore_index)
        rows = target.numel()
        values = [
            rows,
            target.shape[0] if target.dim() else 1,
            logits.dim(),
            cl,
            _DTYPES.index(logits.dtype) + 1 if logits.dtype in _DTYPES else 0,
            int(weight is not None),
            ignore_index,
            _REDUCTION_CODES[reduction],
            eps,
            z,
            _target_fingerprint(target).to(device),
        ]
    except LossError as e:
        error = e
    _agree(fn, group, rank, device, error, values)

    opts = ShardOptions(reduction, ignore_index, eps, z, rank, world, group)
    loss = VocabParallelCrossEntropy.apply(as_rows(logits), target.reshape(-1).long(), weight, opts)
    if reduction == "none":
        loss = loss.reshape(target.shape)
    return loss


def communication_bytes(
    num_rows: int,
    num_classes: int,
    world_size: int,
    *,
    dtype: torch.dtype = torch.float32,
    weight: bool = False,
    label_smoothing: float = 0.0,
) -> dict[str, int]:
    """Bytes one :func:`vocab_parallel_cross_entropy` call communicates, against all-gathering the logits.

    ``num_rows = N·d1·…·dK``, ``num_classes`` the global ``C`` (a multiple of ``world_size``), ``dtype``
    the logits' dtype. Returns:

    * ``collectives``: the number of collectives per call (3 all-reduces; backward makes none);
    * ``payload_bytes``: the bytes this rank puts into them (the sizes of the reduced buffers);
    * ``ring_bytes_per_rank``: what a ring all-reduce sends per rank, ``2·(R-1)/R`` of the payload;
    * ``all_gather_payload_bytes``: the baseline, this rank's slice of the logits, ``rows·C_l·itemsize``;
    * ``all_gather_ring_bytes_per_rank``: what a ring all-gather of it sends per rank, ``(R-1)·rows·C_l·itemsize``;
    * ``all_gather_output_bytes``: the gathered logits each rank then holds, ``rows·C·itemsize``.

    Example (N = 4096 rows, a 32000-word vocabulary over 2 ranks, float32)::

        >>> from losskit.distributed import communication_bytes
        >>> b = communication_bytes(4096, 32000, 2)
        >>> b["payload_bytes"], b["all_gather_ring_bytes_per_rank"]
        (49344, 262144000)
    """
    fn = "communication_bytes"
    for name, value in (("num_rows", num_rows), ("num_classes", num_classes), ("world_size", world_size)):
        _checks.integer(fn, name, value)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        _checks.floating_dtype(fn, "dtype", dtype)
    _checks.number(fn, "label_smoothing", label_smoothing)
    _checks.distributed.classes_split(fn, num_classes, world_size)
    cl = num_classes // world_size
    acc, item = acc_dtype(dtype).itemsize, dtype.itemsize
    k, extra = num_stats(weight, label_smoothing)
    check = 2 * (len(_FIELDS) + 1) * 8
    payload = check + (num_rows + k * num_rows + extra) * acc if num_rows else check
    return {
        "collectives": 3 if num_rows else 1,
        "payload_bytes": payload,
        "ring_bytes_per_rank": (2 * (world_size - 1) * payload) // world_size,
        "all_gather_payload_bytes": num_rows * cl * item,
        "all_gather_ring_bytes_per_rank": (world_size - 1) * num_rows * cl * item,
        "all_gather_output_bytes": num_rows * num_classes * item,
    }


# ------------------------------------------------------------------------------------- data parallel


def _local_num_items(fn: str, target: torch.Tensor, ignore_index: int, weight: torch.Tensor | None) -> torch.Tensor:
    """This rank's denominator of the mean: valid targets, their weight sum, or rows (probabilities)."""
    _checks.tensor(fn, "target", target)
    if target.is_floating_point():  # class probabilities (N, C, d1, ...) or (C,): the mean is over rows
        rows = target.numel() // target.shape[1] if target.dim() > 1 else 1
        return torch.tensor(float(rows), dtype=torch.float64, device=target.device)
    valid = target.long() != ignore_index
    if weight is None:
        return valid.sum().to(torch.float64)
    _checks.tensor(fn, "weight", weight)
    _checks.class_range(fn, target, weight.numel(), ignore_index)
    y = torch.where(valid, target.long(), torch.zeros_like(target, dtype=torch.long))
    w = weight.to(torch.float64)
    return torch.where(valid, w[y], torch.zeros((), dtype=torch.float64, device=w.device)).sum()


def _sum_over_ranks(fn: str, group, rank: int, device, error: LossError | None, local) -> torch.Tensor:
    """All-reduce SUM of a scalar with a "did any rank fail" entry: raises on every rank if one failed."""
    buf = torch.zeros(2, dtype=torch.float64, device=device)
    if error is None:
        buf[0] = local
    else:
        buf[1] = rank + 1
    dist.all_reduce(buf, op=dist.ReduceOp.SUM, group=group)
    failed = float(buf[1])
    _checks.distributed.own_error(error)
    _checks.distributed.no_rank_failed(fn, -1 if failed else None)
    return buf[0]


def global_num_items(
    target: torch.Tensor | Sequence[torch.Tensor],
    *,
    ignore_index: int = -100,
    weight: torch.Tensor | None = None,
    group=None,
) -> torch.Tensor:
    r"""The denominator of the global cross-entropy mean: ``Σ_ranks Σ_targets w_{y}`` over non-ignored targets.

    Without ``weight`` this is the number of targets that are not ``ignore_index``; with (full) class
    weights ``w`` their weight sum; for class-probability targets (floating point, ``(N, C, d1, ...)``)
    the number of rows ``N·d1·…``, as ``torch.nn.functional.cross_entropy``'s ``'mean'`` divides by.
    ``target`` may be a list of micro-batch targets (gradient accumulation): their total is returned,
    with one all-reduce. Pass the result as ``num_items_in_batch`` to :func:`data_parallel_cross_entropy`.

    Returns:
        a 0-d float64 tensor on the target's device (with nccl and CPU targets: the current GPU), the same
        on every rank.

    Example (one rank; with more, the counts of all ranks are added)::

        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from losskit.distributed import global_num_items
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp.name, "s"), 1), rank=0, world_size=1)
        >>> global_num_items([torch.tensor([0, 2, -100]), torch.tensor([1, -100])])  # 3 valid targets
        tensor(3., dtype=torch.float64)
        >>> global_num_items(torch.tensor([0, 2, -100]), weight=torch.tensor([0.5, 1.0, 2.0]))  # 0.5 + 2
        tensor(2.5000, dtype=torch.float64)
        >>> dist.destroy_process_group(); tmp.cleanup()
    """
    fn = "global_num_items"
    rank, _ = _group_rank(fn, group)
    targets = [target] if isinstance(target, torch.Tensor) else list(target)
    device = _comm_device(group, next((t.device for t in targets if isinstance(t, torch.Tensor)), None))
    error: LossError | None = None
    local = None
    try:
        ignore_index = _checks.integer(fn, "ignore_index", ignore_index)
        weight = _checks.optional_tensor(fn, "weight", weight)
        local = sum(
            (_local_num_items(fn, t, ignore_index, weight).to(device) for t in targets),
            torch.zeros((), dtype=torch.float64, device=device),
        )
    except LossError as e:
        error = e
    return _sum_over_ranks(fn, group, rank, device, error, local)


def data_parallel_cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    *,
    group=None,
    num_items_in_batch: float | torch.Tensor | None = None,
    **cross_entropy_options,
) -> torch.Tensor:
    r"""Cross entropy whose DDP-averaged gradient is the gradient of the mean over the global batch.

    Returns ``R · Σ_n l_n / D`` with ``l_n`` the per-target losses of this rank's ``input``/``target``
    (:func:`losskit.functional.cross_entropy` with ``cross_entropy_options``: ``weight``, ``ignore_index``,
    ``label_smoothing``, ``z_loss``, ...), ``R`` the size of ``group`` and ``D`` the denominator of the
    mean over the global batch (:func:`global_num_items`: valid targets, or their weight sum):

    * ``num_items_in_batch=None``: ``D`` is all-reduced over the group here (one small all-reduce);
      right without gradient accumulation;
    * with gradient accumulation, pass ``num_items_in_batch = global_num_items([targets of every
      micro-batch of the step])``: the micro-batches' gradients then add up to the step's mean.

    DistributedDataParallel averages gradients, dividing by ``R``, which the factor ``R`` undoes: the
    synchronised gradient is ``∇ Σ_{ranks, micro-batches} Σ_n l_n / D``, the gradient of
    ``torch.nn.functional.cross_entropy(all_logits, all_targets, reduction='mean')`` on one process.
    The value on each rank is its share times ``R``; the global mean is the average of the returned
    values over the ranks (``all_reduce`` them and divide by ``R`` to log it). ``reduction`` cannot be
    given: this is the global mean by construction.

    Example (one rank, so it is the plain mean)::

        >>> import os, tempfile, torch, torch.distributed as dist
        >>> from losskit.distributed import data_parallel_cross_entropy
        >>> tmp = tempfile.TemporaryDirectory()
        >>> dist.init_process_group("gloo", store=dist.FileStore(os.path.join(tmp.name, "s"), 1), rank=0, world_size=1)
        >>> x = torch.tensor([[0.0, 0.0, 1.2685], [1.0, 0.0, 0.0]])
        >>> data_parallel_cross_entropy(x, torch.tensor([2, -100]))  # -log(0.64): the ignored row is left out
        tensor(0.4463)
        >>> dist.destroy_process_group(); tmp.cleanup()
    """
    fn = "data_parallel_cross_entropy"
    rank, world = _group_rank(fn, group)
    error: LossError | None = None
    loss_sum = local = None
    device = _comm_device(group, input.device if isinstance(input, torch.Tensor) else None)
    try:
        _checks.distributed.global_mean_options(fn, cross_entropy_options)
        loss_sum = functional.cross_entropy(input, target, reduction="sum", **cross_entropy_options)
        if num_items_in_batch is None:
            ignore_index = cross_entropy_options.get("ignore_index", -100)
            local = _local_num_items(fn, target, ignore_index, cross_entropy_options.get("weight")).to(device)
    except LossError as e:
        error = e
    if num_items_in_batch is None:
        denom = _sum_over_ranks(fn, group, rank, device, error, local)
    else:
        _checks.distributed.own_error(error)
    # any rank's argument error has been raised by now (on every rank, after the collective): the loss is there
    assert loss_sum is not None
    if num_items_in_batch is not None:
        denom = torch.as_tensor(num_items_in_batch, device=loss_sum.device).to(torch.float64)
    # no kept target anywhere (a padded batch): the loss and its gradient are 0, not 0/0 = nan on every rank
    factor = torch.where(denom > 0, world / denom.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    return loss_sum * factor.to(loss_sum.device, loss_sum.dtype)
