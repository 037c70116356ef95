"""Online DPO's per-step sampling with vLLM (``use_vllm: true``), through trl's own engine wrapper.

trl 1.16 ships :class:`trl.generation.vllm_generation.VLLMGeneration`: it starts the engine (``colocate``: a
``vllm.LLM`` in each training process, sharing its GPU; ``server``: a ``trl vllm-serve`` process reached over
HTTP and NCCL), pushes the policy's current weights into it (``sync_weights``: LoRA adapters merged, ZeRO-3
parameters gathered, FSDP walked; the names vLLM expects) and samples from token ids. This module only feeds it:
the weights are pushed once per optimizer step, before the step's first sample; each prompt is sampled twice
(``num_generations=2``, the prompt repeated, as trl's server mode expects) and the completions come back in the
order of :meth:`OnlineDPOTrainer.sample`, each cut after its first EOS (the stop tokens are the trainer's EOS ids).

vLLM needs a CUDA GPU and its own package (``pip install vllm``, versions trl supports: 0.22 to 0.31); without
them ``use_vllm: true`` is refused in one line at the trainer's construction.
"""

from __future__ import annotations

from alignment.vllm_backend import require_vllm

VLLM_MODES = ("colocate", "server")
#: the numeric vllm_* fields of OnlineDPOConfig (alignment.checks.check_bounds)
VLLM_BOUNDS = {
    "vllm_gpu_memory_utilization": "(0, 1]",
    "vllm_tensor_parallel_size": ">= 1",
    "vllm_server_port": "[1, 65535]",
    "vllm_group_port": "[1, 65535]",
    "vllm_server_timeout": "> 0",
}


def check_vllm_available() -> None:
    """One line when this machine cannot run vLLM: the package or a CUDA GPU is missing."""
    require_vllm("use_vllm: true", "leave use_vllm false to sample with transformers generate")


class VLLMSampler:
    """Two completions per prompt from the current policy, sampled by vLLM (see the module's docstring)."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.engine = None
        self.synced_step = None  # the optimizer step whose weights the engine holds

    def build(self):
        from trl.generation.vllm_generation import VLLMGeneration

        t, a = self.trainer, self.trainer.args
        return VLLMGeneration(
            model=t.accelerator.unwrap_model(t.model), accelerator=t.accelerator, processing_class=t.processing_class,
            mode=a.vllm_mode, server_base_url=a.vllm_server_base_url, server_host=a.vllm_server_host,
            server_port=a.vllm_server_port, server_timeout=a.vllm_server_timeout, group_port=a.vllm_group_port,
            tensor_parallel_size=a.vllm_tensor_parallel_size, gpu_memory_utilization=a.vllm_gpu_memory_utilization,
            max_model_length=a.max_length + a.max_new_tokens if a.max_length else None,
            max_num_seqs=2 * a.per_device_train_batch_size * a.vllm_tensor_parallel_size,
            enable_sleep_mode=a.vllm_enable_sleep_mode, trust_remote_code=a.trust_remote_code,
            repetition_penalty=a.repetition_penalty, temperature=a.temperature, top_p=a.top_p, top_k=a.top_k,
            min_p=a.min_p or 0.0, max_completion_length=a.max_new_tokens, logprobs=None,
            generation_kwargs={"stop_token_ids": list(t.eos_ids)},
        )  # fmt: skip

    def __call__(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        """[first completion of each prompt..., second of each...] (token ids, each cut after its first EOS)."""
        if self.engine is None:
            self.engine = self.build()
        step = self.trainer.state.global_step
        if self.synced_step != step:  # the engine starts from the checkpoint on disk: push the weights trained
            self.engine.sync_weights()
            self.synced_step = step
        rows = [p for p in prompt_ids for _ in range(2)]
        _, completions, _, _ = self.engine.generate(rows, None, 2)
        completions = [cut_after_eos(list(c), self.trainer.eos_ids) for c in completions]
        return completions[0::2] + completions[1::2]


def cut_after_eos(ids: list[int], eos_ids: list[int]) -> list[int]:
    """A sampled row up to and including its first EOS (what follows is padding), trl's ``truncate_right``; a row
    without EOS is kept whole."""
    for i, t in enumerate(ids):
        if t in eos_ids:
            return ids[: i + 1]
    return ids
