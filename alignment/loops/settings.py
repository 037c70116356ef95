"""The self-play loop's settings (recipe fields under ``loop: self_play``) and the judge they name."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SelfPlayArguments:
    """The loop's settings (recipe fields)."""

    iterations: int = field(default=3, metadata={"help": "Self-play iterations T."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Responses K sampled per prompt from pi_t."})
    prompts_per_iteration: int = field(default=256, metadata={"help": "Training prompts per iteration."})
    prompt_task: str | None = field(
        default="rps", metadata={"help": "The synthetic task whose prompts are sampled and whose metrics are logged."}
    )
    prompt_dataset: str | None = field(
        default=None, metadata={"help": "Prompts from a dataset (file, folder or Hub name) instead of the task's."}
    )
    prompt_dataset_split: str = field(default="train", metadata={"help": "The prompt dataset's split."})
    prompt_column: str = field(default="prompt", metadata={"help": "The prompt dataset's prompt column."})
    judge: str = field(
        default="task",
        metadata={"help": "task (the prompt task's oracle), task:NAME, reward_model:PATH, pair_preference:PATH, "
                  "or bradley_terry[:NAME] (a reward model fitted to the task's oracle on pi_1's samples)."},
    )  # fmt: skip
    judge_fit_prompts: int = field(default=2048, metadata={"help": "bradley_terry: prompts sampled for the fit."})
    judge_fit_epochs: float = field(default=6.0, metadata={"help": "bradley_terry: epochs of the reward model."})
    judge_fit_learning_rate: float = field(default=3e-4, metadata={"help": "bradley_terry: its learning rate."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the responses."})
    max_new_tokens: int | None = field(
        default=None, metadata={"help": "Response length (default: the task's; 512 with a prompt dataset)."}
    )
    generation_batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch."})
    generation_backend: str = field(
        default="transformers", metadata={"help": "transformers (model.generate) or vllm (a CUDA GPU with vllm)."}
    )
    ref_policy: str = field(
        default="previous", metadata={"help": "A method with only a reference (DPO): previous (pi_t) or sft."}
    )
    loop_eval_prompts: int = field(default=200, metadata={"help": "Held-out prompts evaluated after each iteration."})

    def __post_init__(self):
        for name in ("iterations", "samples_per_prompt", "prompts_per_iteration"):
            if getattr(self, name) < (2 if name == "samples_per_prompt" else 1):
                raise ValueError(f"{name} must be >= {2 if name == 'samples_per_prompt' else 1}")
        if self.prompt_task is None and self.prompt_dataset is None:
            raise ValueError("the self-play loop needs prompt_task or prompt_dataset")
        if self.generation_backend not in ("transformers", "vllm"):
            raise ValueError(f"generation_backend must be transformers or vllm, got {self.generation_backend!r}")
        if self.ref_policy not in ("previous", "sft"):
            raise ValueError(f"ref_policy must be previous or sft, got {self.ref_policy!r}")


def make_judge(spec, task_name: str | None, device=None):
    """A judge from its recipe string (or a judge object, returned as is). ``bradley_terry[:NAME]`` gives
    the oracle it is fitted to (the loop fits it: :meth:`SelfPlay.ranking_judge`). Model judges load on
    ``device`` (default: where they load, the CPU)."""
    from alignment import judges

    if not isinstance(spec, str):
        return spec
    kind, _, arg = spec.partition(":")
    if kind in ("task", "bradley_terry"):
        if not (arg or task_name):
            raise ValueError(f"judge {spec!r} needs a task: set prompt_task or write {kind}:NAME")
        return judges.TaskJudge(arg or task_name)
    if kind == "reward_model" and arg:
        return judges.RewardModelJudge(arg, device=device)
    if kind == "pair_preference" and arg:
        return judges.PairPreferenceJudge(arg, device=device)
    raise ValueError(
        "judge must be task, task:NAME, reward_model:PATH, pair_preference:PATH, bradley_terry or "
        f"bradley_terry:NAME; got {spec!r}"
    )
