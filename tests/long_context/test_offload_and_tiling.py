"""Activation offloading and the tiled MLP (docs/long-context.md): exact against the plain step in every trainer,
and the offloaded checkpoints really leave the device's memory."""

import copy
import weakref
from unittest import mock

import pytest
import torch

from alignment.data import SFT
from alignment.long_context import offload_context, tile_mlps, untile_mlps
from alignment.long_context.tiling import MLP, NORMS, mlp_modules, tile_count
from alignment.planning.fake import checkpointing
from alignment.trainers import get_method, methods
from tests.helpers import model_for, preference_rows, tiny_llama, train_args, trainer_kwargs

METHODS = [name for name, m in methods().items() if m.trainer.needs_tokenizer]


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer), hidden=32, layers=3)


def test_every_language_model_method_is_covered():
    assert {"dpo", "rpo", "sparsepo", "inpo", "kto", "cpo", "orpo", "sft"} <= set(METHODS)


def run(method_name, tiny, tokenizer, data_dir, tmp_path, **kw):
    """Two optimizer steps of ``method_name`` on the tiny model: (logged losses, parameters, trainer)."""
    method = get_method(method_name)
    kind = "sft" if method.trainer.completions == SFT else "pref"
    config = train_args(method.config, tmp_path, activation_checkpointing=True, diagnostics=False, **kw)
    torch.manual_seed(0)  # a module a method adds (SparsePO's mask network) is initialised before the trainer seeds
    trainer = method.trainer(model_for(method, tiny), args=config, train_dataset=preference_rows(data_dir, kind),
                             processing_class=tokenizer, **trainer_kwargs(method))  # fmt: skip
    trainer.train()
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return losses, {n: p.detach().clone() for n, p in trainer.model.named_parameters()}, trainer


def assert_same(a, b, rel=1e-6):
    (loss_a, params_a, _), (loss_b, params_b, _) = a, b
    assert loss_a == pytest.approx(loss_b, rel=rel, abs=1e-7)
    for name, value in params_a.items():
        scale = value.abs().max().clamp(min=1e-12)
        assert ((value - params_b[name]).abs().max() / scale).item() <= rel, name


@pytest.mark.parametrize("method_name", METHODS)
def test_offloading_is_exact_in_every_trainer(method_name, tiny, tokenizer, data_dir, tmp_path):
    packed = []
    from trl.models import activation_offloading as trl_offload

    original = trl_offload.OffloadActivations.__init__

    def counting(self, *args, **kwargs):  # count the tensors trl's manager copies to the host
        original(self, *args, **kwargs)
        pack = self.pack_hook

        def recording(tensor):
            tensor_id = pack(tensor)
            packed.append(self.tracker[tensor_id][1])
            return tensor_id

        self.pack_hook = recording

    plain = run(method_name, tiny, tokenizer, data_dir, tmp_path / "plain")
    with mock.patch.object(trl_offload.OffloadActivations, "__init__", counting):
        offloaded = run(method_name, tiny, tokenizer, data_dir, tmp_path / "offload", activation_offloading=True)
    assert sum(packed) >= 2 * 3  # both steps moved at least each layer's checkpoint to the host
    assert_same(plain, offloaded, rel=0)


def _layer_inputs(model, kept: list):
    """Forward pre-hooks noting a finalizer on the storage of every decoder layer's input hidden states."""
    freed = []

    def note(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        kept.append(hidden.numel() * hidden.element_size())
        weakref.finalize(hidden.untyped_storage(), freed.append, len(kept) - 1)

    hooks = [layer.register_forward_pre_hook(note, with_kwargs=True) for layer in model.model.layers]
    return freed, hooks


@pytest.mark.parametrize("offload", [False, True])
def test_offloaded_checkpoints_leave_the_device(tiny, offload):
    """After the forward pass the layers' input hidden states (the checkpoints) are no longer held by autograd:
    their storages are freed and the host holds copies of at least their size; without offloading autograd keeps
    every one until the backward. Gradients are the same either way."""
    model = copy.deepcopy(tiny)
    checkpointing(model)
    model.train()
    ids = torch.randint(3, model.config.vocab_size, (2, 24))
    sizes: list[int] = []
    freed, hooks = _layer_inputs(model, sizes)
    context = offload_context(model, torch.device("cpu")) if offload else torch.autograd.graph.saved_tensors_hooks(
        lambda t: t, lambda t: t)  # fmt: skip
    with context:
        hidden = model.model(input_ids=ids).last_hidden_state
        loss = hidden.pow(2).mean()
        import gc

        gc.collect()
        alive = [i for i in range(len(sizes)) if i not in freed]
        on_host = sum(t[0].numel() * t[0].element_size() for t in getattr(context, "tracker", {}).values() if t[1])
        loss.backward()
    for hook in hooks:
        hook.remove()
    assert len(sizes) == model.config.num_hidden_layers
    if offload:
        assert alive == [] and on_host >= sum(sizes)
    else:
        assert alive == list(range(len(sizes)))


def test_offloading_gives_the_same_gradients(tiny):
    grads = []
    for offload in (False, True):
        model = copy.deepcopy(tiny)
        checkpointing(model)
        ids = torch.randint(3, model.config.vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))
        with offload_context(model, torch.device("cpu")) if offload else torch.enable_grad():
            model.model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


