"""Hugging Face ``transformers`` causal language models with losskit's losses, one call per model.

:func:`apply` patches one model *instance* (never its class): in training with ``labels`` its forward computes
:func:`losskit.functional.linear_cross_entropy` on the final hidden states and ``lm_head``'s weight, so the
``(B, T, V)`` logits are never materialised, and the output's ``logits`` is ``None``. Everything else stays
Hugging Face's: the forward's arguments, evaluation (``model.eval()``), calls without labels and ``generate``.
``apply(model, fused=False)`` keeps the logits and only replaces ``model.loss_function`` by losskit's cross
entropy. :func:`revert` undoes either.

The loss is the one of transformers' ``ForCausalLMLoss``: labels shifted left by one (the last position
predicts nothing), ``ignore_index=-100``, a ``shift_labels`` argument used as given, a mean over the kept
tokens or, with ``num_items_in_batch`` (``Trainer`` passes it for gradient accumulation), the sum divided by
that global count; the loss is float32. ``lm_head``'s bias, tied input/output embeddings and Gemma 2's final
logit soft-capping are honoured.

transformers is an optional dependency (``pip install 'losskit[hf]'``); it is imported only when a function
here is called, never by ``import losskit``.

Example::

    >>> import torch, transformers, losskit.transformers
    >>> config = transformers.LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64,
    ...     num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)
    >>> torch.manual_seed(0) and None
    >>> model = losskit.transformers.apply(transformers.LlamaForCausalLM(config))
    >>> ids = torch.randint(0, 128, (2, 8))
    >>> out = model(input_ids=ids, labels=ids)   # training mode: fused, no (B, T, V) logits
    >>> out.loss.dtype, out.logits
    (torch.float32, None)
    >>> out.loss.backward()
    >>> model.eval() and None
    >>> model(input_ids=ids).logits.shape        # evaluation is unchanged
    torch.Size([2, 8, 128])
"""

from __future__ import annotations

import functools
import inspect
import types
from dataclasses import dataclass
from typing import Any, cast

import torch

from ._checks import hf
from ._checks.hf import UnsupportedModelError
from .functional import cross_entropy, linear_cross_entropy

UnsupportedModelError.__module__ = __name__  # its public home

__all__ = ["SUPPORTED", "UnsupportedModelError", "apply", "causal_lm_loss", "revert"]

# config.model_type -> the config attribute holding the final-logit soft cap (None: the architecture has none).
# Each of these computes ``logits = self.lm_head(hidden_states)`` (then the soft cap, if any) and passes them to
# ``self.loss_function``; tests/test_transformers.py checks every one against transformers' own loss.
SUPPORTED: dict[str, str | None] = {
    "llama": None,
    "mistral": None,
    "qwen2": None,
    "qwen3": None,
    "gemma": None,
    "gemma2": "final_logit_softcapping",
    "gpt2": None,
}

_ATTR = "_losskit_patch"


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    vocab_size: int | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    **kwargs: Any,
) -> torch.Tensor:
    """transformers' ``ForCausalLMLoss`` computed with :func:`losskit.functional.cross_entropy`.

    Same arguments and result: the logits are upcast to float32, ``labels`` shifted left by one (or
    ``shift_labels`` used as given), tokens equal to ``ignore_index`` skipped, the mean over the kept tokens or,
    with ``num_items_in_batch``, their sum divided by it. Other keyword arguments are accepted and ignored, as
    transformers does. This is the ``model.loss_function`` that :func:`apply` installs.

    Example::

        >>> import torch
        >>> from losskit.transformers import causal_lm_loss
        >>> logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]])
        >>> labels = torch.tensor([[0, 1, -100]])
        >>> causal_lm_loss(logits, labels, 3)                 # position 0 predicts 1; position 1 is ignored
        tensor(2.2395)
        >>> causal_lm_loss(logits, labels, 3, num_items_in_batch=4)
        tensor(0.5599)
    """
    target = _shifted(labels, shift_labels, ignore_index)
    logits = logits.float()
    if vocab_size is None:
        vocab_size = logits.shape[-1]
    reduction = "mean" if num_items_in_batch is None else "sum"
    loss = cross_entropy(
        logits.reshape(-1, vocab_size),
        target.reshape(-1).to(logits.device),
        ignore_index=ignore_index,
        reduction=reduction,
    )
    return _per_item(loss, num_items_in_batch)


