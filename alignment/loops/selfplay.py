"""The self-play loop (INPO, Zhang et al. 2024, Algorithm 1; specs/inpo.md): per iteration t, sample K
responses per prompt from pi_t, rank them with a judge, train pi_{t+1} from pi_t's weights on the pairs,
evaluate. With the INPO trainer this is INPO; with the DPO trainer and a judge it is iterative DPO.

Every stage leaves a file in ``OUTPUT_DIR/iteration-<t>/`` (written atomically), and a stage whose file is
there is not run again, so a rerun of the same command resumes at the first unfinished stage:

- ``samples.jsonl``: {"prompt", "responses": [K]} per prompt (seeded: seed + t);
- ``verdicts.jsonl``: {"prompt", "winner", "loser"} per prompt (indices into responses, or null);
  ``pairs.jsonl``: the conversational preference rows the trainer gets;
- ``model/`` with ``trained.json`` once pi_{t+1} is saved (the Trainer's checkpoints inside it let an
  interrupted training resume when ``save_strategy`` keeps them);
- one line per iteration in ``OUTPUT_DIR/iterations.jsonl`` (iteration 0 is the starting model): the task's
  greedy and sampled metrics of the policy, the number of pairs, judge calls and comparisons, and the seconds
  spent generating, judging, training and evaluating;
- at the end ``OUTPUT_DIR/alignment_run.json``: the settings, the iterations and the training logs of every
  iteration one after the other (steps counted across iterations), which ``alignment report`` renders.

Anchors: INPO's ``ref`` is the starting (SFT) model at every iteration and ``prev`` pi_t (a frozen copy of
the starting weights of that iteration); a method with only ``ref`` (DPO) uses pi_t (``ref_policy:
previous``, the default) or the SFT model (``ref_policy: sft``).
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from alignment.io import atomic_write_text, read_jsonl, write_jsonl

logger = logging.getLogger("alignment")


@dataclass
class SelfPlayArguments:
    """The loop's settings (recipe fields)."""

    iterations: int = field(default=3, metadata={"help": "Self-play iterations T."})
    samples_per_prompt: int = field(default=8, metadata={"help": "Responses K sampled per prompt from pi_t."})
    prompts_per_iteration: int = field(default=256, metadata={"help": "Training prompts per iteration."})
    prompt_task: str = field(default="rps", metadata={"help": "The task whose training prompts are sampled."})
    judge: str = field(
        default="task",
        metadata={"help": "task (the prompt task's oracle), task:NAME, reward_model:PATH, pair_preference:PATH, "
                  "or bradley_terry[:NAME] (a reward model fitted to the task's oracle on pi_1's samples)."},
    )  # fmt: skip
    judge_fit_prompts: int = field(default=2048, metadata={"help": "bradley_terry: prompts sampled for the fit."})
    judge_fit_epochs: float = field(default=6.0, metadata={"help": "bradley_terry: epochs of the reward model."})
    judge_fit_learning_rate: float = field(default=3e-4, metadata={"help": "bradley_terry: its learning rate."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature of the responses."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Response length (default: the task's)."})
    generation_batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch."})
    ref_policy: str = field(
        default="previous", metadata={"help": "A method with only a reference (DPO): previous (pi_t) or sft."}
    )
    loop_eval_prompts: int = field(default=200, metadata={"help": "Held-out prompts evaluated after each iteration."})

    def __post_init__(self):
        for name in ("iterations", "samples_per_prompt", "prompts_per_iteration"):
            if getattr(self, name) < (2 if name == "samples_per_prompt" else 1):
                raise ValueError(f"{name} must be >= {2 if name == 'samples_per_prompt' else 1}")
        if self.ref_policy not in ("previous", "sft"):
            raise ValueError(f"ref_policy must be previous or sft, got {self.ref_policy!r}")


def make_judge(spec, task_name: str):
    """A judge from its recipe string (or a judge object, returned as is). ``bradley_terry[:NAME]`` gives
    the oracle it is fitted to (the loop fits it: :meth:`SelfPlay.ranking_judge`)."""
    from alignment import judges

    if not isinstance(spec, str):
        return spec
    kind, _, arg = spec.partition(":")
    if kind in ("task", "bradley_terry"):
        return judges.TaskJudge(arg or task_name)
    if kind == "reward_model" and arg:
        return judges.RewardModelJudge(arg)
    if kind == "pair_preference" and arg:
        return judges.PairPreferenceJudge(arg)
    raise ValueError(
        "judge must be task, task:NAME, reward_model:PATH, pair_preference:PATH, bradley_terry or "
        f"bradley_terry:NAME; got {spec!r}"
    )


