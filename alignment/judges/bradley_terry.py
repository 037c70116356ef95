"""A Bradley-Terry reward model fitted to a judge's comparisons: the standard RLHF pipeline (Ouyang et al. 2022),
the baseline INPO (Zhang et al. 2024) claims to beat when preferences are general (docs/inpo.md).

The Bradley-Terry model says P(a > b | x) = sigmoid(r(x, a) - r(x, b)) for one scalar reward r. It is fitted by
maximum likelihood on labelled comparisons (chosen, rejected):

    L(r) = - mean log sigmoid(r(x, y_chosen) - r(x, y_rejected))

which is what trl's ``RewardTrainer`` minimises; a sequence-classification head (one output) on the policy's
own architecture is the reward model. When the preference is intransitive (rock-paper-scissors) no reward
explains it: the fit orders the responses anyway (by which wins are the most frequent in the data), and a
policy optimised against it leaves the Nash policy instead of approaching it.

Pipeline (``fit_bradley_terry``, ``alignment judges fit-bt``, or ``judge: bradley_terry`` in a self-play
recipe):

1. sample ``samples_per_prompt`` responses to each of ``prompts`` training prompts from a policy;
2. pair them at random within each prompt (disjoint pairs) and ask the oracle judge for P(a > b); a tie
   (P = 0.5) is dropped, otherwise the label is drawn: a is chosen with probability P (seeded);
3. hold out ``heldout_ratio`` of the comparisons, fit the reward model on the rest with ``RewardTrainer``,
   and write the model, ``comparisons.jsonl`` and ``fit.json`` (pairs, held-out accuracy) to ``out``.

A folder with ``fit.json`` is a finished fit: it is loaded, not refitted.

Example::

    from alignment.judges import TaskJudge
    from alignment.judges.bradley_terry import BTFitConfig, fit_bradley_terry
    judge = fit_bradley_terry("data/sft_model", "rps", TaskJudge("rps"), "outputs/bt-rps", BTFitConfig())
    judge(["Play rock, paper or scissors."], ["paper"], ["rock"])   # [P(paper > rock)] under the fitted r
"""

from __future__ import annotations

import json
import logging
import random
import time
from dataclasses import dataclass
from pathlib import Path

from alignment.errors import RecipeError
from alignment.io import atomic_write_text, read_jsonl, write_jsonl

logger = logging.getLogger("alignment")


@dataclass
class BTFitConfig:
    """How much data and training the fit gets. The defaults (2048 prompts x 4 samples, about 2,600 comparisons
    on rps, 6 epochs = 450 steps of 32 pairs at a constant 3e-4) take the shipped tiny model about 3.5 CPU
    minutes; with 150 steps or a decaying learning rate its reward stays close to flat (held-out accuracy 0.55-0.6
    on rps): the head on the final EOS token needs a few hundred steps before it picks up the moves."""

    prompts: int = 2048
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int | None = None
    epochs: float = 6.0
    learning_rate: float = 3e-4
    batch_size: int = 32
    max_length: int = 256
    heldout_ratio: float = 0.1
    seed: int = 0
    use_cpu: bool = False

    def __post_init__(self):
        if self.prompts < 1 or self.samples_per_prompt < 2:
            raise RecipeError(
                "a Bradley-Terry fit compares two samples of each prompt: it needs prompts >= 1 and samples_per_prompt "
                f">= 2 (--samples; got {self.prompts} and {self.samples_per_prompt})"
            )
        if not 0 <= self.heldout_ratio < 1:
            raise RecipeError(f"heldout_ratio must be in [0, 1), got {self.heldout_ratio}")


def label_comparisons(samples: list[dict], judge, seed: int = 0) -> list[dict]:
    """Oracle-labelled comparisons from sampled responses.

    ``samples``: rows {"prompt", "responses": [K]}. Each prompt's responses (empty ones too) are shuffled and paired
    (0, 1), (2, 3), ...; one judge call scores every pair. Returns conversational preference rows
    {"prompt", "chosen", "rejected", "p"} (p = the judge's P(chosen > rejected)); ties are dropped.
    """
    rng = random.Random(seed)
    pairs = []
    for row in samples:
        responses = list(row["responses"])  # an empty response too: it can lose
        rng.shuffle(responses)
        pairs += [(row["prompt"], responses[i], responses[i + 1]) for i in range(0, len(responses) - 1, 2)]
    if not pairs:
        return []
    p = judge([x for x, _, _ in pairs], [a for _, a, _ in pairs], [b for _, _, b in pairs])
    rows = []
    for (prompt, a, b), pa in zip(pairs, p):
        if pa == 0.5:
            continue
        a_wins = rng.random() < pa
        chosen, rejected = (a, b) if a_wins else (b, a)
        rows.append({"prompt": [{"role": "user", "content": prompt}],
                     "chosen": [{"role": "assistant", "content": chosen}],
                     "rejected": [{"role": "assistant", "content": rejected}],
                     "p": pa if a_wins else 1.0 - pa})  # fmt: skip
    return rows


