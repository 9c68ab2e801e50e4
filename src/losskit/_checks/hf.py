"""Checks of the Hugging Face integration (:mod:`losskit.transformers`): which models it patches exactly."""

from __future__ import annotations

from .errors import LossError, LossValueError


class UnsupportedModelError(LossError, NotImplementedError):
    """The model's architecture (or head) is not one :func:`losskit.transformers.apply` knows how to patch exactly."""


_APPLY = "losskit.transformers.apply()"


def supported_model(name: str, model_type: object, supported: str, known: bool) -> None:
    if not known:
        raise UnsupportedModelError(
            f"{_APPLY}: {name} (model_type {model_type!r}) is not supported; supported: {supported}"
        )


def plain_head(name: str, head_type: str, supported: str, plain: bool) -> None:
    if not plain:
        raise UnsupportedModelError(
            f"{_APPLY}: {name} has no plain torch.nn.Linear 'lm_head' (found {head_type}); apply() patches "
            f"*ForCausalLM / *LMHeadModel models of: {supported}"
        )


def settable_loss_function(name: str, settable: bool) -> None:
    if not settable:
        raise UnsupportedModelError(
            f"{_APPLY}: {name} has no settable 'loss_function' (transformers is too old; losskit needs "
            "transformers >= 4.46)"
        )


def patchable_forward(name: str, patchable: bool) -> None:
    if not patchable:
        raise UnsupportedModelError(
            f"{_APPLY}: {name}.forward in this transformers version does not compute its loss as "
            "'self.loss_function(self.lm_head(...), ...)', so it cannot be patched exactly"
        )


def chunk_size(value: int | None) -> None:
    if value is not None and value <= 0:
        raise LossValueError(f"{_APPLY}: 'chunk_size' must be positive, got {value}")


def labels_given(given: bool) -> None:
    if not given:
        raise LossValueError("losskit.transformers: the loss needs 'labels' or 'shift_labels'")


def head_called_once(again: bool) -> None:
    if again:
        raise LossError("losskit.transformers: lm_head was called twice in one fused forward")


def loss_function_used(name: str, used: bool) -> None:
    if not used:
        raise LossError(
            f"losskit.transformers: {name}.forward did not call self.loss_function on lm_head's output, so no "
            "loss was computed (losskit.transformers.revert(model) undoes apply)"
        )
