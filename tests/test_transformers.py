"""losskit.transformers against transformers' own loss, on tiny models built from configs (random weights).

The oracle is the unpatched model: the same weights (a deep copy), the same inputs, transformers'
``ForCausalLMLoss`` on materialised logits. Every supported architecture gets the loss (to 1e-6 in fp32, with and
without ``num_items_in_batch`` and with ``shift_labels``), the gradient of every parameter, five AdamW steps, bf16
autocast, evaluation and generation; Trainer with gradient accumulation runs on three of them.
"""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

import losskit.transformers as lt  # noqa: E402

transformers.logging.set_verbosity_error()

V = 256  # vocabulary
B, T = 2, 24  # batch, sequence (B·T > hidden size, for the no-logits check)
SMALL = {"vocab_size": V, "initializer_range": 0.1, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
DECODER = {
    **SMALL,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
}


def _config(arch: str):
    if arch == "llama":
        return transformers.LlamaConfig(**DECODER, tie_word_embeddings=False)
    if arch == "mistral":
        return transformers.MistralConfig(**DECODER, sliding_window=None)
    if arch == "qwen2":
        return transformers.Qwen2Config(**DECODER, tie_word_embeddings=True)
    if arch == "qwen3":
        return transformers.Qwen3Config(**DECODER, head_dim=8, tie_word_embeddings=False)
    if arch == "gemma":
        return transformers.GemmaConfig(**DECODER, head_dim=8)
    if arch == "gemma2":  # a soft cap small enough to bite on these logits
        return transformers.Gemma2Config(**DECODER, head_dim=8, final_logit_softcapping=1.5, sliding_window=8)
    if arch == "gpt2":
        return transformers.GPT2Config(
            **SMALL, n_embd=32, n_layer=2, n_head=4, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0
        )
    raise AssertionError(arch)


ARCHS = ["llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gpt2"]


def _pair(arch: str, *, fused: bool = True, **kwargs):
    """(reference, patched): the same weights; the reference is transformers' own model."""
    torch.manual_seed(0)
    reference = transformers.AutoModelForCausalLM.from_config(_config(arch), attn_implementation="eager")
    reference.train()
    return reference, lt.apply(copy.deepcopy(reference), fused=fused, **kwargs)


def _batch(seed: int = 1, b: int = B, t: int = T):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, V, (b, t), generator=g)
    labels = ids.clone()
    labels[torch.rand(b, t, generator=g) < 0.25] = -100  # ignored tokens, unevenly over the rows
    labels[0, :3] = -100
    return ids, labels


def _grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad for name, p in model.named_parameters() if p.requires_grad}


def _assert_grads_match(reference, patched):
    ref, ours = _grads(reference), _grads(patched)
    assert ref.keys() == ours.keys()
    for name in ref:
        assert ours[name] is not None, name
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "plain"])
@pytest.mark.parametrize("num_items", [None, 37], ids=["mean", "num_items"])
def test_loss_and_every_gradient_match_transformers(arch, fused, num_items):
    reference, patched = _pair(arch, fused=fused)
    ids, labels = _batch()
    extra = {} if num_items is None else {"num_items_in_batch": torch.tensor(num_items)}
    ref = reference(input_ids=ids, labels=labels, **extra)
    out = patched(input_ids=ids, labels=labels, **extra)
    assert out.loss.dtype == torch.float32
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-6, atol=1e-6)
    assert (out.logits is None) == fused
    ref.loss.backward()
    out.loss.backward()
    _assert_grads_match(reference, patched)


