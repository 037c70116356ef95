"""One optimizer step of a method (DPO, RPO, CPO, ORPO, KTO, SparsePO, INPO, two-anchor, regret-loss) on 8 fixed rows;
writes the logged loss and the parameters.

python tests/distributed/train_script.py OUT.pt METHOD BATCH ACCUM
accelerate launch --config_file accelerate_configs/cpu_ddp.yaml tests/distributed/train_script.py ...
accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml tests/distributed/train_script.py ...
"""

import os
import sys

import torch
from datasets import load_dataset
from transformers import AutoTokenizer

from alignment.trainers import (
    CPOConfig,
    CPOTrainer,
    DPOConfig,
    DPOTrainer,
    INPOConfig,
    INPOTrainer,
    KTOConfig,
    KTOTrainer,
    OnlineDPOConfig,
    OnlineDPOTrainer,
    ORPOConfig,
    ORPOTrainer,
    RegretConfig,
    RegretLossTrainer,
    RPOConfig,
    RPOTrainer,
    SparsePOConfig,
    SparsePOTrainer,
)
from tests.helpers import full_parameters, register_two_anchor_method, tiny_llama

out_path, method, batch, accum = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
method, _, variant = method.partition(":")  # "dpo:packed": padding_free, every sequence of a batch in one row
root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
deepspeed = os.environ.get("ACCELERATE_USE_DEEPSPEED", "false") == "true"
tokenizer = AutoTokenizer.from_pretrained(f"{root}/data/tokenizer")
model = tiny_llama(len(tokenizer))
ref = tiny_llama(len(tokenizer))
ref.load_state_dict(model.state_dict())
with torch.no_grad():
    ref.lm_head.weight.mul_(0.5)
rows = load_dataset(
    "json", data_files=f"{root}/data/tasks/arithmetic/pref_train_conversational.jsonl", split="train"
).select(range(8))
common = dict(
    output_dir=f"{out_path}.run",
    per_device_train_batch_size=batch,
    gradient_accumulation_steps=accum,
    max_steps=1,
    learning_rate=0.5,
    optim="sgd",
    lr_scheduler_type="constant",
    max_grad_norm=0.0,
    logging_steps=1,
    report_to=[],
    save_strategy="no",
    seed=0,
)
if variant == "packed":
    common["padding_free"] = True
if variant == "sp":  # each pair split across the 2 processes by position (DeepSpeed Ulysses)
    common.update(sequence_parallel_size=2, dataloader_drop_last=True)
# DeepSpeed on CPU: not use_cpu (that selects plain multi-CPU), and the gloo backend named explicitly
common.update(use_cpu=False, ddp_backend="gloo") if deepspeed else common.update(use_cpu=True)
if method.startswith("regret"):  # k = 0: the regret-loss is a batch mean, so 2 processes x 4 = 1 x 8
    text = method == "regret_text"
    cfg = RegretConfig(mode="text" if text else "numeric", actions=3, horizon=6, k=0.0, eval_sequences=0,
                       families=["gaussian", "adversarial"], learner_hidden=32, **common)  # fmt: skip
    trainer = RegretLossTrainer(model if text else None, args=cfg, processing_class=tokenizer if text else None)
elif method == "two_anchor":  # named anchors: ref a frozen copy, prev a separate model, both precomputed and cached
    toy = register_two_anchor_method()
    cfg = toy.config(precompute_ref_logps=True, ref_cache_dir=f"{out_path}.cache", eta=0.5, **common)
    trainer = toy.trainer(model, args=cfg, train_dataset=rows, processing_class=tokenizer, anchors={"prev": ref})
elif method == "inpo":  # ref a frozen copy of the policy, prev the other model, both precomputed
    cfg = INPOConfig(eta=0.5, tau=0.1, ref_cache_dir=f"{out_path}.cache", **common)
    trainer = INPOTrainer(model, args=cfg, train_dataset=rows, processing_class=tokenizer, anchors={"prev": ref})
elif method == "sparsepo":  # learned masks (no dropout, so that the processes agree), KL term on
    cfg = SparsePOConfig(mask_dropout=0.0, beta=0.2, **common)
    trainer = SparsePOTrainer(model, ref_model=ref, args=cfg, train_dataset=rows, processing_class=tokenizer)
elif method == "cpo":  # reference-free, with the NLL term's token mean over the global batch
    cfg = CPOConfig(beta=0.2, cpo_alpha=1.0, **common)
    trainer = CPOTrainer(model, args=cfg, train_dataset=rows, processing_class=tokenizer)
elif method == "orpo":  # the NLL covers the chosen prompts
    trainer = ORPOTrainer(model, args=ORPOConfig(beta=0.2, **common), train_dataset=rows, processing_class=tokenizer)
elif method in ("kto", "kto_apo"):  # the arithmetic pairs unpaired; kto's KL point averaged over processes
    options = {"loss_type": "apo_zero_unpaired"} if method == "kto_apo" else {}
    cfg = KTOConfig(beta=0.2, train_sampling_strategy="sequential", **options, **common)
    trainer = KTOTrainer(model, ref_model=ref, args=cfg, train_dataset=rows, processing_class=tokenizer)
elif method == "online_dpo":  # the prompts; each step's two completions a fixed function of the prompt (injected)
    cfg = OnlineDPOConfig(beta=0.2, max_new_tokens=4, **common)
    trainer = OnlineDPOTrainer(model, ref_model=ref, args=cfg, train_dataset=rows.select_columns(["prompt"]),
                               processing_class=tokenizer, reward_funcs=[lambda completions, **kw: [len(c) for c in
                               completions]])  # fmt: skip
    eos = tokenizer.eos_token_id
    trainer.sample = lambda ids: [[*p[-3:], eos] for p in ids] + [p[1:3] for p in ids]
elif method == "rpo":
    trainer = RPOTrainer(
        model,
        ref_model=ref,
        args=RPOConfig(eta=1.0, sft_normalization="token_mean", beta=0.2, **common),
        train_dataset=rows,
        processing_class=tokenizer,
    )
else:
    args = DPOConfig(beta=0.2, **common)
    trainer = DPOTrainer(model, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
if variant == "packed":
    trainer.data_collator.single_row = True  # the arithmetic rows are of similar lengths: make them share a row
seen = []  # (positions, total length) of each batch the step computes on: a shard's under sequence parallelism
compute_loss = trainer.compute_loss


def recording(model, inputs, *args, **kwargs):
    positions = inputs.get("position_ids", inputs.get("attention_mask"))
    if positions is not None:  # the regret trainer's batches carry neither
        seen.append((int(positions.shape[1]), int(positions.max()) + 1 if "position_ids" in inputs else None))
    return compute_loss(model, inputs, *args, **kwargs)


trainer.compute_loss = recording
trainer.train()
inner = trainer.accelerator.unwrap_model(trainer.model_wrapped)
params = full_parameters(inner)
if trainer.accelerator.is_main_process:
    torch.save({"log": trainer.state.log_history[0], "params": params, "summary": trainer.active_summary(),
                "seen": seen}, out_path)  # fmt: skip
# the results are written: leave without the interpreter's teardown, where gloo's / DeepSpeed's threads sometimes
# abort a rank ("terminate called without an active exception") after the work is done
trainer.accelerator.wait_for_everyone()
sys.stdout.flush()
sys.stderr.flush()
os._exit(0)
