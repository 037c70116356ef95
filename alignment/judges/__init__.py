"""Judges: who wins between two responses to a prompt (docs/inpo.md).

One small protocol, :class:`Judge`: ``judge(prompts, responses_a, responses_b) -> list[float]``, the
probability P(a > b | prompt) per item (deterministic or sampled). Implementations:

- :class:`TaskJudge`: a synthetic task's oracle (README, "Synthetic tasks"), e.g. the cyclic rock-paper-scissors;
- :class:`RewardModelJudge`: any ``AutoModelForSequenceClassification`` with one output,
  sigmoid(r(x, a) - r(x, b)), batched; it is also pointwise (``scores``), so rankings use best and worst of K;
- :class:`PairPreferenceJudge`: a causal LM prompted with both responses, reading the probability of the
  token that names the first, averaged over both orders to cancel position bias;
- :class:`CallableJudge`: any Python function, per item or batched.

:func:`knockout` ranks K candidates per prompt with O(K) comparisons (the spec's tournament), every round of
every prompt in one judge call; :func:`rank_candidates` picks knockout or best/worst-of-K by the judge's kind.
:func:`fit_bradley_terry` fits a reward model to an oracle's comparisons (the standard RLHF baseline).
"""

from alignment.judges.base import CallableJudge, CountingJudge, Judge
from alignment.judges.bradley_terry import BTFitConfig, fit_bradley_terry
from alignment.judges.pair_preference import PairPreferenceJudge
from alignment.judges.reward_model import RewardModelJudge
from alignment.judges.task import TaskJudge
from alignment.judges.tournament import best_and_worst, knockout, rank_candidates

__all__ = [
    "BTFitConfig",
    "CallableJudge",
    "CountingJudge",
    "Judge",
    "PairPreferenceJudge",
    "RewardModelJudge",
    "TaskJudge",
    "best_and_worst",
    "fit_bradley_terry",
    "knockout",
    "rank_candidates",
]
