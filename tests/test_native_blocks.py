"""The cross-entropy kernel's one-pass row (issue 17): blocks with an online maximum, stored exponentials, and a
gradient written with non-temporal stores from an aligned vector on; bf16 rounded with AVX-512 BF16 where the
CPU has it.

What ``test_native.py``'s grids do not reach: rows longer than one block (1024 classes) whose maximum rises late,
or in every block, with non-finite values in later blocks; the streaming gradient pass at every alignment (its
results must not depend on where a row lies in memory); the two bf16 roundings bit for bit, subnormals included;
the thread split with all of it.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

import losskit.functional as LF
from helpers import assert_matches_torch, assert_same_across_thread_counts, class_weights
from helpers import seeded as _gen
from losskit.engine import native as _native

DISABLED = os.environ.get("LOSSKIT_NATIVE", "1").strip().lower() in ("0", "false", "no", "off")
pytestmark = pytest.mark.skipif(DISABLED, reason="LOSSKIT_NATIVE=0 in the environment")

BLOCK = 1024  # classes per block in kernels/cross_entropy.cpp
DTYPES = [torch.float32, torch.bfloat16]
DTYPE_IDS = ["fp32", "bf16"]


@pytest.fixture
def streaming():
    """Non-temporal gradient stores for every size (restored afterwards)."""
    before = _native.stream_bytes()
    _native.stream_bytes(0)
    yield
    _native.stream_bytes(before)


def _late_maximum_rows(c: int, g: torch.Generator) -> torch.Tensor:
    """Rows (float64) whose maximum is found late, or rises in every block, or drops the sums so far to nothing."""
    x = torch.randn(9, c, generator=g, dtype=torch.float64) * 2
    x[0] = torch.linspace(-20, 20, c, dtype=torch.float64)  # rises in every block
    x[1, -1] = 30.0  # the very last class
    x[2, (c // BLOCK) * BLOCK - 1 if c > BLOCK else 0] = 25.0  # the last class of the block before the last
    x[3] = torch.linspace(20, -20, c, dtype=torch.float64)  # falls: the first block holds it
    x[4, c - (c % 16 or 1)] = 40.0  # among the scalar classes at the row's end (or the last vector)
    x[5, :BLOCK] -= 1e4  # the first block's sums underflow to 0 once a later block raises the maximum
    x[6, BLOCK:] += 60.0  # rescaled by exp(-60): small but kept
    x[7, -5:] = torch.tensor([80.0, 79.0, 80.0, 78.0, 80.0], dtype=torch.float64)  # ties at the end
    x[8] = 7.0  # constant: the maximum never rises after the first block
    return x


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("options", ["plain", "w+ls"])
@pytest.mark.parametrize("c", [1025, 2 * BLOCK + 37, 5003])
def test_rows_whose_maximum_rises_late_match_torch(dtype, options, c):
    g = _gen("late-max", c, options)
    x = _late_maximum_rows(c, g)
    y = torch.randint(0, c, (x.shape[0],), generator=g)
    y[1], y[2] = c - 1, 0  # the target on the late maximum, and far from it
    kwargs = {"reduction": "none"}
    inputs = {"input": x, "target": y, "weight": None}
    if options == "w+ls":
        inputs["weight"] = class_weights(c, g)
        kwargs["label_smoothing"] = 0.2
    assert_matches_torch(LF.cross_entropy, F.cross_entropy, inputs, kwargs, dtype=dtype)


@pytest.mark.parametrize("z", [0.0, 1e-3])
def test_late_maximum_with_smoothing_and_z_loss_matches_float64(z):
    """The smoothing term Σ w·(x - m) is carried across rises of the maximum; z-loss uses the final lse."""
    c = 3 * BLOCK + 11
    g = _gen("late-max-z", z)
    x = _late_maximum_rows(c, g)
    y = torch.randint(0, c, (x.shape[0],), generator=g)
    w = class_weights(c, g)
    ref = F.cross_entropy(x, y, weight=w, label_smoothing=0.3, reduction="none")
    ref = ref + z * torch.logsumexp(x, 1) ** 2
    ours = LF.cross_entropy(x.float(), y, weight=w.float(), label_smoothing=0.3, reduction="none", z_loss=z)
    torch.testing.assert_close(ours.double(), ref, rtol=2e-5, atol=1e-4)


NONFINITE_ROWS = {
    "neg_inf_first_block": lambda x: x[0, :BLOCK].fill_(float("-inf")),
    "neg_inf_but_last": lambda x: x[1, :-1].fill_(float("-inf")),
    "pos_inf_late": lambda x: x[2, -3].fill_(float("inf")),
    "nan_late": lambda x: x[3, BLOCK + 5].fill_(float("nan")),
    "nan_first": lambda x: x[4, 0].fill_(float("nan")),
    "all_neg_inf": lambda x: x[5].fill_(float("-inf")),
    "huge": lambda x: x[6].mul_(1e30),
    "huge_late": lambda x: x[7, -BLOCK:].mul_(3e37),
}


@pytest.mark.parametrize("case", list(NONFINITE_ROWS))
def test_nonfinite_values_in_later_blocks_like_torch(case):
    """NaN and ±inf anywhere in a long row give NaN and inf where torch's do; huge rows stay finite."""
    c = 2 * BLOCK + 50
    g = _gen("nonfinite-blocks", case)
    x = torch.randn(8, c, generator=g, dtype=torch.float64)
    NONFINITE_ROWS[case](x)
    y = torch.randint(0, c, (8,), generator=g)
    y[1] = c - 1  # the one finite class of that row
    assert_matches_torch(
        LF.cross_entropy, F.cross_entropy, {"input": x, "target": y}, {"reduction": "none"}, dtype=torch.float32
    )


