"""Run with HF_ENDPOINT set to a local Hub server: train a tiny DPO model for 2 steps, push it with its
model card, load it back from the 'Hub' and compare log-probabilities. Prints one JSON line."""

import json
import sys
import tempfile

import torch
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignment.heads import causal_token_logps
from alignment.trainers import DPOConfig, DPOTrainer, RunInfo
from tests.helpers import tiny_llama

data = sys.argv[1]
tokenizer = AutoTokenizer.from_pretrained(f"{data}/tokenizer")
model = tiny_llama(len(tokenizer), layers=1, kv_heads=4)
rows = load_dataset("json", data_files=f"{data}/tasks/rps/pref_train_conversational.jsonl", split="train").select(
    range(16)
)
with tempfile.TemporaryDirectory() as out:
    args = DPOConfig(
        output_dir=out,
        use_cpu=True,
        max_steps=2,
        per_device_train_batch_size=8,
        logging_steps=1,
        push_to_hub=True,
        hub_model_id="alice/tiny-dpo",
        hub_token="hf_test",
        report_to=[],
    )
    run = RunInfo(
        datasets=["data/tasks/rps/pref_train_conversational.jsonl"], command="python tests/hub_push_script.py"
    )
    trainer = DPOTrainer(model, args=args, train_dataset=rows, processing_class=tokenizer, run_info=run)
    trainer.train()
    trainer.push_to_hub()
loaded = AutoModelForCausalLM.from_pretrained("alice/tiny-dpo", token="hf_test")
ids = torch.tensor([[1, 4, 50, 60, 2, 5, 70, 80, 2]])
a = causal_token_logps(model.eval(), ids).logps
b = causal_token_logps(loaded.eval(), ids).logps
print(json.dumps({"max_diff": (a - b).abs().max().item()}))
