"""Helpers shared by several test files and by the scripts the tests launch (run with PYTHONPATH = the
repository): tolerances and seeds, random op inputs, the tiny Llama, the trainer datasets and configs."""

import csv
import json
import os
import random
from pathlib import Path

import torch

from alignment.losses import dpo_loss
from alignment.ops import token_logps
from alignment.ops.reference import reference_token_logps

FRESH_SEED = int(os.environ.get("ALIGNMENT_TEST_SEED", random.SystemRandom().randrange(2**31)))
OUTPUTS = ("logps", "lse", "entropy", "kl_ref")


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-12)).item()


def output_err(out, ref: dict, key: str) -> float:
    """rel_err of one output of the op. Entropy and KL are differences of log-scale sums (lse - E_p[z]), so their
    float32 rounding is eps * |lse| whatever their own size: a near-deterministic row's entropy of 0.006 next to an
    lse of 5 carries 5e-5 relative error in any float32 evaluation. Those two are measured against that scale."""
    got, want = getattr(out, key).cpu().double(), ref[key].double()
    scale = want.abs().max()
    if key in ("entropy", "kl_ref"):
        scale = torch.maximum(scale, ref["lse"].double().abs().max())
    return ((got - want).abs().max() / scale.clamp(min=1e-12)).item()


def make(seed, n, h, v, dtype=torch.float32, masked=0.25, bias=True, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n, h, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.randn(v, h, generator=gen, dtype=torch.float64) * scale).to(dtype)
    b = torch.randn(v, generator=gen, dtype=torch.float64).to(dtype) if bias else None
    targets = torch.randint(0, v, (n,), generator=gen)
    targets[torch.rand(n, generator=gen) < masked] = -100
    ref_hidden = torch.randn(n, h, generator=gen, dtype=torch.float64).to(dtype)
    return hidden, weight, b, targets, ref_hidden


def run_op(hidden, weight, bias, targets, ref_hidden, path, **kw):
    """Outputs and gradients (w.r.t. hidden, and weight/bias on the general path) for random upstream grads."""
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_(path == "general")
    b = None if bias is None else bias.clone().requires_grad_(path == "general")
    out = token_logps(h, w, targets, bias=b, entropy=True, ref_hidden=ref_hidden, collapsed=True, path=path, **kw)
    gen = torch.Generator().manual_seed(123)
    ups = [torch.randn(targets.shape, generator=gen, dtype=torch.float64).to(targets.device) for _ in OUTPUTS]
    loss = sum((getattr(out, k).double() * g).sum() for k, g in zip(OUTPUTS, ups))
    leaves = [h] + ([w] + ([b] if b is not None else []) if path == "general" else [])
    grads = torch.autograd.grad(loss, leaves)
    return out, grads, ups


def run_reference(hidden, weight, bias, targets, ref_hidden, path, ups, **logit_kw):
    h = hidden.double().requires_grad_()
    w = weight.double().requires_grad_(path == "general")
    b = None if bias is None else bias.double().requires_grad_(path == "general")
    ref = reference_token_logps(h, w, targets, b, ref_hidden=ref_hidden.double(), **logit_kw)
    loss = sum((ref[k] * g).sum() for k, g in zip(OUTPUTS, ups))
    leaves = [h] + ([w] + ([b] if b is not None else []) if path == "general" else [])
    return ref, torch.autograd.grad(loss, leaves)


def make_pairs(seed, b, t, h, v, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(2 * b, t, h, generator=gen, dtype=torch.float64).to(dtype)
    weight = (torch.randn(v, h, generator=gen, dtype=torch.float64) * 0.5).to(dtype)
    bias = torch.randn(v, generator=gen, dtype=torch.float64).to(dtype)
    targets = torch.randint(0, v, (2 * b, t), generator=gen)
    prompt = torch.randint(0, t, (b,), generator=gen).repeat(2)  # chosen and rejected share a prompt length
    for row in range(2 * b):
        targets[row, : prompt[row]] = -100
        end = int(torch.randint(prompt[row], t + 1, (1,), generator=gen))
        targets[row, end:] = -100  # padding
    ref = torch.randn(2, b, generator=gen, dtype=torch.float64) * 3
    return hidden, weight, bias, targets, ref


def dpo_fn(ref, beta=0.3):
    n_pairs = ref.shape[1]

    def loss_fn(chunk):
        dt = chunk.chosen_logps.dtype
        losses, metrics = dpo_loss(
            chunk.chosen_logps,
            chunk.rejected_logps,
            ref[0, chunk.pair_index].to(dt),
            ref[1, chunk.pair_index].to(dt),
            beta,
        )
        return losses.sum() / n_pairs, metrics

    return loss_fn


def tiny_llama(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2, seed: int = 0):
    """A randomly initialised Llama (seeded), intermediate size 2 * hidden, pad/bos/eos = 0/1/2 as in the
    shipped tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def tiny_reward_model(vocab_size: int, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                      seed: int = 0):  # fmt: skip
    """:func:`tiny_llama`'s shape as a one-output sequence classifier (a reward model), its head scaled so that
    rewards are of order 1 (the loss and its gradients are not all at log 2)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        num_labels=1,
    )  # fmt: skip
    model = LlamaForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.mul_(20.0)
    return model