@pytest.mark.parametrize("kinds", [MLP, MLP + NORMS], ids=["mlp", "mlp+norms"])
@pytest.mark.parametrize("shards", [None, 3, 7])
def test_tiled_mlp_equals_the_untiled_mlp(tiny, shards, kinds):
    """Outputs and every parameter's and the input's gradient of the backbone, tiled against untiled: within 1e-6
    (float32), with DeepSpeed's TiledMLP really running (its forward and backward counted)."""
    from deepspeed.runtime.sequence_parallel.ulysses_sp import TiledMLP

    ids = torch.randint(3, tiny.config.vocab_size, (2, 70), generator=torch.Generator().manual_seed(2))
    results = []
    for tiled in (False, True):
        model = copy.deepcopy(tiny)
        with mock.patch.object(TiledMLP, "apply", wraps=TiledMLP.apply) as spy:
            if tiled:
                per_layer = 1 if kinds == MLP else 3  # the MLP, input and post-attention norms (+ the final norm)
                assert tile_mlps(model, shards, kinds) == model.config.num_hidden_layers * per_layer + (kinds != MLP)
            embeds = model.model.embed_tokens(ids).detach().requires_grad_()
            out = model.model(inputs_embeds=embeds).last_hidden_state
            out.pow(2).sum().backward()
        layers = model.config.num_hidden_layers
        assert spy.call_count == ((layers if kinds == MLP else 3 * layers + 1) if tiled else 0)
        results.append(
            (out.detach(), embeds.grad, {n: p.grad for n, p in model.named_parameters() if p.grad is not None})
        )
    (out_a, dx_a, g_a), (out_b, dx_b, g_b) = results
    assert tile_count(70, 32, shards) == (shards or 3)

    def rel(a, b):
        return ((a - b).abs().max() / a.abs().max().clamp(min=1e-12)).item()

    assert rel(out_a, out_b) <= 1e-6 and rel(dx_a, dx_b) <= 1e-6
    assert g_a.keys() == g_b.keys() and max(rel(g_a[n], g_b[n]) for n in g_a) <= 1e-6


def test_untile_restores_the_forward(tiny):
    model = copy.deepcopy(tiny)
    forwards = [m.forward for m in mlp_modules(model)]
    tile_mlps(model)
    tile_mlps(model)  # idempotent
    assert all(m.forward != f for m, f in zip(mlp_modules(model), forwards))
    untile_mlps(model)
    assert all("forward" not in m.__dict__ for m in mlp_modules(model))


def one_step(method_name, tiny, tokenizer, data_dir, tmp_path, peft_config=None, **kw):
    """One training step's loss and gradients (the first batch, outside the optimizer)."""
    method = get_method(method_name)
    kind = "sft" if method.trainer.completions == SFT else "pref"
    config = train_args(method.config, tmp_path, activation_checkpointing=True, diagnostics=False, **kw)
    torch.manual_seed(0)
    trainer = method.trainer(model_for(method, tiny), args=config, train_dataset=preference_rows(data_dir, kind),
                             processing_class=tokenizer, peft_config=peft_config)  # fmt: skip
    checkpointing(trainer.model)
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    trainer.model.train()
    with trainer.activation_offload():
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.grad is not None}
    return loss.item(), grads, trainer


def assert_same_step(a, b, tol=1e-6):
    """The same loss and gradients within ``tol`` relative error (each gradient's as a whole, in norm: a tiled
    weight gradient sums its tokens' outer products tile by tile, a different float32 order than one GEMM)."""
    (loss_a, grads_a, _), (loss_b, grads_b, _) = a, b
    assert loss_a == pytest.approx(loss_b, rel=tol)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name, g in grads_a.items():
        g, h = g.double(), grads_b[name].double()
        assert ((g - h).norm() / g.norm().clamp(min=1e-30)).item() <= tol, name
        assert ((g - h).abs().max() / g.abs().max().clamp(min=1e-30)).item() <= 10 * tol, name


@pytest.mark.parametrize("method_name", ["dpo", "sft", "kto", "sparsepo"])
def test_tiled_mlp_gives_the_same_step(method_name, tiny, tokenizer, data_dir, tmp_path):
    plain = one_step(method_name, tiny, tokenizer, data_dir, tmp_path / "plain")
    tiled = one_step(method_name, tiny, tokenizer, data_dir, tmp_path / "tiled", tiled_mlp=True, tiled_norms=True,
                     tiled_mlp_shards=3)  # fmt: skip
    assert any("_alignment_untiled_forward" in m.__dict__ for m in tiled[2].model.modules())
    assert_same_step(plain, tiled)


def test_tiled_mlp_and_offloading_with_lora(tiny, tokenizer, data_dir, tmp_path):
    from peft import LoraConfig

    lora = LoraConfig(r=4, target_modules="all-linear")
    plain = one_step("dpo", tiny, tokenizer, data_dir, tmp_path / "a", peft_config=lora)
    both = one_step("dpo", tiny, tokenizer, data_dir, tmp_path / "b", peft_config=lora, tiled_mlp=True,
                    tiled_norms=True, activation_offloading=True)  # fmt: skip
    assert all("lora" in name for name in plain[1])
    assert_same_step(plain, both)


def test_tiled_mlp_on_a_model_without_mlps_is_an_error(tokenizer, data_dir, tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    from alignment.trainers import DPOConfig, DPOTrainer

    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_embd=16, n_layer=1, n_head=2))
    for module in model.modules():  # rename its MLP class: nothing left to tile
        if type(module).__name__.endswith("MLP"):
            module.__class__ = type("FeedForward", (type(module),), {})
    with pytest.raises(ValueError, match="has no \\*MLP to tile"):
        DPOTrainer(model, args=train_args(DPOConfig, tmp_path, tiled_mlp=True), train_dataset=preference_rows(data_dir),
                   processing_class=tokenizer)  # fmt: skip
