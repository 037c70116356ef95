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
