"""generation_backend: vllm samples what model.generate samples (same distribution over rps moves, from the
same rendered prompts). Needs a CUDA GPU and the vllm package: marked ``gpu`` (``pytest -m gpu``)."""

import pytest
import torch

from alignment.generation import SamplingConfig, generate_responses
from alignment.models import load_model, load_tokenizer
from alignment.tasks import get_task


@pytest.mark.gpu
def test_vllm_samples_the_same_distribution_as_transformers(data_dir):
    pytest.importorskip("vllm", reason="generation_backend: vllm needs `pip install vllm`")
    from alignment.vllm_backend import generate_vllm

    assert torch.cuda.is_available()
    path, task = str(data_dir / "sft_model"), get_task("rps")
    tokenizer = load_tokenizer(path)
    prompts = task.prompts("eval", 400, seed=0)
    config = SamplingConfig(max_new_tokens=task.max_new_tokens, do_sample=True, num_samples=4, seed=0)
    by_vllm = generate_vllm(path, tokenizer, prompts, config)
    assert generate_vllm(path, tokenizer, prompts, config) == by_vllm  # seeded
    assert len(by_vllm) == 400 and all(len(r) == 4 for r in by_vllm)
    model = load_model(path).cuda()
    by_hf = generate_responses(model, tokenizer, prompts, config)
    flat = [p for p in prompts for _ in range(4)]
    hf = task.metrics(flat, [r for rs in by_hf for r in rs])
    vl = task.metrics(flat, [r for rs in by_vllm for r in rs])
    for key in ("p_rock", "p_paper", "p_scissors", "invalid_rate"):
        assert abs(hf[key] - vl[key]) < 0.05, (key, hf[key], vl[key])


@pytest.mark.gpu
def test_online_dpo_samples_every_step_with_vllm(data_dir, tmp_path):
    """use_vllm: true (colocate) on a real engine: trl's VLLMGeneration pushes the weights each step and the run
    trains on what it samples."""
    pytest.importorskip("vllm", reason="use_vllm needs `pip install vllm`")
    from datasets import Dataset

    from alignment.tasks import get_task
    from alignment.trainers.builtin.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

    assert torch.cuda.is_available()
    path, task = str(data_dir / "sft_model"), get_task("arithmetic")
    prompts = task.prompts("train", 16, seed=0)
    args = OnlineDPOConfig(output_dir=str(tmp_path), bf16=False, report_to=[], max_steps=3, learning_rate=1e-4,
                           per_device_train_batch_size=4, logging_steps=1, save_strategy="no", max_new_tokens=8,
                           max_length=64, use_vllm=True, vllm_gpu_memory_utilization=0.3)  # fmt: skip
    rows = Dataset.from_list([{"prompt": p} for p in prompts])
    lengths = [lambda prompts, completions, **kw: [len(c) for c in completions]]
    trainer = OnlineDPOTrainer(path, reward_funcs=lengths, args=args, train_dataset=rows)
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    assert trainer.vllm.synced_step == 2  # synced before the third step's sampling
