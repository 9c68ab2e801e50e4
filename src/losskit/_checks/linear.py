"""Checks of the fused linear + cross entropy's shapes: input, the linear layer's weight and bias, target."""

from __future__ import annotations

import torch

from .errors import LossValueError
from .tensors import same_dtype, shape


def linear_layer(fn: str, input: torch.Tensor, linear_weight: torch.Tensor, linear_bias: torch.Tensor | None):
    """``(*, H)`` input, ``(V, [d1, ..., dK,] H)`` weight, bias ``(V, [d1, ..., dK])``; returns (H, V, (d1..dK))."""
    if input.dim() < 1:
        raise LossValueError(f"{fn}(): 'input' must be (H,), (N, H) or (*, H), got shape []")
    if linear_weight.dim() < 2:
        raise LossValueError(f"{fn}(): 'linear_weight' must be (V, H), got shape {shape(linear_weight)}")
    h_features, v = input.shape[-1], linear_weight.shape[0]
    out_features = tuple(linear_weight.shape[1:-1])
    if linear_weight.shape[-1] != h_features:
        raise LossValueError(
            f"{fn}(): 'input' {shape(input)} and 'linear_weight' {shape(linear_weight)} must share the last "
            f"dimension (in_features), got {h_features} and {linear_weight.shape[-1]}"
        )
    same_dtype(fn, "linear_weight", linear_weight, input)
    if linear_bias is not None:
        if tuple(linear_bias.shape) != (v, *out_features):
            raise LossValueError(
                f"{fn}(): 'linear_bias' must have shape {[v, *out_features]}, got {shape(linear_bias)}"
            )
        same_dtype(fn, "linear_bias", linear_bias, input)
    if out_features and input.dim() != 2:
        raise LossValueError(
            f"{fn}(): a K-dimensional 'linear_weight' {shape(linear_weight)} needs batched input "
            f"(N, {h_features}), got {shape(input)}"
        )
    return h_features, v, out_features


def linear_target(fn: str, input: torch.Tensor, target: torch.Tensor, v: int) -> bool:
    """A target of shape ``(*)`` (class indices) or ``(*, V)`` (probabilities); returns whether probabilities."""
    lead = tuple(input.shape[:-1])
    if tuple(target.shape) == (*lead, v):
        return True
    if tuple(target.shape) != lead:
        raise LossValueError(
            f"{fn}(): 'target' must have shape {list(lead)} (class indices) or {[*lead, v]} (probabilities) "
            f"for 'input' {shape(input)}, got {shape(target)}"
        )
    return False
