"""The machinery of ``tests/test_distributed.py``: the cases, what each rank runs, and the launch.

Spawning a process costs an import of torch (seconds), so each world size (2 and 3 ranks) is one
launch: every rank runs the whole list of cases (:func:`_worker`) and sends its results back through a
queue; the tests only look them up (:func:`launch_results`). Oracles: ``torch.nn.functional.cross_entropy`` on
the full (gathered by construction, never by the code under test) logits in float64, the closed-form
z-loss ``z·logsumexp²`` on top, and single-process training of the same model on the concatenated batch.

No test can hang: collectives time out (gloo, ``COLLECTIVE_TIMEOUT_S``) and every launch is joined with a
hard deadline (``LAUNCH_TIMEOUT_S``), after which its processes are killed and the tests fail.
"""

from __future__ import annotations

import copy
import itertools
import queue
import socket
import time
import traceback
import zlib
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as TF

from losskit.distributed import (
    data_parallel_cross_entropy,
    global_num_items,
    vocab_parallel_cross_entropy,
)

WORLD_SIZES = (2, 3)
LAUNCH_TIMEOUT_S = 150
COLLECTIVE_TIMEOUT_S = 30
F64 = torch.float64
CL = 3  # classes per rank in the option grid
REDUCTIONS = ("none", "mean", "sum")

# ------------------------------------------------------------------------------------------ the cases


@dataclass(frozen=True)
class Case:
    name: str
    weighted: bool = False
    ignore: str = "none"  # none | some (-100) | class (ignore_index=1, a real class) | all
    eps: float = 0.0
    reduction: str = "mean"
    shape: str = "2d"  # 2d (N, C) | 4d (N, C, d1, d2) | 1d (C,) | empty (0, C)
    z: float = 0.0
    dtype: torch.dtype = F64
    uint8: bool = False
    small_chunks: bool = True  # force many row chunks (CHUNK_ELEMENTS = 7)


# every combination of shape, ignore mode, weight, smoothing and reduction; z-loss on every other case
# (so each reduction, shape, ... meets both z values)
GRID = [
    Case(f"{s}-{i}-w{int(w)}-eps{e}-z{z}-{r}", w, i, e, r, s, z)
    for k, (s, i, w, e, r) in enumerate(
        itertools.product(("2d", "4d", "1d"), ("none", "some", "class", "all"), (False, True), (0.0, 0.2), REDUCTIONS)
    )
    for z in [0.01 if k % 2 else 0.0]
]
EXTRA = [
    *(Case(f"float32-{r}", True, "some", 0.1, r, z=0.01, dtype=torch.float32) for r in REDUCTIONS),
    *(Case(f"bfloat16-{r}", True, "some", 0.1, r, dtype=torch.bfloat16) for r in REDUCTIONS),
    *(Case(f"float16-{r}", False, "class", 0.0, r, dtype=torch.float16) for r in REDUCTIONS),
    *(Case(f"empty-{r}", True, "none", 0.1, r, shape="empty") for r in REDUCTIONS),
    Case("uint8-target", True, "class", 0.1, "mean", uint8=True),
    *(Case(f"one-chunk-{r}", True, "some", 0.1, r, shape="4d", z=0.01, small_chunks=False) for r in ("none", "mean")),
]
CASES = GRID + EXTRA
TOL = {F64: (1e-10, 1e-12), torch.float32: (1e-5, 1e-6), torch.bfloat16: (2e-2, 2e-2), torch.float16: (2e-3, 2e-3)}


def _make(case: Case, world: int):
    """The full problem, the same on every rank: logits (float64), target, full weight, grad_output."""
    g = torch.Generator().manual_seed(zlib.crc32(case.name.encode()))
    c = CL * world
    shapes = {"2d": ((5, c), (5,)), "4d": ((2, c, 2, 3), (2, 2, 3)), "1d": ((c,), ()), "empty": ((0, c), (0,))}
    xs, ys = shapes[case.shape]
    x = torch.randn(xs, generator=g, dtype=F64) * 3
    y = torch.randint(0, c, ys, generator=g)
    ignore_index = 1 if case.ignore == "class" else -100
    flat = y.view(-1)
    if case.ignore == "some":
        flat[::3] = -100
    elif case.ignore == "class":
        flat[::2] = 1
    elif case.ignore == "all":
        flat[:] = -100
    if case.uint8:
        y = y.to(torch.uint8)
    w = torch.rand(c, generator=g, dtype=F64) + 0.25 if case.weighted else None
    go = (torch.rand(ys, generator=g, dtype=F64) + 0.5) if case.reduction == "none" else torch.tensor(1.75, dtype=F64)
    if case.dtype != F64:  # the lower-precision inputs, exactly representable in float64 for the oracle
        x = x.to(case.dtype).to(F64)
        w = None if w is None else w.to(case.dtype).to(F64)
    return x, y, w, ignore_index, go


