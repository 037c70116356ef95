"""The regret-loss trainer (Park, Liu, Ozdaglar, Zhang, "Do LLM Agents Have Regret?", arXiv 2403.16843, section 5;
specs/regret_loss.md): a transformer trained to be a no-regret online learner, without labels of optimal actions.

Each training step draws fresh loss sequences (``per_device_train_batch_size`` per process, [n, T, d]) from the
configured families (alignment.tasks.online_learning), plays the learner on them, and minimises the regret-loss
(alignment.losses.regret) of its regret curves. There are no pairs and no reference.

``mode: numeric`` (built): :class:`alignment.modules.regret_learner.NumericRegretLearner`, a transformers causal
LM from a config reading the loss vectors as ``inputs_embeds``. ``mode: text`` (a language model reading the loss
history as text) is not built yet and raises NotImplementedError.

Example::

    from alignment.trainers import RegretConfig, RegretLossTrainer
    args = RegretConfig(output_dir="outputs/regret", actions=3, horizon=20, max_steps=200, use_cpu=True)
    RegretLossTrainer(args=args).train()
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from alignment.configs import AlignmentConfig
from alignment.losses.regret import regret_loss
from alignment.tasks import online_learning as ol
from alignment.trainers.base import AlignmentTrainer
from alignment.trainers.registry import register


@dataclass
class RegretConfig(AlignmentConfig):
    """The online-learning problem, the regret-loss and the learner's size."""

    actions: int = field(default=3, metadata={"help": "d, the number of actions."})
    horizon: int = field(default=25, metadata={"help": "T, the rounds per loss sequence."})
    k: float = field(default=1.0, metadata={"help": "Sharpness of the soft maximum over the batch (0 = mean)."})
    mode: str = field(default="numeric", metadata={"help": "numeric (built) or text (not built yet)."})
    families: list[str] = field(
        default_factory=lambda: list(ol.FAMILIES), metadata={"help": "Training loss families, cycled over."}
    )
    sum_over_horizons: bool = field(default=True, metadata={"help": "Regret-loss at every t (else at T only)."})
    learner_hidden: int = field(default=64, metadata={"help": "numeric: the backbone's hidden size."})
    learner_layers: int = field(default=2, metadata={"help": "numeric: the backbone's layers."})
    learner_heads: int = field(default=4, metadata={"help": "numeric: the backbone's attention heads."})
    diagnostics: bool = field(default=False, metadata={"help": "No pairs and no softmax over a vocabulary here."})

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("numeric", "text"):
            raise ValueError(f"mode must be numeric or text, got {self.mode!r}")
        unknown = [f for f in self.families if f not in ol.FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"families must be among {', '.join(ol.FAMILIES)}; got {self.families}")
        if self.actions < 2 or self.horizon < 1 or self.k < 0:
            raise ValueError("need actions >= 2, horizon >= 1 and k >= 0")
        if self.max_steps is None or self.max_steps <= 0:
            raise ValueError("the regret-loss trainer draws fresh sequences every step: set max_steps > 0")


class SeedCollator:
    def __call__(self, rows):
        return {"seed": torch.tensor([r["seed"] for r in rows])}


@register(
    "regret",
    config=RegretConfig,
    loss=regret_loss,
    paper="Do LLM Agents Have Regret? A Case Study in Online Learning and Games (Park et al. 2024)",
    arxiv="2403.16843",
    summary="a transformer trained into a no-regret online learner by the unsupervised regret-loss",
)
class RegretLossTrainer(AlignmentTrainer):
    needs_tokenizer = False

    def __init__(self, model=None, args: RegretConfig | None = None, train_dataset=None, **kwargs):
        from datasets import Dataset

        from alignment.modules.regret_learner import NumericRegretLearner, small_llama_config

        args = args or RegretConfig()
        if args.mode == "text":
            raise NotImplementedError("RegretLossTrainer mode: text is not built yet; use mode: numeric")
        if model is None:
            config = small_llama_config(args.learner_hidden, args.learner_layers, args.learner_heads,
                                        max(512, args.horizon))  # fmt: skip
            model = NumericRegretLearner(args.actions, config)
        if train_dataset is None:  # one row per sequence: its seed (every step draws new sequences)
            rows = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
            train_dataset = Dataset.from_dict({"seed": list(range(rows * max(1, args.world_size)))})
        super().__init__(model, args=args, train_dataset=train_dataset, data_collator=SeedCollator(), **kwargs)

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The weights (the Trainer's ``model.safetensors``) and ``regret_learner.json``: reload with
        ``NumericRegretLearner.from_pretrained(output_dir)``."""
        super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            self.accelerator.unwrap_model(self.model).save_config(output_dir or self.args.output_dir)

    def kernel_path(self) -> str:
        return "none (a softmax over the actions, not the vocabulary)"

    def counted_tokens(self, batch) -> torch.Tensor:
        return torch.tensor(batch["seed"].numel())  # sequences, not tokens: the loss is no token mean

    def sequences(self, seeds: list[int]) -> torch.Tensor:
        """The loss sequences of these seeds: [n, T, d], family by seed (cycled), on the model's device."""
        args, families = self.args, self.args.families
        out = [ol.make_losses(families[s % len(families)], 1, args.horizon, args.actions,
                              seed=args.seed * 1_000_003 + s) for s in seeds]  # fmt: skip
        return torch.cat(out).to(self.args.device)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = self.sequences(inputs["seed"].tolist())
        curve = ol.regret_curve(model(losses), losses)
        loss, metrics = regret_loss(curve if self.args.sum_over_horizons else curve[:, -1], self.args.k)
        self.log_step_metrics(metrics, "train" if self.model.training else "eval")
        return (loss, curve) if return_outputs else loss