@pytest.mark.parametrize("arch", ARCHS)
def test_five_adamw_steps_stay_together(arch):
    reference, patched = _pair(arch)
    # eps=1e-6, not 1e-8: GPT-2's key bias has a gradient of exactly zero in exact arithmetic, and Adam with a
    # tiny eps turns its rounding noise (~1e-10, different in any two implementations) into steps of ±lr
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2, eps=1e-6) for m in (reference, patched)]
    for step in range(5):
        ids, labels = _batch(seed=10 + step)
        extra = {"num_items_in_batch": int((labels[:, 1:] != -100).sum()) + 3} if step % 2 else {}
        losses = []
        for model, opt in zip((reference, patched), opts, strict=True):
            opt.zero_grad()
            loss = model(input_ids=ids, labels=labels, **extra).loss
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    # Adam divides by sqrt(v): where a gradient element is near zero by chance, rounding differences of 1e-7 move
    # its step visibly; 1e-3 is 2% of the most any weight can move in 5 steps of lr=1e-2 (the losses above agree)
    for (name, p), q in zip(reference.named_parameters(), patched.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-3, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_shift_labels_bias_and_tuple_output(arch):
    reference, patched = _pair(arch)
    if arch == "llama":  # a head with a bias: both models use the same new nn.Linear
        reference.lm_head = torch.nn.Linear(32, V, bias=True)
        torch.nn.init.normal_(reference.lm_head.bias, std=0.5)
        patched = lt.apply(copy.deepcopy(reference))
    ids, labels = _batch()
    shift = labels.roll(-2, dims=1)  # any labels, used as given (no shift)
    ref = reference(input_ids=ids, labels=labels, shift_labels=shift)
    out = patched(input_ids=ids, labels=labels, shift_labels=shift, return_dict=False)
    assert isinstance(out, tuple) and out[0].dim() == 0 and out[1] is not ref.logits  # (loss, cache, ...)
    assert not any(isinstance(x, torch.Tensor) and x.shape[-1:] == (V,) for x in out)
    torch.testing.assert_close(out[0], ref.loss, rtol=1e-6, atol=1e-6)
    ref.loss.backward()
    out[0].backward()
    _assert_grads_match(reference, patched)


def test_tied_embeddings_share_one_gradient():
    reference, patched = _pair("qwen2")
    assert patched.lm_head.weight is patched.model.embed_tokens.weight
    ids, labels = _batch()
    patched(input_ids=ids, labels=labels).loss.backward()
    reference(input_ids=ids, labels=labels).loss.backward()
    torch.testing.assert_close(patched.lm_head.weight.grad, reference.lm_head.weight.grad, rtol=1e-5, atol=1e-6)


def test_no_logits_are_materialised():
    """Every tensor made in the fused forward + backward is smaller than the (B·T, V) logits (8-row chunks)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Largest(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.numel = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                if isinstance(t, torch.Tensor):
                    self.numel = max(self.numel, t.numel())
            return out

    reference, patched = _pair("llama", chunk_size=8)
    ids, labels = _batch()
    for model in (reference, patched):
        with Largest() as seen:
            model(input_ids=ids, labels=labels).loss.backward()
        if model is reference:
            assert seen.numel >= B * T * V  # the probe sees transformers' logits
        else:
            assert seen.numel < B * T * V, seen.numel


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2"])
def test_evaluation_generation_and_return_logits_unchanged(arch):
    reference, patched = _pair(arch)
    ids, labels = _batch()
    out = patched(input_ids=ids, labels=labels, return_logits=True)  # asked for: logits and the same loss
    ref = reference(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits)
    torch.testing.assert_close(out.loss, ref.loss, rtol=1e-6, atol=1e-6)
    reference.eval()
    patched.eval()
    with torch.no_grad():
        torch.testing.assert_close(patched(input_ids=ids).logits, reference(input_ids=ids).logits)
        ev = patched(input_ids=ids, labels=labels)  # evaluation with labels keeps the logits (Trainer metrics)
        torch.testing.assert_close(ev.loss, reference(input_ids=ids, labels=labels).loss, rtol=1e-6, atol=1e-6)
        assert ev.logits is not None
        kwargs = {"max_new_tokens": 4, "do_sample": False, "pad_token_id": 0}
        assert torch.equal(patched.generate(ids[:, :6], **kwargs), reference.generate(ids[:, :6], **kwargs))


def test_autocast_bf16_gives_a_float32_loss_close_to_transformers():
    for arch in ("llama", "gemma2"):
        reference, patched = _pair(arch)
        ids, labels = _batch()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            ref = reference(input_ids=ids, labels=labels)
            out = patched(input_ids=ids, labels=labels)
        assert out.loss.dtype == torch.float32
        torch.testing.assert_close(out.loss, ref.loss, rtol=1e-2, atol=1e-2)
        out.loss.backward()
        ref.loss.backward()
        for name, g in _grads(patched).items():
            r = _grads(reference)[name]
            assert torch.isfinite(g).all(), name
            cos = torch.nn.functional.cosine_similarity(g.flatten(), r.flatten(), dim=0)
            assert cos > 0.98, (name, float(cos))


@pytest.mark.parametrize("arch, bf16", [("llama", False), ("gemma2", False), ("gpt2", False), ("llama", True)], ids=str)
def test_trainer_with_gradient_accumulation_follows_the_unpatched_model(arch, bf16, tmp_path):
    """Trainer passes num_items_in_batch (the token count of all 4 micro-batches) and, with bf16=True, wraps the
    patched forward in accelerate's autocast."""
    g = torch.Generator().manual_seed(5)
    rows = []
    for i in range(16):
        ids = torch.randint(3, V, (T,), generator=g)
        labels = ids.clone()
        labels[: 2 + (i * 5) % 17] = -100  # very different token counts per row: num_items_in_batch matters
        rows.append({"input_ids": ids, "labels": labels})
    runs = []
    for patch in (False, True):
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(_config(arch), attn_implementation="eager")
        if patch:
            lt.apply(model)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / str(patch)),
            per_device_train_batch_size=2,
            gradient_accumulation_steps=4,
            max_steps=2,
            learning_rate=1e-2,
            logging_steps=1,
            report_to=[],
            use_cpu=True,
            save_strategy="no",
            seed=0,
            adam_epsilon=1e-6,  # see test_five_adamw_steps_stay_together
            bf16=bf16,
            disable_tqdm=True,
        )
        trainer = _Recording(model=model, args=args, train_dataset=rows)
        trainer.train()
        runs.append((model, torch.stack(trainer.losses)))
    (reference, ref_curve), (patched, curve) = runs
    assert curve.shape == (8,)  # 2 optimizer steps × 4 micro-batches
    if bf16:  # transformers' loss comes from bf16 logits, losskit's from the fp32 weights (see the autocast test)
        torch.testing.assert_close(curve, ref_curve, rtol=2e-3, atol=2e-3)
        return
    torch.testing.assert_close(curve, ref_curve, rtol=1e-5, atol=1e-6)
    for p, q in zip(reference.parameters(), patched.parameters(), strict=True):  # see the AdamW test
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-3)


