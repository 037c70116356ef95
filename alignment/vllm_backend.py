"""Optional vLLM generation backend for the self-play loop (``generation_backend: vllm``).

Sampling K responses per prompt is most of an iteration's time on a GPU with a large model; vLLM (paged
attention, continuous batching) does it several times faster than ``model.generate``. The backend loads
pi_t from its folder into a ``vllm.LLM``, samples with ``SamplingParams(n=K, seed=...)`` from the same
rendered prompts as the transformers path (chat template, no second BOS: prompts go in as token ids), and
frees the engine before training starts.

vLLM is not a dependency of this package (it pins its own torch and needs a CUDA GPU): install it on the GPU
machine (``pip install vllm``). Without it, ``generation_backend: vllm`` stops the loop at its start with
an error that says so. Checked by ``tests/test_vllm_backend.py`` where vllm and a GPU exist (marked ``gpu``).
"""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Sequence

BACKENDS = ("transformers", "vllm")


def require_vllm(setting: str, otherwise: str) -> None:
    """One line (UnavailableError) when this machine cannot run vLLM for ``setting``: the vllm package or a CUDA
    GPU is missing; ``otherwise``: the setting to use instead."""
    from alignment.errors import UnavailableError

    if importlib.util.find_spec("vllm") is None:
        raise UnavailableError(f"{setting} needs the vllm package, which is not installed: `pip install vllm` on a "
                               f"machine with a CUDA GPU, or {otherwise}")  # fmt: skip
    import torch

    if not torch.cuda.is_available():
        raise UnavailableError(f"{setting} needs a CUDA GPU and none is visible here; {otherwise}")


def check_backend(name: str) -> None:
    """Raise a clear error when the backend is unknown or its package/device is missing."""
    if name not in BACKENDS:
        raise ValueError(f"generation_backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "vllm":
        require_vllm("generation_backend: vllm", "set generation_backend: transformers")


def generate_vllm(model_path: str, tokenizer, prompts: Sequence, config, gpu_memory_utilization: float = 0.4,
                  dtype: str = "auto") -> list[list[str]]:  # fmt: skip
    """``config.num_samples`` responses per prompt (a :class:`alignment.generation.SamplingConfig`), like
    :func:`alignment.generation.generate_responses`, with vLLM. ``gpu_memory_utilization`` leaves the rest of
    the GPU to whatever else the process holds (the judge)."""
    check_backend("vllm")
    import torch
    from vllm import LLM, SamplingParams

    from alignment.generation import render_prompts

    texts, chat = render_prompts(tokenizer, prompts)
    ids = [tokenizer(t, add_special_tokens=not chat)["input_ids"] for t in texts]
    sampling = {"temperature": config.temperature if config.do_sample else 0.0}
    if config.do_sample and config.top_p is not None:
        sampling["top_p"] = config.top_p
    if config.do_sample and config.top_k is not None:
        sampling["top_k"] = config.top_k
    params = SamplingParams(n=config.num_samples, max_tokens=config.max_new_tokens, seed=config.seed,
                            skip_special_tokens=True, **sampling)  # fmt: skip
    llm = LLM(model=model_path, tokenizer=model_path, seed=config.seed, dtype=dtype,
              gpu_memory_utilization=gpu_memory_utilization, enforce_eager=True)  # fmt: skip
    try:
        outputs = llm.generate([{"prompt_token_ids": x} for x in ids], params)
        return [[o.text for o in out.outputs] for out in outputs]
    finally:
        del llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
