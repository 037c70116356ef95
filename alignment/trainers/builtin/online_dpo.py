"""Online DPO (Guo et al. 2024, arXiv 2402.04792): at every step two completions per prompt are sampled from the
current policy, a judge labels them, and the pair takes a DPO step against the reference, equal to trl 1.16's
``trl.experimental.online_dpo.OnlineDPOTrainer`` given the same completions and labels. The method's config,
trainer and registration; the loss is alignment.losses.online_dpo.

A step: the batch's prompts (rows with a ``prompt`` column, standard or conversational) are rendered as trl does
(the chat template with the generation prompt; no special tokens added), repeated twice and sampled from the policy
(transformers ``generate`` with its KV cache, trl's ``unwrap_model_for_generation`` under DeepSpeed; or vLLM with
``use_vllm``: alignment.trainers.builtin.online_vllm; each completion ends after its first EOS); the judge labels
each pair; the pairs go through the same pair-fused step as offline DPO (the fused op scores both completions: no
logits), the reference a frozen copy or the adapter switched off.

Judges: ``reward_funcs`` (trl's: callables ``f(prompts=, completions=, completion_ids=, **columns) -> [float]``,
summed), or ``judge``: anything with ``scores(prompts, responses)`` (a reward model, alignment.judges.
RewardModelJudge) or a pairwise ``judge(prompts, a, b) -> P(a > b)`` (a task oracle, a pair-preference LM, a
callable). With scores the first completion is chosen when its score is >= the second's (trl's rule), after
``missing_eos_penalty`` is subtracted from the scores of completions without EOS; a pairwise judge picks the first
when P >= 0.5. ``beta`` may be a list: one value per epoch, the last one after.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from alignment.checks import check_bounds
from alignment.configs import PreferenceConfig, choice
from alignment.data import PreferenceCollator
from alignment.data.errors import DataError
from alignment.data.formats import PROMPTS
from alignment.data.tokenize import truncate_row
from alignment.losses.online_dpo import ONLINE_LOSS_TYPES, online_dpo_loss
from alignment.trainers.base import is_stream
from alignment.trainers.builtin.online_vllm import (
    VLLM_BOUNDS,
    VLLM_MODES,
    VLLMSampler,
    check_vllm_available,
    cut_after_eos,
)
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register

logger = logging.getLogger(__name__)


@dataclass
class OnlineDPOConfig(PreferenceConfig):
    """Online DPO (README, "Online DPO"): trl 1.16's OnlineDPOConfig fields that apply, and its defaults."""

    beta: list[float] = field(
        default_factory=lambda: [0.1], metadata={"help": "KL strength beta, or one per epoch (the last one after)."}
    )
    loss_type: str = field(default="sigmoid", metadata={"help": f"One of {ONLINE_LOSS_TYPES} (on summed log-probs)."})
    learning_rate: float = field(default=5e-7, metadata={"help": "The initial learning rate (trl's online default)."})
    max_length: int | None = field(default=512, metadata={"help": "Prompt + completion tokens (the prompt is cut)."})
    max_new_tokens: int = field(default=64, metadata={"help": "Tokens sampled per completion."})
    temperature: float = field(default=0.9, metadata={"help": "Sampling temperature (> 0)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass, in (0, 1]."})
    top_k: int = field(default=0, metadata={"help": "Top-k sampling (0: off)."})
    min_p: float | None = field(default=None, metadata={"help": "Min-p sampling (unset: off)."})
    repetition_penalty: float = field(default=1.0, metadata={"help": "Generation's repetition penalty (> 0)."})
    missing_eos_penalty: float | None = field(
        default=None, metadata={"help": "Subtracted from the score of a completion without EOS (score judges)."}
    )
    judge: str | None = field(
        default=None,
        metadata={"help": "The recipe's judge: task, task:NAME, reward_model:PATH or pair_preference:PATH."},
    )
    use_vllm: bool = field(default=False, metadata={"help": "Sample with vLLM (a CUDA GPU and `pip install vllm`)."})
    vllm_mode: str = field(default="colocate", metadata={"help": "colocate (vLLM in each training process) or "
                                                                 "server (`trl vllm-serve`)."})  # fmt: skip
    vllm_gpu_memory_utilization: float = field(default=0.55, metadata={"help": "colocate: vLLM's share of the GPU."})
    vllm_tensor_parallel_size: int = field(default=1, metadata={"help": "colocate: GPUs per vLLM engine."})
    vllm_enable_sleep_mode: bool = field(default=False, metadata={"help": "colocate: offload vLLM while training."})
    vllm_server_base_url: str | None = field(default=None, metadata={"help": "server: its URL (else host:port)."})
    vllm_server_host: str = field(default="0.0.0.0", metadata={"help": "server: its host."})
    vllm_server_port: int = field(default=8000, metadata={"help": "server: its port."})
    vllm_server_timeout: float = field(default=240.0, metadata={"help": "server: seconds to wait for it."})
    vllm_group_port: int = field(default=51216, metadata={"help": "server: the weight-update group's port."})

    @property
    def betas(self) -> list[float]:
        return list(self.beta) if isinstance(self.beta, (list, tuple)) else [self.beta]

    def __post_init__(self):
        if isinstance(self.beta, (list, tuple)) and len(self.beta) == 1:  # trl's: one value is a float
            self.beta = self.beta[0]
        choice("loss_type", self.loss_type, ONLINE_LOSS_TYPES)
        if not self.betas or not all(isinstance(b, (int, float)) and b > 0 for b in self.betas):
            raise ValueError(f"beta must be > 0 (or a list of values > 0), got {self.beta}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if not self.repetition_penalty > 0:
            raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
        choice("vllm_mode", self.vllm_mode, VLLM_MODES)
        check_bounds(self, VLLM_BOUNDS)
        if self.precompute_ref_logps or self.precompute_ref_log_probs:
            raise ValueError("online DPO samples new completions every step: precompute_ref_logps has nothing to "
                             "precompute; leave it off")  # fmt: skip
        super().__post_init__()


@dataclass
class PromptCollator:
    """Prompt rows -> {column: [values]} (the prompts and any other columns, for reward functions)."""

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, list]:
        if not rows:
            raise ValueError("PromptCollator got an empty batch")
        return {key: [row[key] for row in rows] for key in rows[0]}


