"""The self-play loop (INPO, Zhang et al. 2024, Algorithm 1; docs/inpo.md): per iteration t, sample K
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

import contextlib
import dataclasses
import gc
import json
import logging
import time
from pathlib import Path

from alignment.io import atomic_write_text, read_cached_jsonl, read_json, read_jsonl_tolerant, write_jsonl
from alignment.locks import output_dir_lock
from alignment.loops.settings import SelfPlayArguments, make_judge
from alignment.run_settings import check_same, read_settings, write_settings
from alignment.secrets import redact

SELF_PLAY_SETTINGS = "self_play_settings.json"

logger = logging.getLogger("alignment")


def tokenize_pairs(pairs: list[dict], tokenizer, config):
    """The pairs as token ids, truncated as the trainers do (``max_length``, ``truncation_mode``). Tokenized
    here because an empty response is a real sample (EOS alone) that must be able to lose, while the data
    layer refuses an empty message in a user's dataset."""
    from datasets import Dataset

    from alignment.data.tokenize import tokenize_row, truncate_row

    rows = []
    for pair in pairs:
        ids, _ = truncate_row(tokenize_row(pair, tokenizer, config.chat_template), config.max_length,
                              config.truncation_mode)  # fmt: skip
        if ids is not None:
            rows.append(ids)
    return Dataset.from_list(rows)


#: the task metrics an iteration's line shows, where the task has them
LINE_METRICS = ("accuracy", "mean_score", "tv_to_uniform", "exploitability")


def iteration_line(row: dict, iterations: int) -> str:
    """One console line per iteration: its pairs, the task's metrics greedy and sampled, the seconds per stage.

    iteration 3/5: 132 pairs  greedy tv_to_uniform 0.667 exploitability 0.5  sampled tv_to_uniform 0.157
    exploitability 0.0925  (generate 3.7 s, judge 0.0 s, train 6.3 s, evaluate 4.3 s)"""
    parts = [f"iteration {row['iteration']}/{iterations}: {row.get('pairs', 0)} pairs"]
    for mode in ("greedy", "sampled"):
        metrics = row.get(mode) or {}
        shown = [f"{k} {metrics[k]:.4g}" for k in LINE_METRICS if isinstance(metrics.get(k), (int, float))]
        if shown:
            parts.append(f"{mode} " + " ".join(shown))
    seconds = row.get("seconds") or {}
    if seconds:
        parts.append("(" + ", ".join(f"{stage} {value:.1f} s" for stage, value in seconds.items()) + ")")
    return "  ".join(parts)


