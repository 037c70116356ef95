"""The regret-loss trainer (Park, Liu, Ozdaglar, Zhang, "Do LLM Agents Have Regret?", arXiv 2403.16843, section 5;
docs/regret.md): a transformer trained to be a no-regret online learner, without labels of optimal actions.

Each training step draws fresh loss sequences (``per_device_train_batch_size`` per process, [n, T, d]) from the
configured families (alignment.tasks.online_learning), plays the learner on them, and minimises the regret-loss
(alignment.losses.regret) of its regret curves. There are no pairs and no reference.

``mode: numeric``: :class:`alignment.learners.regret_learner.NumericRegretLearner`, a transformers causal LM from a
config reading the loss vectors as ``inputs_embeds`` (no ``model`` argument: the trainer builds it).
``mode: text``: :class:`alignment.learners.regret_text.TextRegretLearner`, the given language model (a path or a
model, PEFT/LoRA allowed) reads the loss history as text and plays its next-token distribution restricted to the
d action tokens, read through the shared fused kernel.

Example::

    from alignment.trainers import RegretConfig, RegretLossTrainer
    args = RegretConfig(output_dir="outputs/regret", actions=3, horizon=20, max_steps=200, use_cpu=True)
    RegretLossTrainer(args=args).train()                                   # numeric
    args = RegretConfig(output_dir="outputs/regret_text", mode="text", actions=3, horizon=20, max_steps=200)
    RegretLossTrainer("data/sft_model", args=args).train()                 # text
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignment.configs import AlignmentConfig
from alignment.losses.regret import regret_loss
from alignment.models import unwrap
from alignment.tasks import online_learning as ol
from alignment.trainers.base import AlignmentTrainer
from alignment.trainers.registry import register

logger = logging.getLogger("alignment")


@dataclass
class RegretConfig(AlignmentConfig):
    """The online-learning problem, the regret-loss and the learner's size."""

    actions: int = field(default=3, metadata={"help": "d, the number of actions."})
    horizon: int = field(default=25, metadata={"help": "T, the rounds per loss sequence."})
    k: float = field(default=1.0, metadata={"help": "Sharpness of the soft maximum over the batch (0 = mean)."})
    mode: str = field(
        default="numeric", metadata={"help": "numeric (a learner from a config) or text (a language model)."}
    )
    families: list[str] = field(
        default_factory=lambda: list(ol.FAMILIES), metadata={"help": "Training loss families, cycled over."}
    )
    sum_over_horizons: bool = field(default=True, metadata={"help": "Regret-loss at every t (else at T only)."})
    learner_hidden: int = field(default=64, metadata={"help": "numeric: the backbone's hidden size."})
    learner_layers: int = field(default=2, metadata={"help": "numeric: the backbone's layers."})
    learner_heads: int = field(default=4, metadata={"help": "numeric: the backbone's attention heads."})
    action_names: list[str] | None = field(
        default=None,
        metadata={"help": "text: one single-token string per action (default ' A', ' B', ... else ' a', ' b', ...)."},
    )
    loss_precision: int = field(default=1, metadata={"help": "text: losses written as integers 0..10^precision - 1."})
    eval_sequences: int = field(
        default=256,
        metadata={
            "help": "After training (alignment train): held-out sequences per family for "
            "alignment regret-eval (0 = skip)."
        },
    )
    diagnostics: bool = field(default=False, metadata={"help": "No pairs and no softmax over a vocabulary here."})

    def __post_init__(self):
        super().__post_init__()
        if self.mode not in ("numeric", "text"):
            raise ValueError(f"mode must be numeric or text, got {self.mode!r}")
        unknown = [f for f in self.families if f not in ol.FAMILIES]
        if unknown or not self.families:
            raise ValueError(f"families must be among {', '.join(ol.FAMILIES)}; got {self.families}")
        if self.action_names is not None and len(self.action_names) != self.actions:
            raise ValueError(f"action_names has {len(self.action_names)} names for {self.actions} actions")
        if not 0 <= self.loss_precision <= 3:
            raise ValueError(f"loss_precision must be 0..3, got {self.loss_precision}")
        if self.actions < 2 or self.horizon < 1 or self.k < 0:
            raise ValueError("need actions >= 2, horizon >= 1 and k >= 0")
        if self.max_steps is None or self.max_steps <= 0:
            raise ValueError("the regret-loss trainer draws fresh sequences every step: set max_steps > 0")


class SeedCollator:
    def __call__(self, rows):
        return {"seed": torch.tensor([r["seed"] for r in rows])}


def build_from_recipe(script, model_args, config: RegretConfig, run_info) -> RegretLossTrainer:
    """``alignment train`` with ``method: regret`` (the method's ``build`` hook): numeric mode builds its learner
    from the config's sizes (the recipe's model is not used); text mode fine-tunes ``model_name_or_path`` (LoRA
    with ``use_peft``)."""
    if config.mode == "numeric":
        return RegretLossTrainer(args=config, run_info=run_info)
    from alignment.models import load_model, load_tokenizer

    model = load_model(script.model_name_or_path, model_args.dtype, config.trust_remote_code)
    tokenizer = load_tokenizer(script.tokenizer_name_or_path or script.model_name_or_path, config.trust_remote_code)
    run_info.base_model = script.model_name_or_path
    return RegretLossTrainer(model, args=config, processing_class=tokenizer, peft_config=model_args.peft_config(),
                             run_info=run_info)  # fmt: skip


