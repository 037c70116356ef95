"""Sentiment: a review opening -> a continuation of 8-20 words from a fixed vocabulary.

Score = (#positive words) - (#negative words); every other word counts 0. Only a few tokens decide the
preference, which is what token-level masks (SparsePO) should find. Metric: mean score of sampled
continuations (plus the KL to the reference policy when the evaluator is given log-ratios).

The reference policy draws each word neutral with probability 1 - ``sentiment_rate`` and otherwise
positive or negative; ``noise`` is the probability that a sentiment word is negative (0.5: balanced).
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence

from alignment.tasks.base import Task, bt_preference

POSITIVE = (
    "great wonderful brilliant superb delightful charming excellent beautiful clever touching "
    "gripping stunning lovely warm funny"
).split()
NEGATIVE = ("awful boring dull terrible weak messy tedious bad clumsy bland poor annoying flat lifeless silly").split()
NEUTRAL = (
    "the film story plot actors scenes music camera and with a was felt very quite it of some characters "
    "ending pace director script movie cast score light at times in this its an long short second first "
    "part moments dialogue ideas set design"
).split()
_OPENERS = ("I watched", "Last night I saw", "We went to see", "My review of", "Thoughts on")
_ADJECTIVES = (
    "Silent Golden Broken Hidden Last Crimson Quiet Wild Frozen Distant Lost Burning Hollow Endless "
    "Bright Northern Secret Velvet Iron Paper Glass Midnight Summer Winter Falling Rising Little Great "
    "Empty Open Final Second Old New Dark Painted Sleeping Waking Gentle Bitter"
).split()
_NOUNS = (
    "Harbor River Garden Mountain City Window Letter Promise Island Kingdom Forest Station Mirror Road "
    "House Machine Signal Horizon Bridge Ocean Valley Tower Voyage Engine Orchard Lantern Circus Desert "
    "Canyon Festival Archive Theater Compass Meadow Lighthouse Village Planet Shadow Winter Crown"
).split()
_WORD = re.compile(r"[a-z]+")
_POS, _NEG = frozenset(POSITIVE), frozenset(NEGATIVE)
_VOCAB = frozenset(POSITIVE) | frozenset(NEGATIVE) | frozenset(NEUTRAL)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class SentimentTask(Task):
    name = "sentiment"
    max_new_tokens = 32
    default_noise = 0.5

    def __init__(self, min_words: int = 8, max_words: int = 20, sentiment_rate: float = 0.25, temperature: float = 0.0):
        self.min_words, self.max_words = min_words, max_words
        self.sentiment_rate = sentiment_rate
        self.temperature = temperature

    def all_prompts(self) -> list[str]:
        return [f"{o} The {a} {n}:" for o in _OPENERS for a in _ADJECTIVES for n in _NOUNS]

    def reference_response(self, prompt: str, rng: random.Random, noise: float | None = None) -> str:
        noise = self.default_noise if noise is None else noise
        length = rng.randint(self.min_words, self.max_words)
        out = []
        for _ in range(length):
            if rng.random() < self.sentiment_rate:
                out.append(rng.choice(NEGATIVE if rng.random() < noise else POSITIVE))
            else:
                out.append(rng.choice(NEUTRAL))
        return " ".join(out)

    def score(self, prompt: str, response: str) -> float:
        ws = words(response)
        return float(sum(w in _POS for w in ws) - sum(w in _NEG for w in ws))

    def preference(self, prompt: str, a: str, b: str) -> float:
        return bt_preference(self.score(prompt, a), self.score(prompt, b), self.temperature)

    def is_valid(self, response: str) -> bool:
        """8-20 words, all from the task's vocabulary."""
        ws = response.split()
        return self.min_words <= len(ws) <= self.max_words and all(w.lower() in _VOCAB for w in ws)

    def metrics(self, prompts: Sequence[str], responses: Sequence[str]) -> dict[str, float]:
        scores = [self.score(p, r) for p, r in zip(prompts, responses, strict=True)]
        n = max(len(scores), 1)
        return {
            "mean_score": sum(scores) / n,
            "valid_rate": sum(self.is_valid(r) for r in responses) / n,
            "mean_words": sum(len(r.split()) for r in responses) / n,
            "n": float(len(scores)),
        }