def _kernel(x, grad, y, weight, eps, z, row_scale):
    rows = torch.zeros(x.shape[0])
    w_sum = float(weight.double().sum()) if weight is not None else float(x.shape[1])
    _native.cross_entropy_rows(x, grad, y, weight, w_sum, eps, z, 0.25, row_scale, rows)
    return rows


def _case(dtype, c, g):
    n = 6
    x = _late_maximum_rows(c, g)[:n].to(dtype)
    y = torch.randint(0, c, (n,), generator=g)
    y[2] = -1
    return x, y, torch.rand(c, generator=g) + 0.5, torch.rand(n, generator=g)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("c", [100, 1000, 2 * BLOCK + 3])
@pytest.mark.parametrize("options", ["plain", "w+ls+z"])
def test_streamed_gradient_is_bitwise_the_cached_one_at_every_alignment(dtype, c, options):
    """Non-temporal stores start at the first aligned vector of each row: the classes before it and every other
    class must come out bit for bit as from plain stores, wherever the gradient buffer starts."""
    x, y, w, rs = _case(dtype, c, _gen("stream", dtype, c, options))
    weight, eps, z = (w, 0.1, 1e-3) if options != "plain" else (None, 0.0, 0.0)
    before = _native.stream_bytes()
    try:
        _native.stream_bytes(float("inf"))
        ref_grad = torch.zeros_like(x)
        ref_rows = _kernel(x, ref_grad, y, weight, eps, z, rs)
        _native.stream_bytes(0)
        for offset in (0, 1, 3, 7, 8, 15):
            buf = torch.full((x.numel() + 16,), 5.0, dtype=dtype)
            grad = buf[offset : offset + x.numel()].view_as(x)
            rows = _kernel(x, grad, y, weight, eps, z, rs)
            assert torch.equal(rows, ref_rows), offset
            assert torch.equal(grad, ref_grad), offset
            assert bool((buf[:offset] == 5).all()) and bool((buf[offset + x.numel() :] == 5).all()), offset
        # the logits at an odd offset too, and in place (never streamed)
        xs = torch.zeros(x.numel() + 3, dtype=dtype)[3:].view_as(x).copy_(x)
        assert torch.equal(_kernel(xs, torch.zeros_like(x), y, weight, eps, z, rs), ref_rows)
        inplace = x.clone()
        assert torch.equal(_kernel(inplace, inplace, y, weight, eps, z, rs), ref_rows)
        assert torch.equal(inplace, ref_grad)
    finally:
        _native.stream_bytes(before)


