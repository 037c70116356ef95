"""The self-play loop's settings (recipe fields under ``loop: self_play``) and the judge they name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alignment.checks import check_bounds, check_finite
from alignment.tasks import TASKS

BOUNDS = {
    "iterations": ">= 1",
    "samples_per_prompt": ">= 2",
    "prompts_per_iteration": ">= 1",
    "judge_fit_prompts": ">= 1",
    "judge_fit_epochs": "> 0",
    "judge_fit_learning_rate": "> 0",
    "temperature": "> 0",
    "max_new_tokens": ">= 1",
    "generation_batch_size": ">= 1",
    "loop_eval_prompts": ">= 1",
}
JUDGE_FORMS = "task, task:NAME, reward_model:PATH, pair_preference:PATH, bradley_terry or bradley_terry:NAME"


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
        check_finite(self)
        check_bounds(self, BOUNDS)
        if self.prompt_task is None and self.prompt_dataset is None:
            raise ValueError("the self-play loop needs prompt_task or prompt_dataset")
        if self.prompt_task is not None and self.prompt_task not in TASKS:
            raise ValueError(f"prompt_task must be one of {sorted(TASKS)}, got {self.prompt_task!r}")
        if self.generation_backend not in ("transformers", "vllm"):
            raise ValueError(f"generation_backend must be transformers or vllm, got {self.generation_backend!r}")
        if self.ref_policy not in ("previous", "sft"):
            raise ValueError(f"ref_policy must be previous or sft, got {self.ref_policy!r}")


def check_judge(spec, task_name: str | None) -> None:
    """A judge's recipe string names a known kind, a known task and (for a model judge given as a local path)
    a folder that exists: checked when the recipe is read, before anything is loaded or sampled."""
    if not isinstance(spec, str):
        return
    kind, _, arg = spec.partition(":")
    if kind in ("task", "bradley_terry"):
        if not (arg or task_name):
            raise ValueError(f"judge {spec!r} needs a task: set prompt_task or write {kind}:NAME")
        if (arg or task_name) not in TASKS:
            raise ValueError(f"judge {spec!r}: the task must be one of {sorted(TASKS)}, got {arg or task_name!r}")
    elif kind in ("reward_model", "pair_preference") and arg:
        local = arg.startswith((".", "/", "~")) or arg.count("/") > 1  # else a Hub name (org/name) may be meant
        if local and not Path(arg).expanduser().is_dir():
            raise ValueError(f"judge {spec!r}: {arg} is not a model folder")
    else:
        raise ValueError(f"judge must be {JUDGE_FORMS}; got {spec!r}")


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
    raise ValueError(f"judge must be {JUDGE_FORMS}; got {spec!r}")