class SelfPlay:
    """One run of the loop (module docstring); ``run()`` does every unfinished stage."""

    def __init__(self, method_name: str, loop: SelfPlayArguments, model_path: str, config, judge=None,
                 dtype: str = "float32", peft_config=None, info: dict | None = None):  # fmt: skip
        from alignment.tasks import get_task
        from alignment.trainers import get_method

        self.method, self.loop, self.config = get_method(method_name), loop, config
        self.start = model_path
        self.out = Path(config.output_dir)
        self.task = get_task(loop.prompt_task)
        spec = judge if judge is not None else loop.judge
        self.fit_bt = isinstance(spec, str) and spec.partition(":")[0] == "bradley_terry"
        self.judge = make_judge(spec, loop.prompt_task)  # with bradley_terry: the oracle the fit is labelled by
        self.dtype, self.peft_config, self.info = dtype, peft_config, info or {}
        self.max_new_tokens = loop.max_new_tokens or self.task.max_new_tokens

    # ----- paths and bookkeeping ------------------------------------------------------------------
    def folder(self, t: int) -> Path:
        return self.out / f"iteration-{t}"

    def policy_path(self, t: int) -> str:
        """pi_t: the starting model at t = 1, else the model trained at iteration t - 1."""
        return self.start if t == 1 else str(self.folder(t - 1) / "model")

    def logged(self) -> dict[int, dict]:
        path = self.out / "iterations.jsonl"
        return {row["iteration"]: row for row in read_jsonl(path)} if path.exists() else {}

    def log(self, row: dict) -> None:
        rows = self.logged()
        rows[row["iteration"]] = row
        write_jsonl(self.out / "iterations.jsonl", [rows[k] for k in sorted(rows)])

    def timing(self, t: int, stage: str | None = None, seconds: float | None = None) -> dict:
        path = self.folder(t) / "timing.json"
        times = json.loads(path.read_text()) if path.exists() else {}
        if stage is not None:
            times[stage] = round(seconds, 3)
            atomic_write_text(path, json.dumps(times))
        return times

    # ----- stages -----------------------------------------------------------------------------------
    def sample(self, t: int) -> list[dict]:
        path = self.folder(t) / "samples.jsonl"
        if path.exists():
            return read_jsonl(path)
        from alignment.generation import SamplingConfig, generate_responses
        from alignment.models import load_model, load_tokenizer

        began = time.perf_counter()
        policy, tokenizer = load_model(self.policy_path(t), self.dtype).eval(), load_tokenizer(self.policy_path(t))
        prompts = self.task.prompts("train", self.loop.prompts_per_iteration, seed=self.config.seed + t)
        config = SamplingConfig(
            max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.loop.temperature,
            num_samples=self.loop.samples_per_prompt, batch_size=self.loop.generation_batch_size,
            seed=self.config.seed + t,
        )  # fmt: skip
        drawn = generate_responses(policy, tokenizer, prompts, config, desc=f"Iteration {t}: sampling pi_{t}")
        rows = [{"prompt": p, "responses": list(r)} for p, r in zip(prompts, drawn)]
        write_jsonl(path, rows)
        self.timing(t, "generate", time.perf_counter() - began)
        return rows

    def rank(self, t: int, samples: list[dict]) -> list[dict]:
        path = self.folder(t) / "pairs.jsonl"
        if path.exists():
            return read_jsonl(path)
        from alignment.judges import CountingJudge, rank_candidates

        judge = CountingJudge(self.ranking_judge())
        began = time.perf_counter()
        prompts = [s["prompt"] for s in samples]
        # an empty response is not a valid message: it does not take part
        kept = [[i for i, r in enumerate(s["responses"]) if r.strip()] for s in samples]
        candidates = [[s["responses"][i] for i in k] for s, k in zip(samples, kept)]
        ranked = rank_candidates(prompts, candidates, judge, seed=self.config.seed + t)
        verdicts, pairs = [], []
        for prompt, cands, k, pair in zip(prompts, candidates, kept, ranked):
            verdicts.append({"prompt": prompt, "winner": k[pair[0]] if pair else None,
                             "loser": k[pair[1]] if pair else None})  # fmt: skip
            if pair:
                pairs.append({"prompt": [{"role": "user", "content": prompt}],
                              "chosen": [{"role": "assistant", "content": cands[pair[0]]}],
                              "rejected": [{"role": "assistant", "content": cands[pair[1]]}]})  # fmt: skip
        write_jsonl(self.folder(t) / "verdicts.jsonl", verdicts)
        atomic_write_text(self.folder(t) / "judge.json", json.dumps({"calls": judge.calls,
                                                                       "comparisons": judge.comparisons}))  # fmt: skip
        write_jsonl(path, pairs)  # last: its presence marks the stage done
        self.timing(t, "judge", time.perf_counter() - began)
        return pairs

    def ranking_judge(self):
        """The judge that ranks samples: the configured one, or with ``bradley_terry`` a reward model fitted
        once (in ``OUTPUT_DIR/judge``, resumable) to the oracle's comparisons of the starting model's samples
        (the standard RLHF pipeline)."""
        if not self.fit_bt:
            return self.judge
        from alignment.judges.bradley_terry import BTFitConfig, fit_bradley_terry

        config = BTFitConfig(
            prompts=self.loop.judge_fit_prompts, epochs=self.loop.judge_fit_epochs,
            learning_rate=self.loop.judge_fit_learning_rate, max_new_tokens=self.max_new_tokens,
            temperature=self.loop.temperature, seed=self.config.seed, use_cpu=self.config.use_cpu,
        )  # fmt: skip
        self.judge = fit_bradley_terry(self.start, self.task, self.judge, self.out / "judge", config, dtype=self.dtype)
        self.fit_bt = False
        return self.judge

    def anchors(self, t: int) -> dict:
        names = self.method.anchors
        if "prev" in names:  # INPO: ref = the SFT model, prev = pi_t (the default copy of the starting weights)
            return {"ref": self.start} if t > 1 else {}
        if "ref" in names and self.loop.ref_policy == "sft" and t > 1:
            return {"ref": self.start}
        return {}

    def train(self, t: int, pairs: list[dict]) -> None:
        folder = self.folder(t) / "model"
        if (folder / "trained.json").exists():
            return
        if not pairs:
            raise RuntimeError(f"iteration {t}: the judge kept no pair out of {self.loop.prompts_per_iteration} "
                               "prompts (all ties?): nothing to train on")  # fmt: skip
        from datasets import Dataset
        from transformers.trainer_utils import get_last_checkpoint

        from alignment.models import load_model, load_tokenizer

        began = time.perf_counter()
        config = dataclasses.replace(self.config, output_dir=str(folder), seed=self.config.seed + t)
        model, tokenizer = load_model(self.policy_path(t), self.dtype), load_tokenizer(self.policy_path(t))
        kwargs = {"anchors": self.anchors(t)} if self.method.anchors else {}
        trainer = self.method.trainer(model, args=config, train_dataset=Dataset.from_list(pairs),
                                      processing_class=tokenizer, peft_config=self.peft_config, **kwargs)  # fmt: skip
        last = get_last_checkpoint(str(folder)) if folder.exists() else None
        trainer.train(resume_from_checkpoint=last)
        trainer.save_model(str(folder))
        if trainer.is_world_process_zero():
            atomic_write_text(folder / "trained.json", json.dumps({
                "iteration": t, "pairs": len(pairs), "steps": trainer.state.global_step,
                "log_history": trainer.state.log_history}))  # fmt: skip
        del trainer, model
        gc.collect()
        self.timing(t, "train", time.perf_counter() - began)

    def evaluate(self, t: int, path: str) -> dict:
        """The task's metrics of a policy on held-out prompts, greedy and sampled (``alignment eval``'s)."""
        from alignment.models import load_model, load_tokenizer
        from alignment.run import evaluate

        policy, tokenizer = load_model(path, self.dtype).eval(), load_tokenizer(path)
        return evaluate(policy, tokenizer, self.loop.prompt_task, self.loop.loop_eval_prompts,
                        seed=self.config.seed, max_new_tokens=self.max_new_tokens)  # fmt: skip

    # ----- the loop ---------------------------------------------------------------------------------
    def run(self) -> list[dict]:
        self.out.mkdir(parents=True, exist_ok=True)
        if 0 not in self.logged():
            self.log({"iteration": 0, "policy": self.start, **self.evaluate(0, self.start)})
        for t in range(1, self.loop.iterations + 1):
            if t in self.logged():
                continue
            samples = self.sample(t)
            pairs = self.rank(t, samples)
            self.train(t, pairs)
            began = time.perf_counter()
            metrics = self.evaluate(t, str(self.folder(t) / "model"))
            self.timing(t, "evaluate", time.perf_counter() - began)
            judge = json.loads((self.folder(t) / "judge.json").read_text())
            self.log({"iteration": t, "policy": str(self.folder(t) / "model"), "pairs": len(pairs),
                      "judge_calls": judge["calls"], "judge_comparisons": judge["comparisons"],
                      "seconds": self.timing(t), **metrics})  # fmt: skip
            logger.info("self-play iteration %d/%d: %d pairs", t, self.loop.iterations, len(pairs))
        rows = [self.logged()[k] for k in sorted(self.logged())]
        self.write_summary(rows)
        return rows

    def log_history(self) -> list[dict]:
        """The iterations' training logs in a row, steps counted across iterations, each entry with its t."""
        merged, offset = [], 0
        for t in range(1, self.loop.iterations + 1):
            path = self.folder(t) / "model" / "trained.json"
            trained = json.loads(path.read_text()) if path.exists() else {}
            for entry in trained.get("log_history", []):
                merged.append({**entry, "iteration": t, "step": entry.get("step", 0) + offset})
            offset += trained.get("steps", 0)
        return merged

    def write_summary(self, rows: list[dict]) -> None:
        from alignment.run import _plain

        last = rows[-1]
        summary = {
            "method": self.method.name, "loop": "self_play", **self.info, "base_model": self.start,
            "self_play": dataclasses.asdict(self.loop),
            "hyperparameters": {k: v for k, v in self.config.to_dict().items() if _plain(v)},
            "iterations": rows, "log_history": self.log_history(),
            "eval": {k: last[k] for k in ("greedy", "sampled") if k in last},
        }  # fmt: skip
        text, path = json.dumps(summary, indent=1, default=str), self.out / "alignment_run.json"
        if not path.exists() or path.read_text() != text:  # a rerun of a finished loop changes nothing
            atomic_write_text(path, text)
