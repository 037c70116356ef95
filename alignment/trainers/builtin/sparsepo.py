"""SparsePO: token-level sparse masks on the rewards and KL terms of token-level DPO (Christopoulou et al.
2024, arXiv 2410.05102). The method's config, trainer and registration; the loss is
alignment.losses.sparsepo, the masks alignment.learners.token_mask.

One step: one no-grad pass of the reference gives its per-token log-probabilities, its final hidden states
(for the per-token KL(pi_ref || pi_theta), computed inside the fused op) and, for the learned and activation
masks, the hidden states of every layer; the masks [2B, T-1] enter the pair-fused op as token inputs, so the
learned mask network receives its gradient from the same backward as the policy. No [B, T, V] tensor.

The mask network is registered as a submodule of the trained model (``sparsepo_mask``) so that the
optimizer, DDP and DeepSpeed treat it like the policy (with its own weight decay and learning rate); it is
saved beside the model as ``token_mask.safetensors`` + ``token_mask.json`` (not inside the model's
weights), and reloaded from ``mask_init`` or from the starting model's folder when one is there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from alignment.configs import PreferenceConfig, choice
from alignment.learners.token_mask import (
    MASK_INPUTS,
    MASK_TYPES,
    SHARINGS,
    WEIGHTS_NAME,
    TokenMaskNetwork,
    compute_masks,
    mask_layers,
)
from alignment.losses.sparsepo import sparsepo_loss
from alignment.models import unwrap
from alignment.trainers import anchors as anchor_lib
from alignment.trainers.preference import PreferenceTrainer
from alignment.trainers.registry import register

logger = logging.getLogger("alignment")
MASK_ATTR = "sparsepo_mask"


@dataclass
class SparsePOConfig(PreferenceConfig):
    """SparsePO (Christopoulou et al. 2024, arXiv 2410.05102); defaults from the authors' tables."""

    beta: float = field(default=0.8, metadata={"help": "beta of the token-level DPO margin (0.8: IMDB, TL;DR)."})
    mask_type: str = field(
        default="learned",
        metadata={"help": "learned (mask network), activation (parameter-free), constant (1: TDPO) or random."},
    )
    mask_sharing: str = field(
        default="common", metadata={"help": "Learned masks: common (one mask for both terms) or independent."}
    )
    mask_inputs: str = field(
        default="prefix",
        metadata={
            "help": "Which reference state a token's mask reads: prefix (the authors': the state that predicts the "
            "token) or token (the state at the token, which has read it)."
        },
    )
    mask_embeddings: bool = field(
        default=False,
        metadata={"help": "Also feed the token embeddings to the masks (the spec uses the layer outputs only)."},
    )
    mask_on_reward: bool = field(default=True, metadata={"help": "Mask the token log-ratios (else mask 1)."})
    mask_on_kl: bool = field(default=True, metadata={"help": "Mask the token KL terms (else mask 1)."})
    lambda_reward: float = field(default=1e-3, metadata={"help": "L1 weight of the reward mask (sparsity)."})
    lambda_kl: float = field(default=1e-3, metadata={"help": "L1 weight of the KL mask (sparsity)."})
    kl_coef: float = field(
        default=1.0, metadata={"help": "Weight of the token-KL term d (0: no KL term, no KL computed)."}
    )
    mask_dropout: float = field(default=0.01, metadata={"help": "Dropout inside the learned mask network."})
    mask_weight_decay: float = field(default=0.01, metadata={"help": "Weight decay of the mask network."})
    mask_learning_rate: float | None = field(
        default=None, metadata={"help": "Learning rate of the mask network (default: learning_rate)."}
    )
    mask_warmup_ratio: float = field(
        default=0.0,
        metadata={
            "help": "Share of the training steps during which the mask network stays at its initialisation (not "
            "trained) while the policy trains; 0: joint from the first step, as the authors."
        },
    )
    mask_sparsity_target: float | None = field(
        default=None,
        metadata={
            "help": "Hold the share of completion tokens whose reward mask is exactly 0 at this value, with a "
            "multiplier on lambda_reward and lambda_kl raised while the masks are less sparse and lowered while "
            "they are sparser (a departure from the authors' code, docs/sparsepo.md; None: their fixed lambdas)."
        },
    )
    mask_sparsity_rate: float = field(
        default=0.05,
        metadata={"help": "Step of the sparsity multiplier: log multiplier += rate * (target - sparsity) per step."},
    )
    mask_init: str | None = field(
        default=None,
        metadata={"help": "A folder with token_mask.safetensors to continue from (default: the model's, if any)."},
    )

    def __post_init__(self):
        choice("mask_type", self.mask_type, MASK_TYPES)
        choice("mask_sharing", self.mask_sharing, SHARINGS)
        choice("mask_inputs", self.mask_inputs, MASK_INPUTS)
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        for name in ("lambda_reward", "lambda_kl", "kl_coef", "mask_weight_decay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.mask_warmup_ratio < 1.0:
            raise ValueError(f"mask_warmup_ratio must be in [0, 1), got {self.mask_warmup_ratio}")
        if self.mask_learning_rate is not None and self.mask_learning_rate < 0:
            raise ValueError(f"mask_learning_rate must be >= 0, got {self.mask_learning_rate}")
        if self.mask_sparsity_target is not None:
            if not 0.0 < self.mask_sparsity_target < 1.0:
                raise ValueError(f"mask_sparsity_target must be in (0, 1) or null, got {self.mask_sparsity_target}")
            if self.mask_type != "learned":
                raise ValueError("mask_sparsity_target needs mask_type: learned (only learned masks are trained)")
        if not self.mask_sparsity_rate > 0:
            raise ValueError(f"mask_sparsity_rate must be > 0, got {self.mask_sparsity_rate}")
        if not 0.0 <= self.mask_dropout < 1.0:
            raise ValueError(f"mask_dropout must be in [0, 1), got {self.mask_dropout}")
        if self.precompute_ref_logps and (self.kl_coef > 0 or self.mask_type in ("learned", "activation")):
            raise ValueError(
                "precompute_ref_logps cannot be used with SparsePO's KL term (kl_coef > 0) or with learned or "
                "activation masks: both need the reference's hidden states at every step; set "
                "precompute_ref_logps: false (the reference pass then gives log-probabilities and hidden states)"
            )
        super().__post_init__()

    @property
    def uses_reference_states(self) -> bool:
        return self.kl_coef > 0 or self.mask_type in ("learned", "activation")


class _HeldThenRamped:
    """A learning-rate multiplier: 0 for the first ``hold`` steps, then ``base(step)`` ramped up linearly over
    ``ramp`` steps."""

    def __init__(self, base, hold: int, ramp: int):
        self.base, self.hold, self.ramp = base, hold, ramp

    def __call__(self, step: int) -> float:
        if step < self.hold:
            return 0.0
        return self.base(step) * min(1.0, (step - self.hold + 1) / self.ramp)


@register(
    "sparsepo",
    config=SparsePOConfig,
    loss=sparsepo_loss,
    paper="SparsePO: Controlling Preference Alignment of LLMs via Sparse Token Masks (Christopoulou et al. 2024)",
    arxiv="2410.05102",
    anchors=("ref",),
    recipe="quickstart/sparsepo.yaml",
    summary="token-level sparse masks on the rewards and KL terms of token-level DPO",
)
class SparsePOTrainer(PreferenceTrainer):
    console_metrics = ("rewards/margins", "sparsepo/mask_sparsity_reward", "sparsepo/mask_sparsity_kl")
    supports_stablemax = False  # its loss reads the kernel's per-token KL
    anchor_token_logps = True
    frees_precomputed_anchors = False  # the mask snapshot after training runs the reference

    # ----- the mask network ------------------------------------------------------------------------------
    def setup_anchors(self, model, args, train_dataset, eval_dataset) -> None:
        super().setup_anchors(model, args, train_dataset, eval_dataset)
        self.mask_network: TokenMaskNetwork | None = None
        if args.mask_type != "learned":
            return
        saved = self.model_id and Path(self.model_id, WEIGHTS_NAME).exists()
        folder = args.mask_init or (self.model_id if saved else None)
        if folder:
            net = TokenMaskNetwork.load(folder)
            logger.info("SparsePO: mask network loaded from %s", folder)
        else:
            config = unwrap(model).config
            config = config.get_text_config() if hasattr(config, "get_text_config") else config
            layers = config.num_hidden_layers + int(args.mask_embeddings)
            net = TokenMaskNetwork(layers, config.hidden_size, args.mask_sharing, args.mask_dropout)
        model.add_module(MASK_ATTR, net)  # trained, synchronized and partitioned with the policy
        self.mask_network = net

    def extra_param_groups(self) -> list[dict]:
        """The mask network in a group of its own (weight decay, learning rate)."""
        if self.mask_network is None:
            return []
        return [{"params": list(self.mask_network.parameters()), "weight_decay": self.args.mask_weight_decay,
                 "lr": self.args.mask_learning_rate or self.args.learning_rate}]  # fmt: skip

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """The Trainer's schedule; the mask network's group holds at learning rate 0 for the first
        ``mask_warmup_ratio`` of the steps (the masks stay at their initialisation while the policy's
        log-ratios are still 0 and only the L1 term would act, switching masks off for good), then ramps up
        linearly over the Trainer's warm-up length (at least 1 step) into the same schedule."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        self._mask_hold = int(self.args.mask_warmup_ratio * num_training_steps)
        if self.mask_network is None or self._mask_hold == 0:
            return scheduler
        lambdas = getattr(scheduler, "lr_lambdas", None)
        if lambdas is None:
            raise NotImplementedError(f"mask_warmup_ratio with the {type(scheduler).__name__} learning-rate scheduler")
        if not isinstance(lambdas[-1], _HeldThenRamped):  # the mask network's group is the last (create_optimizer)
            ramp = max(1, self.args.get_warmup_steps(num_training_steps))
            lambdas[-1] = _HeldThenRamped(lambdas[-1], self._mask_hold, ramp)
            scheduler.optimizer.param_groups[-1]["lr"] = scheduler.base_lrs[-1] * lambdas[-1](scheduler.last_epoch)
        return scheduler

    def masks_held(self) -> bool:
        """True during the mask warm-up (``mask_warmup_ratio``): the masks' gradient is then 0."""
        return self.model.training and self.state.global_step < getattr(self, "_mask_hold", 0)

    def save_extra_modules(self, output_dir: str, state_dict: dict | None) -> dict | None:
        """The mask network beside the policy; the policy's state dict without its weights."""
        if self.mask_network is None:
            return state_dict
        state_dict = state_dict if state_dict is not None else self.model.state_dict()
        prefix = MASK_ATTR + "."
        masks = {k.split(prefix, 1)[1]: v for k, v in state_dict.items() if prefix in k}
        if self.args.should_save:
            self.mask_network.save(output_dir, masks or None)
        return {k: v for k, v in state_dict.items() if prefix not in k}

    def after_train(self) -> None:
        """The masks of the first probe pairs to ``output_dir/token_masks.json`` (the report's mask panel)."""
        self.write_mask_snapshot()  # on every process: under ZeRO-3 the reference's forward is collective

    def write_mask_snapshot(self, pairs: int = 4) -> Path:
        """The reward and KL masks of the first ``pairs`` probe pairs, per token (alignment masks' format)."""
        from alignment.data.loading import first_rows
        from alignment.diagnostics.masks import pair_masks
        from alignment.io import atomic_write_text

        dataset = self.probe_dataset()
        rows = first_rows(dataset, pairs)
        model = unwrap(self.model)
        was_training = model.training
        snapshot = []
        try:
            with self.anchors["ref"].policy(self.model) as reference:
                for row in rows:
                    batch = {k: v.to(self.args.device) for k, v in self.data_collator([row]).items()}
                    independent = self.args.mask_sharing == "independent"
                    snapshot.append(
                        pair_masks(reference, batch, self.args.mask_type, self.mask_network, independent,
                                   self.processing_class, self.args.mask_inputs, self.args.mask_embeddings)
                    )  # fmt: skip
        finally:
            model.train(was_training)
            if self.mask_network is not None:
                self.mask_network.train(was_training)
        path = Path(self.args.output_dir) / "token_masks.json"
        if self.is_world_process_zero():
            atomic_write_text(path, json.dumps({"mask_type": self.args.mask_type, "pairs": snapshot}))
        return path

    # ----- the step -----------------------------------------------------------------------------------
    def anchor_logps(self, inputs: dict, packing=None):
        """The reference's per-token log-probabilities, with its hidden states when the KL term or the masks
        need them (one no-grad pass)."""
        if not self.args.uses_reference_states:
            return super().anchor_logps(inputs, packing)
        anchor = self.anchors["ref"]
        layers = self.args.mask_type in ("learned", "activation")
        with anchor.policy(self.model) as policy:
            return {"ref": anchor_lib.anchor_states(policy, inputs, self.kernel_kwargs(), layers, packing)}

    def token_masks(self, inputs: dict, ref) -> tuple[torch.Tensor, torch.Tensor]:
        """The reward and KL masks [2B, T-1] of this batch (aligned with the shifted targets)."""
        valid = inputs["completion_mask"][:, 1:].bool()
        args = self.args
        states = ref.states.layers if ref.states is not None else None
        layers = mask_layers(states, args.mask_inputs, args.mask_embeddings)
        independent = self.args.mask_sharing == "independent"
        reward, kl = compute_masks(self.args.mask_type, layers, valid, self.mask_network, independent)
        if self.mask_network is not None and self.masks_held():
            # same values, zero gradient: every mask parameter still takes part in the backward (DDP, ZeRO),
            # and the optimizer's moments start clean when the masks start to learn
            reward, kl = (m.detach() + 0.0 * m for m in (reward, kl))
        return reward, kl

    def token_inputs(self, model, inputs, anchors, packing=None):
        reward, kl = self.token_masks(inputs, anchors["ref"])
        return {"ref_token_logps": anchors["ref"].tokens, "mask_reward": reward, "mask_kl": kl}

    def pair_op_kwargs(self, anchors):
        states = anchors["ref"].states
        if self.args.kl_coef == 0 or states is None:
            return {}
        return {"ref_hidden": states.hidden, "ref_weight": states.head_weight, "ref_bias": states.head_bias}

    def pair_losses(self, chunk, anchors, token_scale):
        args = self.args
        kl = chunk.token_kl if chunk.token_kl is not None else torch.zeros_like(chunk.token_logps)
        learned = args.mask_type == "learned"  # the L1 terms only matter for masks that are trained
        common = learned and args.mask_sharing == "common"
        losses, metrics = sparsepo_loss(
            chunk.token_logps,
            chunk.token_inputs["ref_token_logps"],
            kl,
            chunk.token_inputs["mask_reward"],
            chunk.token_inputs["mask_kl"],
            chunk.token_pair,
            chunk.token_chosen,
            chunk.pair_index.numel(),
            beta=args.beta,
            mask_on_reward=args.mask_on_reward,
            mask_on_kl=args.mask_on_kl,
            lambda_reward=args.lambda_reward * self.l1_scale() if learned else 0.0,
            lambda_kl=args.lambda_kl * self.l1_scale() if learned else 0.0,
            kl_coef=args.kl_coef,
            common_mask=common,
        )
        if self.mask_network is not None and args.mask_sparsity_target is not None:
            self._batch_sparsity = metrics["sparsepo/mask_sparsity_reward"].detach().float().mean()
            metrics["sparsepo/l1_scale"] = torch.full_like(losses.detach(), self.l1_scale())
        metrics["logps/chosen"] = chunk.chosen_logps.detach()
        metrics["logps/rejected"] = chunk.rejected_logps.detach()
        return losses, metrics

    # ----- the sparsity target (mask_sparsity_target) ------------------------------------------------------
    def l1_scale(self) -> float:
        """The multiplier on the L1 weights: 1 without a sparsity target."""
        if self.mask_network is None or self.args.mask_sparsity_target is None:
            return 1.0
        return float(self.mask_network.l1_log_scale.exp())

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        if getattr(self, "_batch_sparsity", None) is not None:
            self.hold_sparsity(self._batch_sparsity)
            self._batch_sparsity = None
        return loss

    def hold_sparsity(self, sparsity: torch.Tensor) -> None:
        """Dual ascent on the sparsity target, once per training batch after its backward: log multiplier +=
        rate * (target - the batch's share of reward-mask zeros); not while the masks are held. Each process
        measures its own batch (no collective; under DDP the buffer of process 0 is broadcast at every forward).
        Kept in [-10, 10]: the L1 weights between e^-10 and e^10 times the configured lambdas."""
        if self.masks_held():
            return
        step = self.args.mask_sparsity_rate * (self.args.mask_sparsity_target - float(sparsity))
        buffer = self.mask_network.l1_log_scale
        buffer.copy_((buffer + step).clamp(-10.0, 10.0))

    def anchor_summary(self) -> dict[str, str]:
        summary = super().anchor_summary()
        args = self.args
        where = "reward" if args.mask_on_reward else ""
        where += (" and KL" if where else "KL") if args.mask_on_kl else ""
        sharing = f", {args.mask_sharing}" if args.mask_type == "learned" else ""
        summary["token masks"] = f"{args.mask_type}{sharing} on {where or 'nothing (all 1)'}; KL term x{args.kl_coef}"
        return summary