def apply(
    model: torch.nn.Module,
    *,
    fused: bool = True,
    chunk_size: int | None = None,
    memory_budget: int | None = None,
) -> torch.nn.Module:
    """Patches one causal language model instance to compute its loss with losskit; returns the model.

    ``fused=True`` (the default): in training mode (``model.train()``), a forward with ``labels`` runs the
    model's own forward up to the final hidden states, then
    ``linear_cross_entropy(hidden_states, lm_head.weight, shifted labels, linear_bias=lm_head.bias,
    softcap=<final logit soft cap>)`` — the ``(B, T, V)`` logits are never materialised and ``output.logits``
    is ``None``. Pass ``return_logits=True`` to the forward to get the logits anyway (then the loss is computed
    from them, as with ``fused=False``). In evaluation mode, without labels and in ``generate``, the forward is
    transformers' own and returns the logits; its loss, when labels are given, is :func:`causal_lm_loss`.

    ``fused=False``: only ``model.loss_function`` is replaced, by :func:`causal_lm_loss`.

    Args:
        model: a ``*ForCausalLM`` instance of one of :data:`SUPPORTED`'s architectures (Llama, Mistral, Qwen2,
            Qwen3, Gemma, Gemma 2, GPT-2). Calling ``apply`` again re-configures it; :func:`revert` undoes it.
        chunk_size, memory_budget: passed to :func:`losskit.functional.linear_cross_entropy` (rows per chunk of
            logits, or bytes for one chunk; default: chosen from the vocabulary and hidden sizes).

    Raises:
        UnsupportedModelError: another architecture, a model without an ``nn.Linear`` ``lm_head``, or a
            transformers version whose model does not call ``self.loss_function`` (never a silently
            different loss).

    Example::

        >>> import torch, transformers, losskit.transformers
        >>> config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, n_positions=16,
        ...     bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        >>> torch.manual_seed(0) and None
        >>> reference = transformers.GPT2LMHeadModel(config)
        >>> model = losskit.transformers.apply(transformers.GPT2LMHeadModel(config))
        >>> _ = model.load_state_dict(reference.state_dict())
        >>> ids = torch.randint(0, 64, (2, 6))
        >>> bool(torch.allclose(model(input_ids=ids, labels=ids).loss, reference(input_ids=ids, labels=ids).loss))
        True
        >>> losskit.transformers.apply(transformers.BertForMaskedLM(transformers.BertConfig(
        ...     vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)))
        Traceback (most recent call last):
        ...
        losskit.transformers.UnsupportedModelError: losskit.transformers.apply(): BertForMaskedLM (model_type 'bert') is not supported; supported: llama, mistral, qwen2, qwen3, gemma, gemma2, gpt2
    """  # noqa: E501
    name = type(model).__name__
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", None)
    supported = ", ".join(SUPPORTED)
    hf.supported_model(name, model_type, supported, model_type in SUPPORTED)
    model_type = cast(str, model_type)  # a key of SUPPORTED (checked)
    head = getattr(model, "lm_head", None)
    hf.plain_head(name, type(head).__name__, supported, type(head) is torch.nn.Linear)
    head = cast(torch.nn.Linear, head)  # checked
    hf.settable_loss_function(name, isinstance(getattr(type(model), "loss_function", None), property))
    try:
        source = inspect.getsource(type(model).forward)
    except (OSError, TypeError):
        source = "self.loss_function"
    hf.patchable_forward(name, "self.loss_function" in source and "self.lm_head(" in source)
    if fused:
        hf.chunk_size(chunk_size)
    revert(model)
    patch = _Patch(
        fused=bool(fused),
        config=config,
        softcap_attr=SUPPORTED[model_type],
        chunk_size=chunk_size,
        memory_budget=memory_budget,
        forward=model.forward,
        head=head,
        head_forward=head.forward,
        had_forward="forward" in vars(model),
        had_head_forward="forward" in vars(head),
    )
    object.__setattr__(model, _ATTR, patch)
    # setattr: nn.Module.__setattr__ is typed for tensors and modules only, and mypy refuses assigning a method
    setattr(model, "loss_function", patch.loss_function)  # noqa: B010
    if fused:
        model.forward = types.MethodType(_make_forward(patch.forward), model)
        setattr(head, "forward", patch.head_forward_capture)  # noqa: B010
    return model


def revert(model: torch.nn.Module) -> torch.nn.Module:
    """Undoes :func:`apply` on ``model`` (a model never patched is returned unchanged).

    Example::

        >>> import transformers, losskit.transformers
        >>> config = transformers.GPT2Config(vocab_size=64, n_embd=16, n_layer=1, n_head=2, bos_token_id=0,
        ...     eos_token_id=0)
        >>> model = losskit.transformers.apply(transformers.GPT2LMHeadModel(config))
        >>> model = losskit.transformers.revert(model)
        >>> hasattr(model, "_losskit_patch"), "forward" in vars(model)
        (False, False)
    """
    patch = vars(model).get(_ATTR)
    if patch is None:
        return model
    if "forward" in vars(model):
        del model.forward
    if patch.had_forward:
        model.forward = patch.forward
    if "forward" in vars(patch.head):
        del patch.head.forward
    if patch.had_head_forward:
        patch.head.forward = patch.head_forward
    if "_loss_function" in vars(model):
        del model._loss_function
    object.__delattr__(model, _ATTR)
    return model


