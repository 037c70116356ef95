"""The Triton backend (backend="triton") under Triton's CPU interpreter (TRITON_INTERPRET=1, set by conftest):
values and gradients of the general, frozen-head and pair-fused paths against the float64 twin, with odd and
multi-block vocabularies, vocabulary tiles, masked rows, softcap, temperature, logit scale, entropy, KL, z-loss,
StableMax, collapse flags and bf16 inputs; launch counts prove the kernels ran; the errors where Triton cannot
run. Shapes stay small: the interpreter runs one program per row through numpy."""

import pytest
import torch

pytest.importorskip("triton", reason="the triton extra (pip install -e '.[triton]') is not installed")

import triton.runtime.interpreter as interpreter

from alignment.ops import KernelOptions, pair_fused_loss, token_logps
from alignment.ops.backend import resolve
from alignment.ops.reference import reference_token_logps
from tests.helpers import make, make_pairs, output_err, rel_err, run_op, run_reference
from tests.ops.test_pair_fused import compare, token_level_fn


@pytest.fixture
def launches(monkeypatch):
    """Counts of the Triton kernels launched (by name) through the interpreter."""
    counts: dict[str, int] = {}
    original = interpreter.InterpretedFunction.run

    def run(self, *args, **kwargs):
        name = getattr(self.fn, "__name__", "?")
        counts[name] = counts.get(name, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(interpreter.InterpretedFunction, "run", run)
    return counts


@pytest.mark.parametrize("path", ["general", "frozen"])
@pytest.mark.parametrize(
    ("n", "v", "kw"),
    [
        (37, 301, {}),  # odd vocabulary, one block
        (9, 1500, {"softcap": 3.0, "temperature": 0.7}),  # two column blocks of the kernel
        (20, 257, {"logit_scale": 1.7, "vocab_chunk": 100}),  # vocabulary tiles merged online (general)
    ],
)
def test_values_and_gradients_match_the_float64_twin(path, n, v, kw, launches):
    hidden, weight, bias, targets, ref_hidden = make(3, n, 16, v)
    if path == "frozen":
        kw = {k: x for k, x in kw.items() if k != "vocab_chunk"}
    out, grads, ups = run_op(hidden, weight, bias, targets, ref_hidden, path, backend="triton", **kw)
    logit_kw = {k: x for k, x in kw.items() if k in ("softcap", "temperature", "logit_scale")}
    ref, ref_grads = run_reference(hidden, weight, bias, targets, ref_hidden, path, ups, **logit_kw)
    for key in ("logps", "lse", "entropy", "kl_ref"):
        assert output_err(out, ref, key) <= 2e-5, key
    assert torch.equal(out.collapsed, ref["collapsed"])
    for got, want in zip(grads, ref_grads):
        assert rel_err(got, want) <= 2e-5
    assert launches.get("fold_softmax", 0) >= 1
    assert launches.get("frozen_tiles" if path == "frozen" else "grad_tile", 0) >= 1


@pytest.mark.parametrize("path", ["general", "frozen"])
def test_bfloat16_inputs(path, launches):
    hidden, weight, bias, targets, ref_hidden = make(4, 24, 16, 97, dtype=torch.bfloat16)
    out, grads, ups = run_op(hidden, weight, bias, targets, ref_hidden, path, backend="triton")
    ref, ref_grads = run_reference(hidden, weight, bias, targets, ref_hidden, path, ups)
    assert rel_err(out.logps, ref["logps"]) <= 1e-2 and all(rel_err(g, r) <= 2e-2 for g, r in zip(grads, ref_grads))
    assert launches.get("fold_softmax", 0) >= 1


def test_the_torch_backend_launches_no_kernel(launches):
    hidden, weight, bias, targets, ref_hidden = make(3, 12, 8, 50)
    run_op(hidden, weight, bias, targets, ref_hidden, "general", backend="torch")
    assert launches == {}


@pytest.mark.parametrize("frozen", [False, True])
def test_stablemax(frozen, launches):
    hidden, weight, bias, targets, _ = make(5, 30, 8, 211, dtype=torch.float64)
    hidden, weight, bias = (x.float() for x in (hidden, weight, bias))
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_(not frozen)
    out = token_logps(h, w, targets, bias=bias, normalizer="stablemax", backend="triton", softcap=4.0)
    out.logps.sum().backward()
    dh, dw = h.grad.double(), (w.grad.double() if not frozen else None)
    h2, w2 = hidden.double().requires_grad_(), weight.double().requires_grad_(not frozen)
    ref = reference_token_logps(h2, w2, targets, bias.double(), normalizer="stablemax", softcap=4.0)
    ref["logps"].sum().backward()
    assert rel_err(out.logps, ref["logps"]) <= 2e-5 and rel_err(dh, h2.grad) <= 2e-5
    if not frozen:
        assert rel_err(dw, w2.grad) <= 2e-5
    assert launches.get("fold_stablemax", 0) >= 1


def test_z_loss_gradient_through_lse(launches):
    hidden, weight, bias, targets, _ = make(8, 25, 8, 120)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    out = token_logps(h, w, targets, bias=bias, backend="triton")
    (out.logps.sum() + 1e-2 * (out.lse**2).sum()).backward()
    h2, w2 = hidden.double().requires_grad_(), weight.double().requires_grad_()
    ref = reference_token_logps(h2, w2, targets, bias.double())
    (ref["logps"].sum() + 1e-2 * (ref["lse"] ** 2).sum()).backward()
    assert rel_err(h.grad, h2.grad) <= 2e-5 and rel_err(w.grad, w2.grad) <= 2e-5
    assert launches.get("grad_tile", 0) >= 1


@pytest.mark.parametrize("shape_kw", [((3, 9, 16, 53), {}), ((2, 20, 8, 64), {"token_chunk": 7}),
                                      ((3, 10, 8, 40), {"softcap": 2.0, "temperature": 0.6})])  # fmt: skip
def test_pair_fused_path_matches_the_twin(shape_kw, launches):
    (b, t, h, v), kw = shape_kw
    compare(1, b, t, h, v, backend="triton", **kw)
    assert launches.get("fold_softmax", 0) >= 1 and launches.get("grad_tile", 0) + launches.get("probabilities", 0)


def test_pair_fused_entropy_kl_and_bf16(launches):
    compare(4, 3, 8, 8, 37, fn_factory=token_level_fn, kl=True, backend="triton")
    compare(2, 3, 10, 16, 90, dtype=torch.bfloat16, tol=1e-2, backend="triton")
    assert launches.get("fold_softmax", 0) >= 2


def test_all_masked_rows(launches):
    hidden, weight, bias, targets, ref = make_pairs(0, 2, 5, 8, 20)
    targets[:] = -100
    leaves = [x.clone().requires_grad_() for x in (hidden, weight, bias)]
    from tests.helpers import dpo_fn

    out = pair_fused_loss(leaves[0], leaves[1], targets, dpo_fn(ref * 0), bias=leaves[2], backend="triton")
    grads = torch.autograd.grad(out.loss, leaves)
    assert all(torch.all(g == 0) for g in grads) and torch.all(out.token_logps == 0)


def test_backend_errors_and_auto(monkeypatch):
    with pytest.raises(ValueError, match="backend must be one of"):
        KernelOptions(backend="cuda")
    assert resolve("auto", torch.device("cpu")) == "torch"  # Triton is for CUDA devices
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="backend 'triton' runs on a CUDA device, and these tensors are on cpu"):
        resolve("triton", torch.device("cpu"))
    monkeypatch.setenv("ALIGNMENT_KERNEL_BACKEND", "torch")
    assert resolve(None, torch.device("cpu")) == "torch"


