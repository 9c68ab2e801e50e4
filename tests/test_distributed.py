"""losskit.distributed against single-process torch, on real process groups (gloo on 127.0.0.1).

The cases, what every rank runs and the launch (one per world size, shared by all the tests here) are in
``tests/distributed_helpers.py``; the tests below only look the ranks' results up.
"""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as TF

import losskit
from distributed_helpers import (
    BAD_EXPECT,
    CASES,
    CL,
    COLLECTIVE_TIMEOUT_S,
    COMM_CASES,
    DDP_SCENARIOS,
    DP_SCENARIOS,
    F64,
    SUBGROUP_CASES,
    WORLD_SIZES,
)
from distributed_helpers import assert_close_within as _assert_close
from distributed_helpers import launch_results as _launch
from losskit.distributed import (
    communication_bytes,
    data_parallel_cross_entropy,
    global_num_items,
    vocab_parallel_cross_entropy,
)


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_vocab_parallel_matches_torch(world, case):
    ranks = _launch(world)
    got = [ranks[r]["cases"][case.name] for r in range(world)]
    for r, res in enumerate(got):
        assert res["err"] is None, f"rank {r}: {res['err']}"
    # every rank returns the same value (bit for bit: the same reduced statistics, the same arithmetic)
    for r in range(1, world):
        assert got[r]["values"] == got[0]["values"] or all(
            a == b or (a != a and b != b) for a, b in zip(got[r]["values"], got[0]["values"], strict=True)
        ), (r, got[r]["values"], got[0]["values"])
    if case.shape != "empty":
        assert got[0]["values"] and got[0]["numel"] > 0


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_subgroup(world):
    ranks = _launch(world)
    assert ranks[0]["subgroup"] == {}
    for r in range(1, world):
        assert ranks[r]["subgroup"] == {c.name: None for c in SUBGROUP_CASES}, ranks[r]["subgroup"]


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", list(BAD_EXPECT))
def test_bad_setup_raises_on_every_rank(world, name):
    ranks = _launch(world)
    default_type, default_msg, per_rank = BAD_EXPECT[name]
    for r in range(world):
        rec = ranks[r]["bad"][name]
        want_type, want_msg = per_rank.get(r, (default_type, default_msg))
        assert rec["type"] == want_type, f"rank {r}: expected {want_type}, got {rec['type']}: {rec['msg']}"
        assert want_msg in rec["msg"], f"rank {r}: {want_msg!r} not in {rec['msg']!r}"
        assert rec["runtime"]  # a LossError is a RuntimeError, like torch's errors
        assert rec["sanity"] is None, f"rank {r}: the next valid call went wrong: {rec['sanity']}"
        assert rec["seconds"] < COLLECTIVE_TIMEOUT_S  # it raised, not a collective timing out


@pytest.mark.parametrize("world", WORLD_SIZES)
def test_communication_is_three_small_all_reduces(world):
    ranks = _launch(world)
    assert len(ranks[0]["comm"]) == len(COMM_CASES)
    for r in range(world):
        for rec, (n, weighted, eps, dtype) in zip(ranks[r]["comm"], COMM_CASES, strict=True):
            expected = communication_bytes(n, CL * world, world, dtype=dtype, weight=weighted, label_smoothing=eps)
            kinds = {k for k, _ in rec["forward"]}
            assert kinds == {"all_reduce"}, rec
            assert len(rec["forward"]) == expected["collectives"], rec
            assert sum(b for _, b in rec["forward"]) == expected["payload_bytes"], (rec, expected)
            assert rec["backward"] == [], rec  # backward communicates nothing
            if n:  # O(N): the row statistics, (1 + k)·N numbers, plus the fixed-size check
                k = 2 + weighted + (eps > 0)
                item = 8 if dtype == F64 else 4
                assert rec["forward"][1][1] == n * item and rec["forward"][2][1] >= k * n * item


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", list(DP_SCENARIOS))
def test_data_parallel_matches_global_mean(world, name):
    ranks = _launch(world)
    rows = [ranks[r]["dp"][name]["rows"] for r in range(world)]
    assert len(set(rows)) == world  # the ranks really hold different numbers of rows
    for r in range(world):
        assert ranks[r]["dp"][name]["err"] is None, f"rank {r}: {ranks[r]['dp'][name]['err']}"