def model_for(method, causal_lm: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``causal_lm`` for ``method``'s trainer, or for a reward method the same shape with a scalar head."""
    import copy

    if method.trainer.model_head != "reward":
        return copy.deepcopy(causal_lm)
    c = causal_lm.config
    return tiny_reward_model(c.vocab_size, c.hidden_size, c.num_hidden_layers, c.num_attention_heads,
                             c.num_key_value_heads)  # fmt: skip


def required_recipe_fields(method) -> dict:
    """What a minimal recipe of ``method`` must hold beyond its defaults (online DPO: a judge)."""
    return {"judge": "task:arithmetic"} if hasattr(method.config, "judge") else {}


def trainer_kwargs(method) -> dict:
    """The constructor arguments ``method``'s trainer needs beyond the common ones (online DPO: a judge, here
    trl's reward function form: longer answers score higher)."""
    if not hasattr(method.config, "judge"):
        return {}
    return {"reward_funcs": [lambda prompts, completions, **kw: [float(len(str(c))) for c in completions]]}


def full_parameters(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter, gathered whole when DeepSpeed ZeRO-3 has partitioned it."""
    params = {}
    for name, param in module.named_parameters():
        if hasattr(param, "ds_id"):
            import deepspeed

            with deepspeed.zero.GatheredParameters([param]):
                params[name] = param.detach().clone()
        else:
            params[name] = param.detach().clone()
    return params


def preference_rows(data_dir, kind="pref", task="arithmetic", n=16, split="train"):
    """The first ``n`` rows of a shipped conversational task dataset (``kind`` pref or sft)."""
    from datasets import load_dataset

    path = data_dir / "tasks" / task / f"{kind}_{split}_conversational.jsonl"
    return load_dataset("json", data_files=str(path), split="train").select(range(n))


def train_args(cls, tmp_path, **kw):
    """A config of class ``cls`` for 2 CPU steps of 8 rows at a high learning rate (tests only)."""
    base = dict(output_dir=str(tmp_path / "out"), use_cpu=True, max_steps=2, per_device_train_batch_size=8,
                learning_rate=1e-2, logging_steps=1, report_to=[], seed=0)  # fmt: skip
    return cls(**{**base, **kw})


def changed(before: dict, model) -> list[str]:
    """Names of the parameters of ``model`` that differ from the copies in ``before``."""
    return [n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())]


# ----- a two-anchor method (INPO-shaped) for the anchor tests and the distributed script ------------------
def two_anchor_loss(chosen, rejected, ref_w, ref_l, prev_w, prev_l, eta=0.5, mix=0.25):
    """(h - 1/(2 eta))^2 with h = log-ratio of the pair - mix * ref's - (1 - mix) * prev's (INPO's shape)."""
    h = (chosen - rejected) - mix * (ref_w - ref_l) - (1 - mix) * (prev_w - prev_l)
    return (h - 1 / (2 * eta)) ** 2


def register_two_anchor_method():
    """Register (once) and return the method 'two_anchor': anchors ref and prev, per-token anchor values.
    Its metrics report how far each anchor's per-token values sum from its sequence values."""
    from dataclasses import dataclass, field

    from alignment.configs import PreferenceConfig
    from alignment.trainers import PreferenceTrainer, get_method, methods, register

    if "two_anchor" in methods():
        return get_method("two_anchor")

    @dataclass
    class TwoAnchorConfig(PreferenceConfig):
        eta: float = field(default=0.5, metadata={"help": "The toy's regression target is 1/(2 eta)."})

    class TwoAnchorTrainer(PreferenceTrainer):
        anchor_token_logps = True

        def pair_losses(self, chunk, anchors, token_scale):
            ref, prev = anchors["ref"], anchors["prev"]
            losses = two_anchor_loss(
                chunk.chosen_logps, chunk.rejected_logps, ref.chosen, ref.rejected, prev.chosen, prev.rejected,
                self.args.eta,
            )  # fmt: skip
            metrics = {"logps/chosen": chunk.chosen_logps.detach(), "logps/rejected": chunk.rejected_logps.detach()}
            for name, anchor in anchors.items():
                metrics[f"anchors/{name}_chosen"] = anchor.chosen.detach()
                key = f"{name}_token_logps"
                if key in chunk.token_inputs:
                    sums = chunk.token_sums(chunk.token_inputs[key])
                    gap = (sums[0] - anchor.chosen).abs() + (sums[1] - anchor.rejected).abs()
                    metrics[f"anchors/{name}_token_gap"] = gap.detach()
            return losses, metrics

    register(
        "two_anchor", config=TwoAnchorConfig, loss=two_anchor_loss, paper="a test method", anchors=("ref", "prev")
    )(TwoAnchorTrainer)
    return get_method("two_anchor")


# ----- small rows and writers for the data tests ------------------------------------------------------------
STANDARD_ROWS = [
    {"prompt": "What is 1 + 2?", "chosen": " 3", "rejected": " 4"},
    {"prompt": "What is 5 + 5?", "chosen": " 10", "rejected": " 11"},
    {"prompt": "Play rock, paper or scissors.", "chosen": " paper", "rejected": " I pass."},
]


def conversational(rows):
    return [
        {
            "prompt": [{"role": "user", "content": r["prompt"]}],
            "chosen": [{"role": "assistant", "content": r["chosen"].strip()}],
            "rejected": [{"role": "assistant", "content": r["rejected"].strip()}],
        }
        for r in rows
    ]


def write(path: Path, rows, kind: str | None = None) -> Path:
    kind = kind or path.suffix.lstrip(".")
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif kind == "json":
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif kind == "csv":
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif kind == "disk":
        from datasets import Dataset

        Dataset.from_list(rows).save_to_disk(str(path))
    else:
        raise ValueError(kind)
    return path
