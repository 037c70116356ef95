"""INPO: one iteration of Iterative Nash Policy Optimization (Zhang et al. 2024, arXiv 2407.00617;
docs/inpo.md). The method's config, trainer and registration; the loss is alignment.losses.inpo.

The trainer trains pi_{t+1} from pi_t's weights on pairs sampled from pi_t and ranked by a preference judge,
against two frozen anchors: ``ref`` (pi_ref, the SFT model) and ``prev`` (pi_t). Without PEFT both default to
a frozen copy of the starting policy, which is right at t = 1 (pi_1 = pi_ref); from t = 2 on pass the SFT
model as the reference (``ref_model=`` or ``anchors={"ref": path}``) and ``prev`` stays the starting policy
(pi_t). Their log-probabilities are precomputed once per pair (``precompute_ref_logps``, on by default here)
through the anchors' disk cache. The self-play loop that samples, judges and iterates is alignment.loops.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alignment.configs import PreferenceConfig
from alignment.losses.inpo import inpo_loss
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register


@dataclass
class INPOConfig(PreferenceConfig):
    """INPO (Zhang et al. 2024, arXiv 2407.00617); defaults from the paper's App. B."""

    eta: float = field(
        default=0.005,
        metadata={"help": "INPO's eta: the mirror-descent step 1/eta; the regression target is 1/(2 eta)."},
    )
    tau: float | None = field(
        default=None,
        metadata={"help": "INPO's tau, the KL weight to the reference, in [0, eta] (default eta/3; 0: no KL)."},
    )
    precompute_ref_logps: bool = field(
        default=True,
        metadata={"help": "Compute both anchors' (pi_ref, pi_t) log-probabilities once per pair, cached."},
    )

    def __post_init__(self):
        if not self.eta > 0:
            raise ValueError(f"eta must be > 0, got {self.eta}")
        if self.tau is None:
            self.tau = self.eta / 3
        if not 0 <= self.tau <= self.eta:
            raise ValueError(f"tau must be in [0, eta] = [0, {self.eta}], got {self.tau}")
        super().__post_init__()


@register(
    "inpo",
    config=INPOConfig,
    loss=inpo_loss,
    paper="Iterative Nash Policy Optimization: Aligning LLMs with General Preferences via No-Regret Learning "
    "(Zhang et al. 2024)",
    arxiv="2407.00617",
    anchors=("ref", "prev"),
    recipe="quickstart/inpo.yaml",
    summary="one iteration of no-regret self-play against a general preference judge (anchors pi_ref, pi_t)",
)
class INPOTrainer(PreferenceTrainer):
    console_metrics = ("rewards/accuracies", "inpo/margin_vs_ref", "inpo/margin_vs_prev")

    def pair_losses(self, chunk, anchors, token_scale):
        ref, prev = anchors["ref"], anchors["prev"]
        return inpo_loss(
            chunk.chosen_logps, chunk.rejected_logps, ref.chosen, ref.rejected, prev.chosen, prev.rejected,
            eta=self.args.eta, tau=self.args.tau,
        )  # fmt: skip