@pytest.mark.parametrize("world", WORLD_SIZES)
@pytest.mark.parametrize("name", list(DDP_SCENARIOS))
def test_ddp_training_matches_single_process(world, name):
    ranks = _launch(world)
    for r in range(world):
        res = ranks[r]["ddp"][name]
        assert res["err"] <= 1e-10, f"rank {r}: parameters differ from single-process training by {res['err']}"
        # the usual per-rank mean is measurably off here, so the check above is not trivially true
        assert res["naive_err"] > 1e-4, f"rank {r}: the naive recipe matched too ({res['naive_err']})"


def test_without_process_group_raises():
    assert not dist.is_initialized()
    x, y = torch.randn(2, 3), torch.tensor([0, 1])
    for call in (
        lambda: vocab_parallel_cross_entropy(x, y),
        lambda: data_parallel_cross_entropy(x, y),
        lambda: global_num_items(y),
    ):
        with pytest.raises(losskit.LossValueError, match="init_process_group"):
            call()


def test_communication_bytes_closed_form():
    # N = 4096 rows, C = 32000 over 2 ranks, float32: 3 all-reduces (24 float64 of checks, N maxima,
    # 2N statistics) against all-gathering 4096 x 16000 float32 logits per rank
    b = communication_bytes(4096, 32000, 2)
    assert b["collectives"] == 3
    assert b["payload_bytes"] == 24 * 8 + 4096 * 4 + 2 * 4096 * 4 == 49344
    assert b["ring_bytes_per_rank"] == 49344
    assert b["all_gather_payload_bytes"] == b["all_gather_ring_bytes_per_rank"] == 4096 * 16000 * 4
    assert b["all_gather_output_bytes"] == 4096 * 32000 * 4
    full = communication_bytes(4096, 32000, 2, weight=True, label_smoothing=0.1, dtype=torch.bfloat16)
    assert full["payload_bytes"] == 24 * 8 + (4096 + 4 * 4096 + 1) * 4
    assert full["all_gather_payload_bytes"] == 4096 * 16000 * 2
    with pytest.raises(losskit.LossValueError):
        communication_bytes(4, 10, 3)


@pytest.fixture
def one_rank_group(tmp_path):
    """A gloo group of one process (this one), destroyed afterwards."""
    assert not dist.is_initialized()
    dist.init_process_group("gloo", store=dist.FileStore(str(tmp_path / "store"), 1), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_one_rank_is_plain_cross_entropy(one_rank_group):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 5, 2, generator=g, dtype=F64, requires_grad=True)
    y = torch.randint(0, 5, (6, 2), generator=g)
    y[0, 0] = -100
    w = torch.rand(5, generator=g, dtype=F64)
    got = vocab_parallel_cross_entropy(x, y, weight=w, label_smoothing=0.3)
    (gx,) = torch.autograd.grad(got, x)
    want = TF.cross_entropy(x, y, weight=w, label_smoothing=0.3)
    (wx,) = torch.autograd.grad(want, x)
    _assert_close("value", got.detach(), want.detach(), 1e-12, 1e-14)
    _assert_close("grad", gx, wx, 1e-12, 1e-14)
    # data parallel on one rank is the plain mean
    _assert_close(
        "dp", data_parallel_cross_entropy(x, y, weight=w).detach(), TF.cross_entropy(x, y, weight=w), 1e-12, 0
    )
    assert float(global_num_items([y, y[:1]], weight=w)) == pytest.approx(float(w[y[y != -100]].sum() + w[y[0, 1]]))


def test_second_backward_raises_instead_of_communicating(one_rank_group):
    x = torch.randn(3, 4, dtype=F64, requires_grad=True)
    loss = vocab_parallel_cross_entropy(x, torch.tensor([0, 1, 3]))
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="second backward"):
        loss.backward()