def pairwise_accuracy(judge, rows: list[dict]) -> float:
    """Share of comparisons where the judge gives the chosen response P > 0.5 (ties count half)."""
    if not rows:
        return float("nan")
    prompts = [r["prompt"][-1]["content"] for r in rows]
    p = judge(prompts, [r["chosen"][-1]["content"] for r in rows], [r["rejected"][-1]["content"] for r in rows])
    return sum(1.0 if v > 0.5 else 0.5 if v == 0.5 else 0.0 for v in p) / len(rows)


def sample_prompts(policy_path: str, task, config: BTFitConfig, dtype: str = "float32", processes=None) -> list[dict]:
    """{"prompt", "responses"} rows: K samples per training prompt (seeded) from the policy; with
    ``processes`` (:class:`alignment.processes.Processes`) each process samples its share."""
    from alignment.generation import SamplingConfig
    from alignment.processes import Processes
    from alignment.sampling import sample_rows

    prompts = task.prompts("train", config.prompts, seed=config.seed + 7919)  # not the loop's prompt draws
    sampling = SamplingConfig(
        max_new_tokens=config.max_new_tokens or task.max_new_tokens, do_sample=True, temperature=config.temperature,
        num_samples=config.samples_per_prompt, batch_size=64, seed=config.seed + 7919,
    )  # fmt: skip
    return sample_rows(policy_path, prompts, sampling, processes or Processes.single(), dtype,
                       desc="Bradley-Terry fit: sampling")  # fmt: skip


def train_reward_model(base_path: str, train_rows: list[dict], out: Path, config: BTFitConfig):
    """Fit a one-output sequence classifier on ``base_path``'s weights with trl's RewardTrainer; save it."""
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    from alignment.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(base_path)
    model = load_model(base_path, head="reward")  # float32; its load report (the new score head) silenced
    logger.info("reward model: %s's weights with a new one-output head (score), trained by this fit", base_path)
    model.config.pad_token_id = tokenizer.pad_token_id
    args = RewardConfig(
        output_dir=str(out / "trainer"), num_train_epochs=config.epochs, learning_rate=config.learning_rate,
        per_device_train_batch_size=config.batch_size, max_length=config.max_length, seed=config.seed,
        lr_scheduler_type="constant_with_warmup", warmup_steps=0.05, logging_steps=10, save_strategy="no",
        report_to="none", use_cpu=config.use_cpu, bf16=False, disable_tqdm=False,
    )  # fmt: skip
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in train_rows]
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    trainer.train()
    trainer.save_model(str(out))
    return trainer


def fit_bradley_terry(policy_path: str, task, judge, out, config: BTFitConfig | None = None,
                      base_path: str | None = None, dtype: str = "float32", processes=None):  # fmt: skip
    """Sample from ``policy_path``, label with ``judge``, fit a Bradley-Terry reward model (on ``base_path``'s
    weights, default the policy's) into ``out``; return it as a :class:`RewardModelJudge`. Resumable: a folder
    with ``fit.json`` is loaded as it is; saved comparisons are not sampled again. Under ``accelerate launch``
    pass ``processes``: they share the sampling and the training (DDP); the main process writes the files."""
    from alignment.judges.reward_model import RewardModelJudge
    from alignment.processes import Processes
    from alignment.tasks import get_task

    config, out, procs = config or BTFitConfig(), Path(out), processes or Processes.single()
    task = get_task(task) if isinstance(task, str) else task
    if (out / "fit.json").exists():
        logger.info("Bradley-Terry judge: loading the finished fit in %s", out)
        return RewardModelJudge(str(out), device=_device(config))
    began = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "comparisons.jsonl"
    if not path.exists():
        samples = sample_prompts(policy_path, task, config, dtype, procs)
        if procs.is_main:
            write_jsonl(path, label_comparisons(samples, judge, config.seed))
        procs.barrier()
    rows = read_jsonl(path)
    if len(rows) < 2:
        raise RuntimeError(f"Bradley-Terry fit: the judge labelled {len(rows)} comparisons (all ties?): too few")
    held = int(len(rows) * config.heldout_ratio)
    train_rows, heldout = rows[held:], rows[:held]
    trainer = train_reward_model(base_path or policy_path, train_rows, out, config)
    if procs.is_main:
        fitted = RewardModelJudge(trainer.model, trainer.processing_class, batch_size=64, max_length=config.max_length)
        summary = {"comparisons": len(rows), "train": len(train_rows), "heldout": len(heldout),
                   "train_accuracy": pairwise_accuracy(fitted, train_rows),
                   "heldout_accuracy": pairwise_accuracy(fitted, heldout) if heldout else None,
                   "steps": trainer.state.global_step, "policy": policy_path, "task": task.name,
                   "processes": procs.world, "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
        atomic_write_text(out / "fit.json", json.dumps(summary, indent=1))  # last: marks the fit finished
        logger.warning("Bradley-Terry judge fitted in %s: %s", out, summary)
    procs.barrier()
    return RewardModelJudge(str(out), device=_device(config))


def _device(config: BTFitConfig):
    import torch

    return "cuda" if torch.cuda.is_available() and not config.use_cpu else None