def _shifted(labels: torch.Tensor | None, shift_labels: torch.Tensor | None, ignore_index: int) -> torch.Tensor:
    if shift_labels is not None:
        return shift_labels
    hf.labels_given(labels is not None)
    # position t predicts token t+1; the last position predicts nothing
    return torch.nn.functional.pad(cast(torch.Tensor, labels), (0, 1), value=ignore_index)[..., 1:]


def _per_item(loss: torch.Tensor, num_items_in_batch: torch.Tensor | int | None) -> torch.Tensor:
    if num_items_in_batch is None:
        return loss
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


@dataclass
class _Patch:
    fused: bool
    config: Any
    softcap_attr: str | None  # read at every call: a config changed after apply() is honoured
    chunk_size: int | None
    memory_budget: int | None
    forward: Any
    head: torch.nn.Linear
    head_forward: Any
    had_forward: bool
    had_head_forward: bool
    capturing: bool = False
    hidden: torch.Tensor | None = None
    used: bool = False

    def head_forward_capture(self, hidden: torch.Tensor) -> torch.Tensor:
        """``lm_head``'s forward: during a fused call, keeps the hidden states and returns an empty stand-in."""
        if not self.capturing:
            return self.head_forward(hidden)
        hf.head_called_once(self.hidden is not None)
        self.hidden = hidden
        return hidden.new_empty((*hidden.shape[:-1], 0))

    def loss_function(
        self,
        logits: torch.Tensor,
        labels: torch.Tensor | None,
        vocab_size: int | None = None,
        num_items_in_batch: torch.Tensor | int | None = None,
        ignore_index: int = -100,
        shift_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if self.hidden is None:  # logits exist: plain cross entropy on them
            return causal_lm_loss(logits, labels, vocab_size, num_items_in_batch, ignore_index, shift_labels)
        hidden, self.hidden = self.hidden, None
        self.used = True
        target = _shifted(labels, shift_labels, ignore_index).to(hidden.device)
        weight, bias = self.head.weight, self.head.bias
        if hidden.dtype != weight.dtype:  # e.g. bf16 hidden states from an autocast region, fp32 weights
            hidden = hidden.to(weight.dtype)
        # Under autocast the loss is computed in the weights' dtype (fp32 for fp32 master weights): at least as
        # accurate as transformers' bf16 logits upcast to fp32, and the result is an fp32 loss either way.
        with torch.autocast(hidden.device.type, enabled=False):
            loss = linear_cross_entropy(
                hidden,
                weight,
                target,
                linear_bias=bias,
                ignore_index=ignore_index,
                reduction="mean" if num_items_in_batch is None else "sum",
                softcap=getattr(self.config, self.softcap_attr, None) if self.softcap_attr else None,
                chunk_size=self.chunk_size,
                memory_budget=self.memory_budget,
            )
        return _per_item(loss.float(), num_items_in_batch)


def _make_forward(original: Any) -> Any:
    """The instance's forward: a wrapper with the original's signature and docstring (``generate`` and
    ``Trainer`` inspect them). It finds its state through ``self``, so ``copy.deepcopy(model)`` stays patched."""

    @functools.wraps(getattr(original, "__func__", original))
    def forward(self: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        patch: _Patch = vars(self)[_ATTR]
        return_logits = kwargs.pop("return_logits", None)
        if not self.training or return_logits:
            return patch.forward(*args, **kwargs)
        named = inspect.signature(patch.forward).bind_partial(*args, **kwargs).arguments if args else kwargs
        if named.get("labels") is None:  # transformers computes no loss without labels
            return patch.forward(*args, **kwargs)
        return_dict = kwargs.pop("return_dict", None)
        if return_dict is None:
            config = self.config
            return_dict = getattr(config, "use_return_dict", getattr(config, "return_dict", True))
        patch.capturing, patch.hidden, patch.used = True, None, False
        try:
            out = patch.forward(*args, return_dict=True, **kwargs)
        finally:
            patch.capturing, patch.hidden = False, None
        hf.loss_function_used(type(self).__name__, patch.used)
        out = type(out)(**{k: v for k, v in out.items() if k != "logits"})
        return out if return_dict else out.to_tuple()

    return forward
