"""Adaptive softmax (Grave et al., 2016) with its negative log-likelihood: torch's module, fused row losses.

The head scores the ``shortlist_size`` most frequent classes plus one logit per tail cluster; cluster ``i``
scores its classes from a low-rank projection of the input. A target's log-probability is its head
log-probability, plus, for a tail class, the log-probability of the class within its cluster. Each
``-log softmax(x @ Wᵀ + b)[target]`` (the head, and each cluster's output layer) is one fused step: the logits
go through losskit's cross-entropy engine (:mod:`losskit.engine.rows`), which writes each row's gradient over
the logits' own buffer during the forward pass, so one ``(rows, C)`` buffer per block is kept until backward
(torch keeps a log-softmax of the same size) and backward makes the three products from it. As in torch, a
tail cluster is evaluated only on the rows whose target falls in it (under ``torch.compile`` every row goes
through every cluster and is masked, so that no shape depends on data).
"""

from __future__ import annotations

import itertools
from collections import namedtuple
from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor
from torch.nn import Linear, Module, ModuleList, Sequential

from .. import _checks
from ..engine import rows

_ASMoutput = namedtuple("_ASMoutput", ["output", "loss"])

NAME = "AdaptiveLogSoftmaxWithLoss"
_NONE = rows.CrossEntropyOptions("none")


def _target_log_prob(logits: Tensor, target: Tensor) -> Tensor:
    """``log_softmax(logits, 1)[n, target[n]]`` per row, by the fused engine."""
    return -rows.cross_entropy(logits, target, None, _NONE)


class _LinearRows(torch.autograd.Function):
    """``-log softmax(x @ Wᵀ + b)[target]`` per row. The forward writes each row's gradient with respect to its
    logits over the logits' own buffer (the one ``(rows, C)`` buffer kept until backward, as torch keeps one
    log-softmax); backward scales it per row into a fresh buffer (kept intact for ``retain_graph``) and makes
    the three products. float32/float64 only (fp16/bf16 take the engine path, which folds ``grad_output`` in
    before its one rounding)."""

    @staticmethod
    def forward(ctx, x, w, b, target):
        logits = torch.mm(x, w.t()) if b is None else torch.addmm(b, x, w.t())
        want = any(ctx.needs_input_grad[:3])
        loss, grad, _ = rows.fused_pass(logits, target, None, _NONE, want, out=logits if want else None)
        ctx.grad = grad
        ctx.save_for_backward(x, w)
        ctx.has_bias = b is not None
        return loss

    @staticmethod
    def backward(ctx, grad_rows):
        x, w = ctx.saved_tensors
        g = ctx.grad * grad_rows.to(ctx.grad.dtype).unsqueeze(1)
        grad_x = torch.mm(g, w) if ctx.needs_input_grad[0] else None
        grad_w = torch.mm(g.t(), x) if ctx.needs_input_grad[1] else None
        grad_b = g.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None


def _linear_log_prob(x: Tensor, linear: Linear, target: Tensor) -> Tensor:
    """``log_softmax(linear(x), 1)[n, target[n]]``: fused with the linear layer where it can be."""
    fused = (
        x.dtype in (torch.float32, torch.float64)
        and x.dim() == 2
        and not torch.compiler.is_compiling()
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        and torch.is_grad_enabled()
    )
    if not fused:
        return _target_log_prob(linear(x), target)
    return -_LinearRows.apply(x, linear.weight, linear.bias, target)