def assert_close_within(what: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    """|got - want| <= atol + rtol·|want| everywhere, NaN exactly where the oracle has NaN.

    (Not torch.testing.assert_close: its first call imports torch.distributed.tensor, seconds per rank.)
    """
    assert got.shape == want.shape, f"{what}: shape {list(got.shape)} != {list(want.shape)}"
    nan = want.isnan()
    assert torch.equal(got.isnan(), nan), f"{what}: NaN at other places: {got} vs {want}"
    bad = ((got - want).abs() > atol + rtol * want.abs()) & ~nan
    assert not bool(bad.any()), f"{what}: {got[bad].tolist()} != {want[bad].tolist()} (rtol {rtol}, atol {atol})"


def _oracle(case: Case, x, y, w, ignore_index, go):
    """torch's cross entropy on the full logits (float64), plus the closed-form z-loss; value and gradient."""
    x = x.clone().requires_grad_()
    ref = TF.cross_entropy(
        x, y.long(), weight=w, ignore_index=ignore_index, reduction=case.reduction, label_smoothing=case.eps
    )
    if case.z:
        cdim = 0 if x.dim() == 1 else 1
        valid = y.long() != ignore_index
        lse = x.logsumexp(cdim)
        zt = torch.where(valid, case.z * lse * lse, torch.zeros((), dtype=F64))
        if case.reduction == "none":
            ref = ref + zt
        elif case.reduction == "sum":
            ref = ref + zt.sum()
        else:
            y_safe = torch.where(valid, y.long(), 0)
            w_y = valid.to(F64) if w is None else torch.where(valid, w[y_safe], 0.0)
            ref = ref + zt.sum() / w_y.sum()
    (ref * go).sum().backward()
    return ref.detach(), x.grad


def _run_case(case: Case, rank: int, world: int, group=None) -> dict:
    """One case on this rank (``rank``/``world`` within ``group``): value with and without grad, gradient."""
    import losskit.engine.rows as engine  # the chunk size the vocab-parallel engine shares

    x, y, w, ignore_index, go = _make(case, world)
    ref, ref_grad = _oracle(case, x, y, w, ignore_index, go)
    cdim = 0 if x.dim() == 1 else 1
    lx = x.narrow(cdim, rank * CL, CL).to(case.dtype).clone().requires_grad_()
    lw = None if w is None else w[rank * CL : (rank + 1) * CL].to(case.dtype)
    options = dict(
        group=group,
        weight=lw,
        ignore_index=ignore_index,
        reduction=case.reduction,
        label_smoothing=case.eps,
        z_loss=case.z,
    )
    saved = engine.CHUNK_ELEMENTS
    engine.CHUNK_ELEMENTS = 7 if case.small_chunks else saved
    try:
        out = vocab_parallel_cross_entropy(lx, y, **options)
        (out * go.to(out.dtype)).sum().backward()
        out_no_grad = vocab_parallel_cross_entropy(lx.detach(), y, **options)  # the path without a gradient
    finally:
        engine.CHUNK_ELEMENTS = saved
    err = None
    try:
        assert out.dtype == case.dtype and lx.grad.dtype == case.dtype, (out.dtype, lx.grad.dtype)
        assert out.shape == ref.shape, (out.shape, ref.shape)
        assert out_no_grad.grad_fn is None
        rtol, atol = TOL[case.dtype]
        assert_close_within("value", out.to(F64), ref, rtol, atol)
        assert_close_within("value without grad", out_no_grad.to(F64), ref, rtol, atol)
        assert_close_within("grad", lx.grad.to(F64), ref_grad.narrow(cdim, rank * CL, CL), rtol, atol)
    except AssertionError as e:
        err = str(e)
    return {"err": err, "values": out.detach().to(F64).reshape(-1).tolist(), "numel": ref_grad.numel()}


SUBGROUP_CASES = [
    Case("subgroup-a", True, "some", 0.1, "none", "4d", 0.01),
    Case("subgroup-b", False, "class", 0.0, "mean"),
]


def _run_subgroup(rank: int, world: int) -> dict:
    """A group that is not the world (ranks 1..world-1): group ranks differ from global ranks."""
    members = list(range(1, world))
    group = dist.new_group(members)  # every rank takes part in creating it
    if rank not in members:
        return {}
    return {c.name: _run_case(c, members.index(rank), len(members), group)["err"] for c in SUBGROUP_CASES}


# ------------------------------------------------------------------------------------------ bad setups

# name -> (type on the ranks that are not listed, substring of its message, {rank: (type, substring)})
BAD_EXPECT = {
    "c_local_mismatch": ("LossValueError", "C_local", {}),
    "batch_mismatch": ("LossValueError", "number of rows", {}),
    "target_too_large": ("LossIndexError", "out of bounds", {}),
    "target_negative": ("LossIndexError", "-5", {}),
    "target_bad_on_rank_1": (
        "LossValueError",
        "rank 1 of the group rejected",
        {1: ("LossIndexError", "out of bounds")},
    ),
    "weight_length_on_rank_0": ("LossValueError", "rank 0 of the group rejected", {0: ("LossValueError", "'weight'")}),
    "weight_on_rank_0_only": ("LossValueError", "whether 'weight' is given", {}),
    "label_smoothing_differs": ("LossValueError", "label_smoothing (min 0, max 0.1)", {}),
    "reduction_differs": ("LossValueError", "reduction (min mean, max sum)", {}),
    "ignore_index_differs": ("LossValueError", "ignore_index (min -100, max 1)", {}),
    "dtype_differs": ("LossValueError", "dtype (min torch.float32, max torch.float64)", {}),
    "targets_differ": ("LossValueError", "the targets", {}),
    "probability_target": ("LossTypeError", "class indices", {}),
    "bad_reduction": ("LossValueError", "avg", {}),
    "weight_dtype": ("LossTypeError", "'weight'", {}),
    "logits_not_a_tensor_on_rank_0": (
        "LossValueError",
        "rank 0 of the group rejected",
        {0: ("LossTypeError", "'logits'")},
    ),
    "dp_bad_target_on_rank_0": ("LossValueError", "another rank", {0: ("LossIndexError", "out of bounds")}),
    "dp_reduction_given": ("LossValueError", "reduction", {}),
    "num_items_bad_target_on_rank_1": ("LossValueError", "another rank", {1: ("LossIndexError", "out of bounds")}),
}


def _bad_calls(rank: int, world: int) -> dict:
    n, c = 4, CL * world
    g = torch.Generator().manual_seed(7)
    full = torch.randn(n, c, generator=g, dtype=F64)
    y = torch.tensor([0, c - 1, 1, 2])
    x = full[:, rank * CL : (rank + 1) * CL].clone()
    w = (torch.rand(c, generator=g, dtype=F64) + 0.5)[rank * CL : (rank + 1) * CL].clone()
    last = world - 1
    vp = vocab_parallel_cross_entropy
    return {
        "c_local_mismatch": lambda: vp(torch.randn(n, CL + (rank == 0), dtype=F64), y),
        "batch_mismatch": lambda: vp(x[: n - (rank == last)], y[: n - (rank == last)]),
        "target_too_large": lambda: vp(x, torch.tensor([0, c, 1, 2])),
        "target_negative": lambda: vp(x, torch.tensor([0, -5, 1, 2])),
        "target_bad_on_rank_1": lambda: vp(x, torch.tensor([0, c + 3 if rank == 1 else 1, 1, 2])),
        "weight_length_on_rank_0": lambda: vp(x, y, weight=torch.ones(CL + 1, dtype=F64) if rank == 0 else w),
        "weight_on_rank_0_only": lambda: vp(x, y, weight=w if rank == 0 else None),
        "label_smoothing_differs": lambda: vp(x, y, label_smoothing=0.1 if rank == last else 0.0),
        "reduction_differs": lambda: vp(x, y, reduction="sum" if rank == last else "mean"),
        "ignore_index_differs": lambda: vp(x, y, ignore_index=1 if rank == 0 else -100),
        "dtype_differs": lambda: vp(x.float() if rank == 0 else x, y),
        "targets_differ": lambda: vp(x, y.flip(0) if rank == last else y),
        "probability_target": lambda: vp(x, torch.rand(n, CL, dtype=F64)),
        "bad_reduction": lambda: vp(x, y, reduction="avg"),
        "weight_dtype": lambda: vp(x, y, weight=w.float()),
        "logits_not_a_tensor_on_rank_0": lambda: vp(x.tolist() if rank == 0 else x, y),
        "dp_bad_target_on_rank_0": lambda: data_parallel_cross_entropy(
            full, torch.tensor([0, c if rank == 0 else 1, 1, 2])
        ),
        "dp_reduction_given": lambda: data_parallel_cross_entropy(full, y, reduction="sum"),
        "num_items_bad_target_on_rank_1": lambda: global_num_items(
            torch.tensor([0, c + 1 if rank == 1 else 1]), weight=torch.ones(c, dtype=F64)
        ),
    }


def _sanity(rank: int, world: int) -> str | None:
    """A valid call right after a bad one: the ranks' collectives must still line up."""
    case = Case("sanity", True, "some", 0.1, "mean")
    return _run_case(case, rank, world)["err"]


def _run_bad(rank: int, world: int) -> dict:
    out = {}
    for name, call in _bad_calls(rank, world).items():
        rec = {"type": None, "msg": None, "runtime": False}
        start = time.monotonic()
        try:
            call()
        except Exception as e:  # record whatever came, the parent judges it
            rec.update(type=type(e).__name__, msg=str(e), runtime=isinstance(e, RuntimeError))
        rec["seconds"] = time.monotonic() - start
        rec["sanity"] = _sanity(rank, world)
        out[name] = rec
    return out


# --------------------------------------------------------------------------------- communication spy


COMM_CASES = [
    (n, weighted, eps, dtype)
    for n, weighted, eps, dtype in itertools.product((7, 0), (False, True), (0.0, 0.1), (torch.float32, F64))
]


def _run_comm(rank: int, world: int) -> list:
    """Sizes of the collectives one call makes, recorded by wrapping torch.distributed's functions."""
    log: list = []
    real = dist.all_reduce
    names = ("all_gather", "all_gather_into_tensor", "broadcast", "reduce_scatter", "all_to_all", "gather")
    saved = {k: getattr(dist, k) for k in names}

    def spy(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        log.append(("all_reduce", tensor.numel() * tensor.element_size()))
        return real(tensor, op=op, group=group, async_op=async_op)

    def forbidden(name):
        def f(*args, **kwargs):
            log.append((name, 0))
            raise AssertionError(f"{name} must not be called")

        return f

    dist.all_reduce = spy
    for k in names:
        setattr(dist, k, forbidden(k))
    results = []
    try:
        for n, weighted, eps, dtype in COMM_CASES:
            g = torch.Generator().manual_seed(n)
            x = torch.randn(n, CL, generator=g, dtype=dtype, requires_grad=True)
            y = torch.randint(0, CL * world, (n,), generator=g)
            w = torch.rand(CL, generator=g, dtype=dtype) if weighted else None
            log.clear()
            loss = vocab_parallel_cross_entropy(x, y, weight=w, label_smoothing=eps)
            forward = list(log)
            loss.backward()
            results.append(
                {"case": (n, weighted, eps, str(dtype)), "forward": forward, "backward": log[len(forward) :]}
            )
    finally:
        dist.all_reduce = real
        for k, v in saved.items():
            setattr(dist, k, v)
    return results


# -------------------------------------------------------------------------- data parallel and DDP


def _split_batch(step: int, world: int, micro: int, c: int, d: int, probabilities: bool = False):
    """Per (rank, micro-batch): inputs and targets of unequal sizes and unequal numbers of valid targets."""
    out = {}
    for r, m in itertools.product(range(world), range(micro)):
        g = torch.Generator().manual_seed(1000 * step + 10 * r + m)
        n = 2 + 3 * r + m
        x = torch.randn(n, d, generator=g, dtype=F64)
        if probabilities:
            y = torch.rand(n, c, generator=g, dtype=F64).softmax(1)
        else:
            y = torch.randint(0, c, (n,), generator=g)
            y[torch.rand(n, generator=g) < 0.15 + 0.3 * r] = -100  # rank r ignores more
        out[r, m] = (x, y)
    return out


DP_SCENARIOS = {
    # name: (cross-entropy options, probabilities)
    "plain": ({}, False),
    "weighted-smoothed": ({"weight": "w", "label_smoothing": 0.1}, False),
    "z-loss": ({"z_loss": 0.01, "ignore_index": -100}, False),
    "probabilities": ({"label_smoothing": 0.05}, True),
}


def _dp_options(spec: dict, c: int) -> dict:
    w = torch.linspace(0.5, 2.0, c, dtype=F64)
    return {k: (w if v == "w" else v) for k, v in spec.items()}


def _run_dp(rank: int, world: int) -> dict:
    """Values and gradients of data_parallel_cross_entropy against the global mean (no DDP)."""
    out = {}
    c = 5
    for name, (spec, probabilities) in DP_SCENARIOS.items():
        opts = _dp_options(spec, c)
        batch = _split_batch(0, world, 1, c, c, probabilities)
        xs = torch.cat([batch[r, 0][0] for r in range(world)]).requires_grad_()
        ys = torch.cat([batch[r, 0][1] for r in range(world)])
        z = opts.pop("z_loss", 0.0)
        ref = TF.cross_entropy(xs, ys, **opts)
        if z:
            valid = ys != -100
            ref = ref + (z * xs.logsumexp(1) ** 2)[valid].sum() / valid.sum()
        ref.backward()
        start = sum(batch[r, 0][0].shape[0] for r in range(rank))
        x, y = batch[rank, 0]
        x = x.clone().requires_grad_()
        loss = data_parallel_cross_entropy(x, y, **opts, **({"z_loss": z} if z else {}))
        loss.backward()
        total = loss.detach().clone()
        dist.all_reduce(total)
        err = None
        try:
            assert_close_within("value", total / world, ref.detach(), 1e-10, 1e-12)
            assert_close_within("grad", x.grad / world, xs.grad[start : start + x.shape[0]], 1e-10, 1e-12)
        except AssertionError as e:
            err = str(e)
        out[name] = {"err": err, "rows": x.shape[0]}
    return out


DDP_SCENARIOS = {
    # name: (micro-batches per step, cross-entropy options, pass num_items_in_batch)
    "accumulation-weighted-smoothed": (3, {"weight": "w", "label_smoothing": 0.1}, True),
    "accumulation-plain": (2, {}, True),
    "no-accumulation": (1, {"weight": "w"}, False),
}


def _run_ddp(rank: int, world: int) -> dict:
    """A DDP-wrapped Linear trained with accumulation vs the same Linear on the concatenated batch."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    out = {}
    d, c, steps = 4, 5, 3
    for name, (micro, spec, pass_total) in DDP_SCENARIOS.items():
        opts = _dp_options(spec, c)
        torch.manual_seed(0)
        ref_model = torch.nn.Linear(d, c).to(F64)
        model, naive_model = copy.deepcopy(ref_model), copy.deepcopy(ref_model)
        ddp, naive = DDP(model), DDP(naive_model)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.5)
        opt_naive = torch.optim.SGD(naive.parameters(), lr=0.5)
        opt_ref = torch.optim.SGD(ref_model.parameters(), lr=0.5)
        for step in range(steps):
            batch = _split_batch(step, world, micro, c, d)
            mine = [batch[rank, m] for m in range(micro)]
            total = None
            if pass_total:
                total = global_num_items([y for _, y in mine], weight=opts.get("weight"))
            for m, (x, y) in enumerate(mine):
                last = m == micro - 1
                with nullcontext() if last else ddp.no_sync():
                    data_parallel_cross_entropy(ddp(x), y, num_items_in_batch=total, **opts).backward()
                with nullcontext() if last else naive.no_sync():  # the usual recipe: per-rank mean / micro
                    (TF.cross_entropy(naive(x), y, **opts) / micro).backward()
            for o in (opt, opt_naive):
                o.step()
                o.zero_grad()
            xs = torch.cat([batch[k][0] for k in sorted(batch)])
            ys = torch.cat([batch[k][1] for k in sorted(batch)])
            TF.cross_entropy(ref_model(xs), ys, **opts).backward()
            opt_ref.step()
            opt_ref.zero_grad()

        def diff(a, b):
            return max(
                float((p.detach() - q.detach()).abs().max())
                for p, q in zip(a.parameters(), b.parameters(), strict=True)
            )

        out[name] = {"err": diff(model, ref_model), "naive_err": diff(naive_model, ref_model)}
    return out


# ------------------------------------------------------------------------------------------- the launch


def _worker(rank: int, world: int, init_method: str, results) -> None:
    torch.set_num_threads(1)
    try:
        dist.init_process_group(
            "gloo",
            init_method=init_method,
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
    except Exception:
        results.put((rank, {"init_error": traceback.format_exc()}))
        return
    out: dict = {}
    try:
        out["cases"] = {}
        for case in CASES:
            try:
                out["cases"][case.name] = _run_case(case, rank, world)
            except Exception:
                out["cases"][case.name] = {"err": traceback.format_exc(), "values": [], "numel": 0}
        out["subgroup"] = _run_subgroup(rank, world)
        out["comm"] = _run_comm(rank, world)
        out["bad"] = _run_bad(rank, world)
        out["dp"] = _run_dp(rank, world)
        out["ddp"] = _run_ddp(rank, world)
    except Exception:
        out["crash"] = traceback.format_exc()
    results.put((rank, out))
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(world: int) -> dict:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    procs = [ctx.Process(target=_worker, args=(r, world, init_method, results), daemon=True) for r in range(world)]
    for p in procs:
        p.start()
    return {"world": world, "queue": results, "procs": procs, "ranks": {}}


def _collect(launches: list[dict]) -> None:
    """Wait for every rank's report until the deadline, then kill whatever still runs."""
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    try:
        pending = list(launches)
        while pending and time.monotonic() < deadline:
            for launch in list(pending):
                try:
                    rank, res = launch["queue"].get(timeout=0.2)
                    launch["ranks"][rank] = res
                except queue.Empty:
                    if any(p.exitcode not in (None, 0) for p in launch["procs"]):  # died without reporting
                        pending.remove(launch)
                if len(launch["ranks"]) == launch["world"] and launch in pending:
                    pending.remove(launch)
        for launch in launches:
            for p in launch["procs"]:
                p.join(timeout=max(0.1, min(10.0, deadline - time.monotonic())))
    finally:
        for launch in launches:
            launch["hung"] = [r for r, p in enumerate(launch["procs"]) if p.is_alive()]
            for p in launch["procs"]:
                if p.is_alive():
                    p.kill()
                    p.join(5)


_LAUNCHES: dict[int, dict] = {}


def launch_results(world: int) -> dict:
    """Every rank's results for ``world`` ranks. The first call runs all world sizes at once (their
    start-ups overlap); a launch whose process group could not start (port taken) is retried once."""
    if not _LAUNCHES:
        launches = [_start(w) for w in WORLD_SIZES]
        _collect(launches)
        retry = [w for w, launch in zip(WORLD_SIZES, launches, strict=True) if _init_failed(launch)]
        if retry:
            again = [_start(w) for w in retry]
            _collect(again)
            launches = [launch for launch in launches if launch["world"] not in retry] + again
        _LAUNCHES.update({launch["world"]: launch for launch in launches})
    launch = _LAUNCHES[world]
    assert not launch["hung"], f"ranks {launch['hung']} still running after {LAUNCH_TIMEOUT_S} s (killed)"
    ranks = launch["ranks"]
    exitcodes = [p.exitcode for p in launch["procs"]]
    assert sorted(ranks) == list(range(world)), f"ranks reported: {sorted(ranks)}; exit codes {exitcodes}"
    for rank, res in ranks.items():
        assert "init_error" not in res and "crash" not in res, (
            f"rank {rank}: {res.get('init_error') or res.get('crash')}"
        )
    return ranks


def _init_failed(launch: dict) -> bool:
    return any("init_error" in r for r in launch["ranks"].values())
