"""The common shape of a synthetic task with a programmatic oracle (README, "Synthetic tasks").

A task is a finite pool of prompts, split into train and eval by a hash of the prompt text (so the two
splits never overlap, whatever the seed), a noisy reference-response generator, an oracle
P(y1 > y2 | x) in [0, 1], a pair builder and an evaluator that scores a generation function.

Everything is deterministic given a seed: the generators draw from ``random.Random(seed)`` only.
"""

from __future__ import annotations

import hashlib
import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from functools import cached_property

SPLITS = ("train", "eval")
GenerateFn = Callable[[list[str]], list[str]]
LogRatioFn = Callable[[list[str], list[str]], Sequence[float]]


def split_of(prompt: str, eval_fraction: float = 0.1) -> str:
    """Assign a prompt to "train" or "eval" by a stable hash of its text (sha256, not Python's hash)."""
    digest = hashlib.sha256(prompt.encode("utf-8")).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "eval" if bucket < eval_fraction else "train"


class Task(ABC):
    """A synthetic preference task. Subclasses define the prompt space, responses and the oracle."""

    name: str = ""
    #: Tokens a generated response may take (what ``alignment eval`` and on-policy sampling allow).
    max_new_tokens: int = 32
    #: Probability that a reference (SFT) response is a bad one, unless the caller overrides it.
    default_noise: float = 0.3
    #: The noise of the two candidates the pair builder draws (higher: more decisive pairs).
    pair_noise: float = 0.5

    # ----- prompts -------------------------------------------------------------------------------
    @abstractmethod
    def all_prompts(self) -> list[str]:
        """Every prompt of the task, in a fixed order."""

    @cached_property
    def _pools(self) -> dict[str, list[str]]:
        pools: dict[str, list[str]] = {s: [] for s in SPLITS}
        for prompt in self.all_prompts():
            pools[split_of(prompt)].append(prompt)
        return pools

    def prompt_pool(self, split: str) -> list[str]:
        """All prompts of one split ("train" or "eval"); the two pools are disjoint."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self._pools[split]

    def prompts(self, split: str, n: int, seed: int = 0) -> list[str]:
        """``n`` prompts of ``split``, drawn with ``seed``: distinct while the pool lasts, then repeated."""
        pool = self.prompt_pool(split)
        rng = random.Random(f"{self.name}-prompts-{split}-{seed}")
        if n <= len(pool):
            return rng.sample(pool, n)
        return rng.sample(pool, len(pool)) + rng.choices(pool, k=n - len(pool))

    # ----- responses and oracle ------------------------------------------------------------------
    @abstractmethod
    def reference_response(self, prompt: str, rng: random.Random, noise: float | None = None) -> str:
        """A response of the reference (SFT) policy; ``noise`` controls how often it is a bad one."""

    @abstractmethod
    def preference(self, prompt: str, a: str, b: str) -> float:
        """The oracle: P(a > b | prompt) in [0, 1], with preference(p, a, a) == 0.5."""

    def score(self, prompt: str, response: str) -> float:
        """A scalar reward, for Bradley-Terry-consistent tasks; a general preference task raises."""
        raise NotImplementedError(f"task {self.name!r} has no scalar score: use preference()")

    # ----- pairs ---------------------------------------------------------------------------------
    def build_pair(
        self,
        prompt: str,
        rng: random.Random,
        noise: float | None = None,
        flip_rate: float = 0.0,
        max_tries: int = 50,
    ) -> dict[str, str] | None:
        """One (prompt, chosen, rejected) row: two reference responses the oracle does not tie on.

        The oracle's probability decides which is chosen (a Bernoulli draw, so a hard oracle gives the
        better response). With probability ``flip_rate`` the labels are swapped (label noise).
        Returns None if ``max_tries`` draws never gave a decisive pair. ``noise`` defaults to the task's
        ``pair_noise``.
        """
        noise = self.pair_noise if noise is None else noise
        for _ in range(max_tries):
            a = self.reference_response(prompt, rng, noise)
            b = self.reference_response(prompt, rng, noise)
            p = self.preference(prompt, a, b)
            if a == b or p == 0.5:
                continue
            chosen, rejected = (a, b) if rng.random() < p else (b, a)
            if rng.random() < flip_rate:
                chosen, rejected = rejected, chosen
            return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        return None

    def build_pairs(
        self, split: str, n: int, seed: int = 0, noise: float | None = None, flip_rate: float = 0.0
    ) -> list[dict[str, str]]:
        """``n`` preference rows over prompts of ``split`` (standard format: plain strings).

        Prompts on which the reference never gives a decisive pair are skipped and more prompts are drawn
        (repeating the pool once it is used up); fewer than ``n`` rows come back only when ``4 * n``
        prompts did not give ``n`` decisive pairs.
        """
        if not 0.0 <= flip_rate <= 1.0:
            raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate}")
        rng = random.Random(f"{self.name}-pairs-{split}-{seed}")
        rows: list[dict[str, str]] = []
        for prompt in self.prompts(split, 4 * n, seed):
            row = self.build_pair(prompt, rng, noise=noise, flip_rate=flip_rate)
            if row is not None:
                rows.append(row)
                if len(rows) == n:
                    break
        return rows

    def sft_rows(self, split: str, n: int, seed: int = 0, noise: float | None = None) -> list[dict[str, str]]:
        """``n`` (prompt, completion) rows from the noisy reference generator, for supervised fine-tuning."""
        rng = random.Random(f"{self.name}-sft-{split}-{seed}")
        return [
            {"prompt": p, "completion": self.reference_response(p, rng, noise)} for p in self.prompts(split, n, seed)
        ]

    # ----- evaluation ----------------------------------------------------------------------------
    @abstractmethod
    def metrics(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
        """The task metrics of ``responses`` (one per prompt)."""

    def evaluate(
        self,
        generate: GenerateFn,
        n: int = 500,
        seed: int = 0,
        split: str = "eval",
        batch_size: int = 64,
        log_ratio: LogRatioFn | None = None,
    ) -> dict[str, float]:
        """Call ``generate`` (a list of prompts -> a list of responses) on ``n`` held-out prompts, batch by
        batch, and return :meth:`metrics` of what it produced.

        ``log_ratio(prompts, responses)``, when given, returns log pi(y|x) - log pi_ref(y|x) for each sampled
        response; its mean is the Monte-Carlo estimate of KL(pi || pi_ref), reported as ``kl``.
        """
        prompts = self.prompts(split, n, seed)
        responses: list[str] = []
        for start in range(0, len(prompts), batch_size):
            batch = prompts[start : start + batch_size]
            out = list(generate(batch))
            if len(out) != len(batch):
                raise ValueError(f"generate returned {len(out)} responses for {len(batch)} prompts")
            responses.extend(out)
        metrics = self.metrics(prompts, responses)
        if log_ratio is not None:
            ratios = [float(x) for x in log_ratio(prompts, responses)]
            if len(ratios) != len(prompts):
                raise ValueError(f"log_ratio returned {len(ratios)} values for {len(prompts)} responses")
            metrics["kl"] = sum(ratios) / max(len(ratios), 1)
        return metrics


def bt_preference(score_a: float, score_b: float, temperature: float = 0.0) -> float:
    """Bradley-Terry preference from two scores: sigmoid((s_a - s_b) / T); T = 0 gives hard 1 / 0 / 0.5."""
    if score_a == score_b:
        return 0.5
    if temperature <= 0 or math.isinf(score_a) or math.isinf(score_b):
        return 1.0 if score_a > score_b else 0.0
    z = (score_a - score_b) / temperature
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