def test_stream_threshold_is_a_setting():
    before = _native.stream_bytes()
    try:
        assert before == 8 << 20
        assert _native.stream_bytes(123.0) == 123.0
        assert _native.stream_bytes() == 123.0
    finally:
        _native.stream_bytes(before)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_thread_split_is_bitwise_identical_on_long_streamed_rows(streaming, dtype):
    x = (torch.randn(96, 2 * BLOCK + 5, generator=_gen("threads-long")) * 4).to(dtype)
    x[::5, -1] = 30.0
    y = torch.randint(0, x.shape[1], (96,), generator=_gen("threads-long-y"))
    assert_same_across_thread_counts(x, y)


def _bf16_grads(x, y, w, rs, stream: bool, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    grad = torch.zeros(x.numel() + 8, dtype=torch.bfloat16)[1 : 1 + x.numel()].view_as(x)
    before = _native.stream_bytes()
    try:
        _native.stream_bytes(0 if stream else float("inf"))
        rows = torch.zeros(x.shape[0])
        _native.cross_entropy_rows(x, grad, y, w, float(w.double().sum()), eps, 0.0, 1e-30, rs, rows)
    finally:
        _native.stream_bytes(before)
    return rows, grad


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("stream", [False, True], ids=["cached", "streamed"])
def test_bf16_rounding_with_avx512_bf16_is_bitwise_the_integer_one(stream, eps):
    """vcvtneps2bf16 and the integer round-to-nearest-even give the same bits, for subnormal gradients (which
    the instruction alone would flush to zero), NaN and ±inf rows too."""
    if not _native.bf16_conversion(True):
        pytest.skip("the CPU has no AVX-512 BF16 (or the build is not AVX-512)")
    c = 2 * BLOCK + 40
    g = _gen("bf16-ne")
    x = (torch.randn(8, c, generator=g) * 30).to(torch.bfloat16)  # spread: tiny probabilities
    x[1, 7] = float("nan")
    x[2, 9] = float("inf")
    x[3, :] = float("-inf")
    y = torch.randint(0, c, (8,), generator=g)
    w = torch.rand(c, generator=g) + 0.5
    rs = torch.rand(8, generator=g)
    try:
        ne = _bf16_grads(x, y, w, rs, stream, eps)
        assert _native.bf16_conversion(False) is False
        integer = _bf16_grads(x, y, w, rs, stream, eps)
    finally:
        _native.bf16_conversion(True)
    assert torch.equal(ne[0].view(torch.int32), integer[0].view(torch.int32))
    assert torch.equal(ne[1].view(torch.int16), integer[1].view(torch.int16))
    tiny = ne[1].float().abs()
    if eps == 0:  # without smoothing's constant term, exp(x - m)·1e-30 reaches the subnormal range
        assert bool(((tiny > 0) & (tiny < torch.finfo(torch.float32).tiny)).any()), "no subnormal gradient tested"
    assert bool(ne[1].isnan().any()) and bool(ne[1][3].isnan().all())


def test_bf16_gradients_round_to_nearest_even_like_torch():
    """The kernel's bf16 gradient is its fp32 gradient rounded once, as torch rounds fp32 to bf16."""
    c = BLOCK + 300
    g = _gen("bf16-rne")
    x32 = (torch.randn(5, c, generator=g) * 3).to(torch.bfloat16).float()
    y = torch.randint(0, c, (5,), generator=g)
    w = torch.rand(c, generator=g) + 0.5
    rs = torch.rand(5, generator=g)
    g32 = torch.zeros_like(x32)
    rows = torch.zeros(5)
    _native.cross_entropy_rows(x32, g32, y, w, float(w.double().sum()), 0.1, 0.0, 0.5, rs, rows)
    for native in (True, False):
        _native.bf16_conversion(native)
        try:
            g16 = torch.zeros_like(x32, dtype=torch.bfloat16)
            rows16 = torch.zeros(5)
            _native.cross_entropy_rows(
                x32.to(torch.bfloat16), g16, y, w, float(w.double().sum()), 0.1, 0.0, 0.5, rs, rows16
            )
        finally:
            _native.bf16_conversion(True)
        assert torch.equal(g16.view(torch.int16), g32.to(torch.bfloat16).view(torch.int16))
        assert torch.equal(rows16, rows)