class AdaptiveLogSoftmaxWithLoss(Module):
    r"""Efficient softmax approximation for large, Zipf-distributed label sets; torch's module and state_dict.

    With ``cutoffs = [c_1, ..., c_k]`` (and ``c_{k+1} = n_classes``), the head is ``Linear(in_features,
    c_1 + k)``, tail cluster ``i`` is ``Sequential(Linear(in_features, ⌊in_features / div_value^(i+1)⌋),
    Linear(·, c_{i+1} - c_i))``, both without bias except ``head_bias``. For a target ``y``::

        log p(y | x) = log softmax(head(x))_y                                        if y < c_1
        log p(y | x) = log softmax(head(x))_{c_1 + i} + log softmax(tail_i(x))_{y - c_{i+1}}   if c_{i+1} <= y < c_{i+2}

    ``forward`` returns ``_ASMoutput(output, loss)``: ``output`` the target log-probabilities and ``loss``
    ``-mean(output)``.

    Shapes: input ``(N, in_features)`` or ``(in_features,)``; target ``(N,)`` or ``()`` in ``[0, n_classes)``;
    output ``(N,)`` or ``()``; loss a scalar. ``log_prob``: ``(N, in_features)`` -> ``(N, n_classes)``;
    ``predict``: ``(N, in_features)`` -> ``(N,)``.

    Example (weights copied from torch's module, so the result is torch's)::

        >>> import torch, losskit.nn as nn
        >>> _ = torch.manual_seed(0)
        >>> ref = torch.nn.AdaptiveLogSoftmaxWithLoss(16, 10, cutoffs=[4, 7])
        >>> asm = nn.AdaptiveLogSoftmaxWithLoss(16, 10, cutoffs=[4, 7])
        >>> _ = asm.load_state_dict(ref.state_dict())
        >>> x, y = torch.ones(3, 16), torch.tensor([0, 5, 9])
        >>> out, loss = asm(x, y)
        >>> out
        tensor([-2.5244, -2.8433, -2.9200], grad_fn=<AddBackward0>)
        >>> loss, ref(x, y).loss
        (tensor(2.7626, grad_fn=<MeanBackward0>), tensor(2.7626, grad_fn=<MeanBackward0>))
        >>> asm.log_prob(x).exp().sum(1)
        tensor([1.0000, 1.0000, 1.0000], grad_fn=<SumBackward1>)
    """

    in_features: int
    n_classes: int
    cutoffs: list[int]
    div_value: float
    head_bias: bool
    head: Linear
    tail: ModuleList

    def __init__(
        self,
        in_features: int,
        n_classes: int,
        cutoffs: Sequence[int],
        div_value: float = 4.0,
        head_bias: bool = False,
        device=None,
        dtype=None,
    ) -> None:
        factory_kwargs = {"device": device, "dtype": dtype}
        super().__init__()
        cutoffs = _checks.sequence.adaptive_cutoffs(NAME, cutoffs, n_classes)
        self.in_features = in_features
        self.n_classes = n_classes
        self.cutoffs = cutoffs + [n_classes]
        self.div_value = div_value
        self.head_bias = head_bias
        self.shortlist_size = self.cutoffs[0]
        self.n_clusters = len(self.cutoffs) - 1
        self.head_size = self.shortlist_size + self.n_clusters
        self.head = Linear(self.in_features, self.head_size, bias=self.head_bias, **factory_kwargs)
        self.tail = ModuleList()
        for i in range(self.n_clusters):
            hsz = int(self.in_features // (self.div_value ** (i + 1)))
            osz = self.cutoffs[i + 1] - self.cutoffs[i]
            self.tail.append(
                Sequential(
                    Linear(self.in_features, hsz, bias=False, **factory_kwargs),
                    Linear(hsz, osz, bias=False, **factory_kwargs),
                )
            )

    def reset_parameters(self) -> None:
        """Re-initialise the head and every tail projection as at construction."""
        self.head.reset_parameters()
        for i in range(self.n_clusters):
            for layer in self._cluster(i):
                layer.reset_parameters()

    def _cluster(self, i: int) -> tuple[Linear, Linear]:
        """Tail cluster ``i``'s two projections, as built in ``__init__``: input → hidden → the cluster's classes."""
        projection, out_layer = cast(Sequential, self.tail[i])
        return cast(Linear, projection), cast(Linear, out_layer)

    def forward(self, input_: Tensor, target_: Tensor) -> _ASMoutput:
        """``_ASMoutput(output, loss)``: the target log-probabilities and their negative mean."""
        _checks.tensor(NAME, "input", input_)
        _checks.tensor(NAME, "target", target_)
        batched = _checks.sequence.adaptive_shapes(NAME, input_, target_)
        _checks.sequence.adaptive_target_range(NAME, target_, self.n_classes)
        input = input_ if batched else input_.unsqueeze(0)
        target = target_ if batched else target_.unsqueeze(0)
        target = target.long()

        # the head's class for each row: the target itself, or the logit of its tail cluster
        head_target = target
        output = input.new_zeros(target.shape[0])
        dense = torch.compiler.is_compiling()
        for i, (low, high) in enumerate(itertools.pairwise(self.cutoffs)):
            in_cluster = (target >= low) & (target < high)
            head_target = torch.where(in_cluster, self.shortlist_size + i, head_target)
            if dense:  # every row through the cluster, masked: no data-dependent shape
                local = _target_log_prob(self.tail[i](input), (target - low).clamp(0, high - low - 1))
                output = output + torch.where(in_cluster, local, 0.0)
                continue
            row_indices = in_cluster.nonzero().squeeze(1)
            if row_indices.numel() == 0:
                continue
            projection, out_layer = self._cluster(i)
            hidden = projection(input.index_select(0, row_indices))
            local = _linear_log_prob(hidden, out_layer, target[row_indices] - low)
            output = output.index_copy(0, row_indices, local)
        output = output + (
            _target_log_prob(self.head(input), head_target)
            if dense
            else _linear_log_prob(input, self.head, head_target)
        )
        loss = (-output).mean()
        return _ASMoutput(output if batched else output.squeeze(0), loss)

    def _get_full_log_prob(self, input: Tensor, head_output: Tensor) -> Tensor:
        """The log of the full distribution ``(N, n_classes)`` from the input and the head's output."""
        out = input.new_empty((head_output.size(0), self.n_classes))
        head_logprob = torch.log_softmax(head_output, dim=1)
        out[:, : self.shortlist_size] = head_logprob[:, : self.shortlist_size]
        for i, (start, stop) in enumerate(itertools.pairwise(self.cutoffs)):
            cluster_logprob = torch.log_softmax(self.tail[i](input), dim=1)
            out[:, start:stop] = cluster_logprob + head_logprob[:, self.shortlist_size + i].unsqueeze(1)
        return out

    def log_prob(self, input: Tensor) -> Tensor:
        """Log-probabilities of every class: ``(N, in_features)`` -> ``(N, n_classes)``."""
        _checks.tensor(NAME, "input", input)
        _checks.sequence.adaptive_input(f"{NAME}.log_prob", "input", input, self.in_features)
        return self._get_full_log_prob(input, self.head(input))

    def predict(self, input: Tensor) -> Tensor:
        """The most probable class per row, ``log_prob(input).argmax(1)``, evaluating the tail only where the
        head's best logit is a cluster's."""
        _checks.tensor(NAME, "input", input)
        _checks.sequence.adaptive_input(f"{NAME}.predict", "input", input, self.in_features)
        head_output = self.head(input)
        output = torch.argmax(head_output, dim=1)
        not_in_shortlist = output >= self.shortlist_size
        if not bool(not_in_shortlist.any()):
            return output
        if bool(not_in_shortlist.all()):
            return torch.argmax(self._get_full_log_prob(input, head_output), dim=1)
        log_prob = self._get_full_log_prob(input[not_in_shortlist], head_output[not_in_shortlist])
        output[not_in_shortlist] = torch.argmax(log_prob, dim=1)
        return output


CATALOG = ()  # a module with parameters of its own and no functional form: tested in its own file