def prompt_text(prompt) -> str:
    """A judge's view of a prompt: the text, or a conversation's last message."""
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


@register(
    "online_dpo",
    config=OnlineDPOConfig,
    loss=online_dpo_loss,
    paper="Direct Language Model Alignment from Online AI Feedback (Guo et al. 2024)",
    arxiv="2402.04792",
    anchors=("ref",),
    recipe="quickstart/online_dpo.yaml",
    summary="DPO on pairs sampled from the current policy at every step and labelled by a judge",
)
class OnlineDPOTrainer(PreferenceTrainer):
    console_metrics = ("rewards/margins", "objective/scores")
    completions = PROMPTS  # rows of prompts: the completions are sampled
    samples_completions = True
    supports_packing = False  # the pairs are built inside the step

    def __init__(self, model, ref_model=None, reward_funcs=None, args: OnlineDPOConfig | None = None,
                 data_collator=None, train_dataset=None, eval_dataset=None, processing_class=None,
                 judge=None, peft_config=None, **kwargs):  # fmt: skip
        if train_dataset is None:
            raise ValueError("`train_dataset` is required")
        if ref_model is not None and ref_model is model:
            raise ValueError("`model` and `ref_model` cannot be the same object. If you want `ref_model` to be the "
                             "same as `model`, either omit the `ref_model` argument or pass `None`.")  # fmt: skip
        args = args or OnlineDPOConfig()
        self.reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else reward_funcs
        if callable(self.reward_funcs):
            self.reward_funcs = [self.reward_funcs]
        if (judge is None) == (self.reward_funcs is None):
            raise ValueError("online DPO needs one judge: reward_funcs=[f, ...] (trl's) or judge=... (a reward model, "
                             "a task oracle, a pair-preference LM, a callable; `judge:` in a recipe)")  # fmt: skip
        for f in self.reward_funcs or []:
            if isinstance(f, nn.Module):
                raise NotImplementedError("a reward model as a reward function: pass judge=RewardModelJudge(model)")
        self.judge = judge
        self.scored = self.reward_funcs is not None or hasattr(judge, "scores")
        if args.missing_eos_penalty is not None and not self.scored:
            raise ValueError("missing_eos_penalty lowers a completion's score: the judge gives P(a > b), not scores; "
                             "use a reward model or reward_funcs, or leave it unset")  # fmt: skip
        if args.use_vllm:
            check_vllm_available()  # before the model loads
        self._online: dict[str, list[float]] = {}
        super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
                         peft_config=peft_config, **kwargs)  # fmt: skip
        self.pair_collator = PreferenceCollator(self.processing_class.pad_token_id, self.args.pad_to_multiple_of)
        self.eos_ids = [self.processing_class.eos_token_id]
        self.vllm = VLLMSampler(self) if args.use_vllm else None

    # ----- data: prompts --------------------------------------------------------------------------------------
    def make_dataset(self, dataset, tokenizer, args, name: str):
        if dataset is None:
            return None
        if is_stream(dataset):
            if name == "train" and args.max_steps <= 0:
                raise ValueError("a streaming train dataset (IterableDataset) has no length: set max_steps (> 0)")
            return dataset
        if "prompt" not in (dataset.column_names or []):
            raise DataError(f"{name} dataset: online DPO samples its completions from prompts: a 'prompt' column "
                            f"is needed (got {dataset.column_names})")  # fmt: skip
        for number, prompt in enumerate(dataset["prompt"], start=1):
            if not (isinstance(prompt, str) and prompt) and not (isinstance(prompt, list) and prompt):
                raise DataError(f"{name} dataset, row {number}, field 'prompt': expected text or a list of "
                                f"messages, got {prompt!r}")  # fmt: skip
        return dataset

    def make_collator(self, tokenizer, args):
        return PromptCollator()

    def probe_dataset(self):
        return None  # no fixed pairs to probe: they are new every step

    def _get_num_items_in_batch(self, batch_samples, device):
        return None  # the loss is a mean over pairs

    @property
    def beta(self) -> float:
        """trl's schedule: ``beta[epoch]`` while there is one, then the last."""
        betas = self.args.betas
        epoch = int(self.state.epoch or 0)
        return betas[epoch] if epoch < len(betas) else betas[-1]

    # ----- a step: sample, judge, train -----------------------------------------------------------------------
    def prompt_ids(self, prompts: list) -> list[list[int]]:
        """trl's rendering: the chat template with the generation prompt for conversations, the text as it is
        otherwise, tokenized without special tokens."""
        from trl.data_utils import maybe_apply_chat_template

        texts = [maybe_apply_chat_template({"prompt": p}, self.processing_class)["prompt"] for p in prompts]
        return [list(self.processing_class(text=t, add_special_tokens=False)["input_ids"]) for t in texts]

    def generation_config(self):
        from transformers import GenerationConfig

        tok, a = self.processing_class, self.args
        return GenerationConfig(max_new_tokens=a.max_new_tokens, do_sample=True, pad_token_id=tok.pad_token_id,
                                bos_token_id=tok.bos_token_id, eos_token_id=self.eos_ids, temperature=a.temperature,
                                top_k=a.top_k, top_p=a.top_p, repetition_penalty=a.repetition_penalty,
                                min_p=a.min_p, use_cache=True)  # fmt: skip

    @torch.no_grad()
    def sample(self, prompt_ids: list[list[int]]) -> list[list[int]]:
        """Two completions per prompt from the current policy: [first of each prompt..., second of each...]
        (token ids, each cut after its first EOS), from vLLM with ``use_vllm``. Tests inject fixed completions here."""
        if self.vllm is not None:
            return self.vllm(prompt_ids)
        from trl.models.utils import unwrap_model_for_generation

        pad = self.processing_class.pad_token_id
        rows = prompt_ids + prompt_ids
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=self.accelerator.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=self.accelerator.device)
        config = self.generation_config()
        with unwrap_model_for_generation(self.model_wrapped, self.accelerator,
                                         generation_kwargs=config.to_diff_dict()) as model:  # fmt: skip
            was_training = model.training
            model.eval()
            try:
                out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            finally:
                model.train(was_training)
        return [cut_after_eos(row.tolist(), self.eos_ids) for row in out[:, width:]]

    def scores(
        self, prompts: list, completions: list[list[int]], texts: list[str], inputs: dict
    ) -> torch.Tensor | None:
        """[2B] scores of the completions (``texts``: decoded; None for a pairwise judge)."""
        if self.reward_funcs is not None:
            shown = texts if isinstance(prompts[0], str) else [[{"role": "assistant", "content": t}] for t in texts]
            extra = {k: v * 2 for k, v in inputs.items() if k != "prompt" and isinstance(v, list)}
            total = torch.zeros(len(texts))
            for f in self.reward_funcs:
                values = f(prompts=prompts * 2, completions=shown, completion_ids=completions, trainer_state=self.state,
                           **extra)  # fmt: skip
                total += torch.tensor([torch.nan if v is None else float(v) for v in values]).nan_to_num(0.0)
            return total
        if self.scored:
            return torch.tensor(self.judge.scores([prompt_text(p) for p in prompts] * 2, texts), dtype=torch.float32)
        return None

    def label(self, prompts: list, completions: list[list[int]], inputs: dict) -> tuple[torch.Tensor, dict]:
        """[B] bool: the first completion of each prompt is the chosen one; and trl's judge statistics."""
        n = len(prompts)
        eos = torch.tensor([any(t in self.eos_ids for t in c) for c in completions])
        stats = {"val/contain_eos_token": eos.float().mean().item()}
        texts = self.processing_class.batch_decode(completions, skip_special_tokens=True)
        scores = self.scores(prompts, completions, texts, inputs)
        if scores is None:
            p = torch.tensor(self.judge([prompt_text(x) for x in prompts], texts[:n], texts[n:]))
            return p >= 0.5, stats
        if self.args.missing_eos_penalty is not None:
            scores[~eos] -= self.args.missing_eos_penalty
        first = scores[:n] >= scores[n:]
        chosen = torch.where(first, scores[:n], scores[n:])
        rejected = torch.where(first, scores[n:], scores[:n])
        stats["objective/scores"] = scores.mean().item()
        stats["objective/scores_margin"] = (chosen - rejected).mean().item()
        return first, stats

    def pairs(self, inputs: dict) -> tuple[list[dict], dict]:
        """The step's pairs in the collator's rows, and its statistics (the judge's, and the seconds spent
        sampling and judging: ``time/generation``, ``time/judge``)."""
        prompts = list(inputs["prompt"])
        began = time.perf_counter()
        prompt_ids = self.prompt_ids(prompts)
        completions = self.sample(prompt_ids)
        sampled = time.perf_counter()
        first, stats = self.label(prompts, completions, inputs)
        stats["time/generation"], stats["time/judge"] = sampled - began, time.perf_counter() - sampled
        n, rows = len(prompts), []
        for i in range(n):
            a, b = completions[i], completions[n + i]
            chosen, rejected = (a, b) if first[i] else (b, a)
            row, _ = truncate_row({"prompt_ids": prompt_ids[i], "chosen_ids": chosen, "rejected_ids": rejected},
                                  self.args.max_length, "keep_end")  # fmt: skip
            rows.append(row)
        return rows, stats

    def training_step(self, model, inputs, num_items_in_batch=None):
        rows, stats = self.pairs(inputs)
        began = time.perf_counter()
        batch = self.pair_collator(rows)
        loss = super().training_step(model, batch, None)
        stats["time/train"] = time.perf_counter() - began
        self.record_online(stats)
        return loss

    def pair_losses(self, chunk, anchors, token_scale):
        ref = anchors["ref"]
        return online_dpo_loss(chunk.chosen_logps, chunk.rejected_logps, ref.chosen, ref.rejected, self.beta,
                               self.args.loss_type)  # fmt: skip

    def record_online(self, stats: dict) -> None:
        """trl's online statistics of the step, from its DPO metrics (means over the pairs and processes; the
        judge's statistics and the timings are means over the processes too):
        objective/kl = mean over the 2B sequences of sum(log pi - log pi_ref), entropy = -mean sum(log pi),
        non_score_reward = -beta * kl, rlhf_reward = mean score + non_score_reward; and the judge's."""
        m, beta = self._metrics["train"], self.beta
        kl = (m["rewards/chosen"][-1] + m["rewards/rejected"][-1]) / (2 * beta)
        values = {"objective/kl": kl, "objective/entropy": -(m["logps/chosen"][-1] + m["logps/rejected"][-1]) / 2,
                  "objective/non_score_reward": -beta * kl, "beta": beta}  # fmt: skip
        self.log_step_metrics(stats, "train")  # the judge's and the timings: means over the processes
        if "objective/scores" in stats:
            values["objective/rlhf_reward"] = m["objective/scores"][-1] - beta * kl
        for key, value in values.items():
            self._metrics["train"][key].append(value)

    def kernel_path(self) -> str:
        sampler = f"vLLM, {self.args.vllm_mode}" if self.args.use_vllm else "generate, KV cache"
        return super().kernel_path() + f"; completions sampled every step ({sampler})"