class SelfPlay:
    """One run of the loop (module docstring); ``run()`` does every unfinished stage."""

    def __init__(self, method_name: str, loop: SelfPlayArguments, model_path: str, config, judge=None,
                 dtype: str = "float32", peft_config=None, info: dict | None = None):  # fmt: skip
        from alignment.loops.prompts import PromptSource
        from alignment.processes import Processes
        from alignment.tasks import get_task
        from alignment.trainers import get_method

        self.method, self.loop, self.config = get_method(method_name), loop, config
        self.start, self.out = model_path, Path(config.output_dir)
        self.dtype, self.peft_config, self.info = dtype, peft_config, info or {}
        self.check_backend()
        _ = config.device  # sets up the processes as the Trainer will (accelerate launch: DDP, gloo on CPU)
        self.procs = Processes()
        self._banner_shown = False  # the trainers' banner: on the first iteration trained in this process
        self.task = get_task(loop.prompt_task) if loop.prompt_task else None
        self.source = PromptSource(self.task, loop.prompt_dataset, loop.prompt_dataset_split, loop.prompt_column)
        self.max_new_tokens = loop.max_new_tokens or (self.task.max_new_tokens if self.task else 512)
        spec = judge if judge is not None else loop.judge
        self.fit_bt = isinstance(spec, str) and spec.partition(":")[0] == "bradley_terry"
        device = getattr(self.procs.state, "device", None)
        device = None if device is None or device.type == "cpu" else device  # each process's GPU
        self.judge = make_judge(spec, loop.prompt_task, device)  # bradley_terry: the oracle the fit is labelled by

    def check_backend(self) -> None:
        if self.loop.generation_backend != "vllm":
            return
        from alignment.vllm_backend import check_backend

        check_backend("vllm")  # an UnavailableError (a RecipeError) when vllm or a GPU is missing

    # ----- paths and bookkeeping ------------------------------------------------------------------
    def folder(self, t: int) -> Path:
        return self.out / f"iteration-{t}"

    def policy_path(self, t: int) -> str:
        """pi_t: the starting model at t = 1, else the model trained at iteration t - 1."""
        return self.start if t == 1 else str(self.folder(t - 1) / "model")

    def logged(self) -> dict[int, dict]:
        """The finished iterations' lines (a truncated line is skipped: that iteration's evaluation reruns)."""
        rows = read_jsonl_tolerant(self.out / "iterations.jsonl")
        return {row["iteration"]: row for row in rows if isinstance(row.get("iteration"), int)}

    def log(self, row: dict) -> None:
        rows = self.logged()
        rows[row["iteration"]] = row
        write_jsonl(self.out / "iterations.jsonl", [rows[k] for k in sorted(rows)])

    def timing(self, t: int, stage: str | None = None, seconds: float | None = None) -> dict:
        path = self.folder(t) / "timing.json"
        times = read_json(path, {})
        if stage is not None:
            times[stage] = round(seconds, 3)
            atomic_write_text(path, json.dumps(times))
        return times

    # ----- stages -----------------------------------------------------------------------------------
    def sample(self, t: int) -> list[dict]:
        """K responses to each of this iteration's prompts from pi_t (each process samples its share)."""
        path = self.folder(t) / "samples.jsonl"
        cached = read_cached_jsonl(path)
        if cached is not None:
            return cached
        from alignment.generation import SamplingConfig
        from alignment.sampling import sample_rows

        began = time.perf_counter()
        prompts = self.source.prompts(t, self.loop.prompts_per_iteration, self.config.seed)
        config = SamplingConfig(
            max_new_tokens=self.max_new_tokens, do_sample=True, temperature=self.loop.temperature,
            num_samples=self.loop.samples_per_prompt, batch_size=self.loop.generation_batch_size,
            seed=self.config.seed + t,
        )  # fmt: skip
        rows = sample_rows(self.policy_path(t), prompts, config, self.procs, self.dtype,
                           self.loop.generation_backend, desc=f"Iteration {t}: sampling pi_{t}")  # fmt: skip
        if self.procs.is_main:
            write_jsonl(path, rows)
            self.timing(t, "generate", time.perf_counter() - began)
        self.procs.barrier()
        return rows

    def rank(self, t: int, samples: list[dict]) -> list[dict]:
        """Each prompt's (winner, loser) by the judge (each process ranks its share of the prompts)."""
        path = self.folder(t) / "pairs.jsonl"
        cached = read_cached_jsonl(path)
        if cached is not None:
            return cached
        from alignment.judges import CountingJudge, rank_candidates

        judge = CountingJudge(self.ranking_judge())
        began = time.perf_counter()
        shard = self.procs.shard(samples)
        # every response takes part, an empty one too: a policy that answers nothing must be able to lose
        ranked = rank_candidates([s["prompt"] for s in shard], [s["responses"] for s in shard], judge,
                                 seed=self.procs.seed(self.config.seed + t)) if shard else []  # fmt: skip
        mine = []
        for s, pair in zip(shard, ranked):
            verdict = {"prompt": s["prompt"], "winner": pair[0] if pair else None, "loser": pair[1] if pair else None}
            mine.append((verdict, (s["responses"][pair[0]], s["responses"][pair[1]]) if pair else None))
        results = self.procs.gather(mine)
        counts = self.procs.gather([(judge.calls, judge.comparisons)])
        pairs = [{"prompt": [{"role": "user", "content": v["prompt"]}],
                  "chosen": [{"role": "assistant", "content": won[0]}],
                  "rejected": [{"role": "assistant", "content": won[1]}]} for v, won in results if won]  # fmt: skip
        if self.procs.is_main:
            write_jsonl(self.folder(t) / "verdicts.jsonl", [v for v, _ in results])
            atomic_write_text(self.folder(t) / "judge.json", json.dumps({"calls": sum(c for c, _ in counts),
                                                                           "comparisons": sum(n for _, n in counts),
                                                                           "processes": self.procs.world}))  # fmt: skip
            write_jsonl(path, pairs)  # last: its presence marks the stage done
            self.timing(t, "judge", time.perf_counter() - began)
        self.procs.barrier()
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
        self.judge = fit_bradley_terry(self.start, self.judge.task, self.judge, self.out / "judge", config,
                                       dtype=self.dtype, processes=self.procs)  # fmt: skip
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
        if read_json(folder / "trained.json") is not None:  # an unreadable one: the training runs again
            return
        if not pairs:
            raise RuntimeError(f"iteration {t}: the judge kept no pair out of {self.loop.prompts_per_iteration} "
                               "prompts (all ties?): nothing to train on")  # fmt: skip
        from alignment.checkpoints import latest_valid_checkpoint
        from alignment.models import load_model, load_tokenizer

        began = time.perf_counter()
        config = dataclasses.replace(self.config, output_dir=str(folder), seed=self.config.seed + t)
        model, tokenizer = load_model(self.policy_path(t), self.dtype), load_tokenizer(self.policy_path(t))
        kwargs = {"anchors": self.anchors(t)} if self.method.anchors else {}
        from alignment.trainers import banner

        data = tokenize_pairs(pairs, tokenizer, config)
        with banner.silenced() if self._banner_shown else contextlib.nullcontext():  # the banner once per run
            trainer = self.method.trainer(model, args=config, train_dataset=data, processing_class=tokenizer,
                                          peft_config=self.peft_config, **kwargs)  # fmt: skip
        self._banner_shown = True
        last = latest_valid_checkpoint(folder) if folder.exists() else None
        if last is not None:
            logger.warning("iteration %d: resuming the training from %s", t, last)
        trainer.train(resume_from_checkpoint=str(last) if last else None)
        if trainer.sigterm.stopped_at is not None:  # a checkpoint, not a trained iteration: rerun to continue
            logger.warning("iteration %d stopped by %s at step %d; rerun the same command to continue", t,
                           trainer.sigterm.signal_name,
                           trainer.sigterm.stopped_at)  # fmt: skip
            raise SystemExit(0)
        self.save_policy(trainer, tokenizer, folder)
        if trainer.is_world_process_zero():
            atomic_write_text(folder / "trained.json", json.dumps({
                "iteration": t, "pairs": len(pairs), "steps": trainer.state.global_step,
                "log_history": trainer.state.log_history}))  # fmt: skip
        del trainer, model
        gc.collect()
        if self.procs.is_main:
            self.timing(t, "train", time.perf_counter() - began)
        self.procs.barrier()

    def save_policy(self, trainer, tokenizer, folder: Path) -> None:
        """pi_{t+1} as a whole model: with PEFT the adapter is merged into the weights it was trained on, so
        the next iteration (and vLLM) loads a plain model and trains a fresh adapter on it; saving the adapter
        alone would lose the earlier iterations' adapters."""
        from alignment.checkpoints import save_final_model

        if self.peft_config is None:
            save_final_model(trainer, str(folder))
            return
        merged = trainer.accelerator.unwrap_model(trainer.model).merge_and_unload()
        if trainer.is_world_process_zero():
            merged.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))

    def evaluate(self, t: int, path: str) -> dict:
        """The task's metrics of a policy on held-out prompts, greedy and sampled (``alignment eval``'s)."""
        from alignment.evaluation import evaluate
        from alignment.models import load_model, load_tokenizer

        if self.task is None:  # prompts from a dataset and no task: nothing to measure here
            return {}
        policy, tokenizer = load_model(path, self.dtype).eval(), load_tokenizer(path)
        return evaluate(policy, tokenizer, self.loop.prompt_task, self.loop.loop_eval_prompts,
                        seed=self.config.seed, max_new_tokens=self.max_new_tokens)  # fmt: skip

    # ----- the loop ---------------------------------------------------------------------------------
    def settings(self) -> dict:
        """The loop's settings, compared when a folder is rerun (alignment.run_settings)."""
        return {"method": self.method.name, "model": self.start, **self.config.to_dict(),
                **dataclasses.asdict(self.loop)}  # fmt: skip

    def check_settings(self) -> None:
        """A rerun of a self-play folder continues the same loop: other settings (eta, samples_per_prompt, seed,
        ...) are an error listing them, unless ``allow_changed_settings`` (then recorded in the run)."""
        saved = read_settings(self.out, SELF_PLAY_SETTINGS)
        changes = check_same(saved, self.settings(), f"self-play folder {self.out}", self.config.allow_changed_settings)
        if changes:
            self.info["setting_changes"] = self.info.get("setting_changes", []) + changes
        if self.procs.is_main and (saved is None or changes):
            write_settings(self.out, self.settings(), SELF_PLAY_SETTINGS)
        self.procs.barrier()

    def run(self) -> list[dict]:
        with output_dir_lock(self.out, self.info.get("command")):
            return self._run()

    def _run(self) -> list[dict]:
        self.out.mkdir(parents=True, exist_ok=True)
        self.check_settings()
        if 0 not in self.logged() and self.procs.is_main:
            self.log({"iteration": 0, "policy": self.start, **self.evaluate(0, self.start)})
            print(iteration_line(self.logged()[0], self.loop.iterations) + "  (the starting policy)", flush=True)
        self.procs.barrier()
        for t in range(1, self.loop.iterations + 1):
            if t in self.logged():
                continue
            samples = self.sample(t)
            pairs = self.rank(t, samples)
            self.train(t, pairs)
            if self.procs.is_main:  # the other processes wait: evaluation is one process's generation
                began = time.perf_counter()
                metrics = self.evaluate(t, str(self.folder(t) / "model"))
                self.timing(t, "evaluate", time.perf_counter() - began)
                judge = read_json(self.folder(t) / "judge.json", {"calls": None, "comparisons": None})
                self.log({"iteration": t, "policy": str(self.folder(t) / "model"), "pairs": len(pairs),
                          "judge_calls": judge["calls"], "judge_comparisons": judge["comparisons"],
                          "processes": self.procs.world, "seconds": self.timing(t), **metrics})  # fmt: skip
                print(iteration_line(self.logged()[t], self.loop.iterations), flush=True)
            self.procs.barrier()
        rows = [self.logged()[k] for k in sorted(self.logged())]
        if self.procs.is_main:
            self.write_summary(rows)
        return rows

    def log_history(self) -> list[dict]:
        """The iterations' training logs in a row, steps counted across iterations, each entry with its t."""
        merged, offset = [], 0
        for t in range(1, self.loop.iterations + 1):
            path = self.folder(t) / "model" / "trained.json"
            trained = read_json(path, {})
            for entry in trained.get("log_history", []):
                merged.append({**entry, "iteration": t, "step": entry.get("step", 0) + offset})
            offset += trained.get("steps", 0)
        return merged

    def write_summary(self, rows: list[dict]) -> None:
        from alignment.evaluation import plain_value

        last = rows[-1]
        summary = {
            "method": self.method.name, "loop": "self_play", **self.info, "base_model": self.start,
            "self_play": dataclasses.asdict(self.loop),
            "hyperparameters": {k: v for k, v in self.config.to_dict().items() if plain_value(v)},
            "iterations": rows, "log_history": self.log_history(),
            "eval": {k: last[k] for k in ("greedy", "sampled") if k in last},
        }  # fmt: skip
        text, path = json.dumps(redact(summary), indent=1, default=str), self.out / "alignment_run.json"
        if not path.exists() or path.read_text() != text:  # a rerun of a finished loop changes nothing
            atomic_write_text(path, text)