@pytest.mark.parametrize("method", ["dpo", "sparsepo"])
def test_a_trainer_step_with_kernel_backend_triton_equals_torch(tmp_path, method, launches):
    """One SGD step of a DPO and a SparsePO trainer (its loss reads the kernel's per-token KL): the same loss
    and parameters with the Triton kernels as with the PyTorch tiles."""
    from alignment.trainers import get_method
    from tests.conftest import DATA
    from tests.helpers import preference_rows, train_args

    entry, results = get_method(method), {}
    for backend in ("torch", "triton"):
        torch.manual_seed(0)  # SparsePO's mask network is initialised at construction
        args = train_args(entry.config, tmp_path / backend, max_steps=1, per_device_train_batch_size=4, max_length=32,
                          diagnostics=False, optim="sgd", kernel_backend=backend)  # fmt: skip
        trainer = entry.trainer(str(DATA / "sft_model"), args=args, train_dataset=preference_rows(DATA, n=4))
        trainer.train()
        results[backend] = (trainer.state.log_history[0]["loss"], [p.detach() for p in trainer.model.parameters()])
    assert results["triton"][0] == pytest.approx(results["torch"][0], rel=1e-6)
    assert max((a - b).abs().max().item() for a, b in zip(results["torch"][1], results["triton"][1])) <= 1e-6
    assert launches.get("fold_softmax", 0) >= 1 and launches.get("grad_tile", 0) >= 1