def evaluate_after_training(trainer: RegretLossTrainer, output_dir) -> dict:
    """``alignment regret-eval`` on the saved learner (regret_eval.json, the PNGs; the method's
    ``after_training`` hook); for the run summary: regret at T per family of the model and the main baselines."""
    args = trainer.args
    if args.eval_sequences <= 0:
        return {}
    from alignment.regret_eval import regret_eval

    result = regret_eval(output_dir, args.families, args.horizon, args.eval_sequences, seed=args.seed)
    keep = ("model", "hedge_best", "ftl", "uniform")
    return {f["family"]: {k: f["methods"][k]["regret"] for k in keep} for f in result["families"]}


@register(
    "regret",
    config=RegretConfig,
    loss=regret_loss,
    paper="Do LLM Agents Have Regret? A Case Study in Online Learning and Games (Park et al. 2024)",
    arxiv="2403.16843",
    summary="a transformer trained into a no-regret online learner by the unsupervised regret-loss",
    build=build_from_recipe,
    after_training=evaluate_after_training,
)
class RegretLossTrainer(AlignmentTrainer):
    console_metrics = ("regret/mean", "regret/max")
    supports_stablemax = False  # its loss is over the d actions, not the vocabulary
    needs_tokenizer = False
    supports_z_loss = False  # its loss is over the d actions, not a vocabulary softmax through the kernel

    def __init__(self, model=None, args: RegretConfig | None = None, train_dataset=None, **kwargs):
        from datasets import Dataset

        from alignment.learners.regret_learner import NumericRegretLearner, small_llama_config

        args = args or RegretConfig()
        self.needs_tokenizer = args.mode == "text"
        if args.mode == "text" and model is None:
            raise ValueError("mode: text trains a language model: pass one (a folder, a Hub name or a model)")
        if args.mode == "numeric" and model is None:
            config = small_llama_config(args.learner_hidden, args.learner_layers, args.learner_heads,
                                        max(512, args.horizon))  # fmt: skip
            model = NumericRegretLearner(args.actions, config)
        if train_dataset is None:  # one row per sequence: its seed (every step draws new sequences)
            rows = args.max_steps * args.per_device_train_batch_size * args.gradient_accumulation_steps
            train_dataset = Dataset.from_dict({"seed": list(range(rows * max(1, args.world_size)))})
        super().__init__(model, args=args, train_dataset=train_dataset, data_collator=SeedCollator(), **kwargs)
        self.text_learner = None
        if args.mode == "text":
            from alignment.learners.regret_text import LossText, TextRegretLearner

            text = LossText.default(self.processing_class, args.actions, args.loss_precision, args.action_names)
            self.text_learner = TextRegretLearner(self.model, self.processing_class, text)
            self._check_length()

    def _check_length(self) -> None:
        ids, _, _ = self.text_learner.encoder.encode(self.sequences_cpu([0]))
        limit = getattr(unwrap(self.model).config, "max_position_embeddings", None)
        logger.info("regret text mode: %d tokens per sequence of %d rounds", ids.shape[1], self.args.horizon)
        if limit and ids.shape[1] > limit:
            logger.warning("a loss history of %d rounds is %d tokens, longer than the model's %d positions: "
                           "lower horizon or loss_precision", self.args.horizon, ids.shape[1], limit)  # fmt: skip

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        """The weights (the Trainer's ``model.safetensors``) and ``regret_learner.json``: reload with
        ``NumericRegretLearner.from_pretrained(output_dir)``."""
        super().save_model(output_dir, _internal_call)
        if self.is_world_process_zero():
            folder = Path(output_dir or self.args.output_dir)
            (self.text_learner or self.accelerator.unwrap_model(self.model)).save_config(folder)
            meta = json.loads((folder / "regret_learner.json").read_text())
            meta["trained"] = {"horizon": self.args.horizon, "families": list(self.args.families), "k": self.args.k}
            (folder / "regret_learner.json").write_text(json.dumps(meta, indent=1))

    def kernel_path(self) -> str:
        if self.args.mode == "text":
            return "general (the action tokens' log-probabilities, full-vocabulary normalizer)"
        return "none (a softmax over the actions, not the vocabulary)"

    def counted_tokens(self, batch) -> torch.Tensor:
        return torch.tensor(batch["seed"].numel())  # sequences, not tokens: the loss is no token mean

    def sequences_cpu(self, seeds: list[int]) -> torch.Tensor:
        """The loss sequences of these seeds: [n, T, d], family by seed (cycled)."""
        args, families = self.args, self.args.families
        out = [ol.make_losses(families[s % len(families)], 1, args.horizon, args.actions,
                              seed=args.seed * 1_000_003 + s) for s in seeds]  # fmt: skip
        return torch.cat(out)

    def sequences(self, seeds: list[int]) -> torch.Tensor:
        """:meth:`sequences_cpu` on the model's device."""
        return self.sequences_cpu(seeds).to(self.args.device)

    def policies(self, model, losses: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """The learner's policies [n, T, d] on ``losses`` (with gradient) and mode-specific metrics."""
        if self.text_learner is None:
            return model(losses), {}
        logps = self.text_learner.action_logps(losses, model).float()
        mass = logps.logsumexp(dim=-1).exp().mean().detach()  # how much of the next token is an action token
        return torch.softmax(logps, dim=-1), {"regret/action_mass": mass}

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        losses = self.sequences(inputs["seed"].tolist())
        pi, extra = self.policies(model, losses)
        curve = ol.regret_curve(pi, losses)
        loss, metrics = regret_loss(curve if self.args.sum_over_horizons else curve[:, -1], self.args.k)
        metrics.update(extra)
        self.log_step_metrics(metrics, "train" if self.model.training else "eval")
        return (loss, curve) if return_outputs else loss