class _Recording(transformers.Trainer):
    """Keeps the exact loss of every micro-batch (the logged history is rounded to four digits)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.losses = []

    def training_step(self, *args, **kwargs):
        loss = super().training_step(*args, **kwargs)
        self.losses.append(loss.detach().clone())
        return loss


def test_unsupported_models_raise_naming_the_architecture():
    bert = transformers.BertForMaskedLM(
        transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2)
    )
    with pytest.raises(lt.UnsupportedModelError, match="BertForMaskedLM.*'bert'"):
        lt.apply(bert)
    with pytest.raises(NotImplementedError, match="LlamaForSequenceClassification"):
        lt.apply(transformers.LlamaForSequenceClassification(_config("llama")))
    with pytest.raises(lt.UnsupportedModelError, match="llama, mistral"):
        lt.apply(torch.nn.Linear(2, 2))


def test_apply_is_per_instance_and_revertible():
    reference, patched = _pair("gpt2")
    assert "forward" not in vars(reference) and type(patched).forward is type(reference).forward
    twin = copy.deepcopy(patched)  # a copy stays patched, on its own weights
    ids, labels = _batch()
    assert twin(input_ids=ids, labels=labels).logits is None
    lt.apply(patched)  # again: re-configured, not wrapped twice
    assert patched(input_ids=ids, labels=labels).logits is None
    lt.revert(patched)
    out = patched(input_ids=ids, labels=labels)
    assert out.logits is not None and "_loss_function" not in vars(patched)
    torch.testing.assert_close(out.loss, reference(input_ids=ids, labels=labels).loss)


def test_importing_losskit_never_imports_transformers():
    code = "import sys, losskit, losskit.functional, losskit.nn, losskit.transformers\n"
    code += "print('transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
