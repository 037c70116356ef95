"""TRL's DPOTrainer options that act on the step around the loss: LD-DPO's length-desensitized
log-probabilities, WPO's pair weights, TR-DPO's reference updates, the MoE router loss and dropout.

- LD-DPO (Liu et al. 2024, arXiv 2409.06411): with l = min(n_w, n_l) the shorter response's length, a
  sequence's log-probability is sum_{t <= l} log p_t + alpha * sum_{t > l} log p_t, for the policy and the
  reference alike (alpha = ``ld_alpha``).
- WPO (Zhou et al. 2024, arXiv 2406.11827, eq. 2): a pair's loss is multiplied by w_w * w_l with
  w = exp(mean_t(log p_t - log sum_v p_v^2)) (no gradient). Since log sum_v p_v^2 = 2 log p_t - log p_t^(1/2),
  where p^(1/2) is the softmax at temperature 1/2, w = exp(mean_t(log p_t^(1/2) - log p_t)): one no-grad
  pass of the fused kernel at temperature 1/2, never the [B, T, V] logits.
- TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656): every ``ref_model_sync_steps`` optimizer steps,
  ref <- alpha * policy + (1 - alpha) * ref (alpha = ``ref_model_mixup_alpha``).

Shapes: per-token tensors are [2B, T-1] (the collator's [chosen; rejected] rows, aligned with the shifted
targets) or [n] inside a PairChunk; per-pair tensors [k].
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from alignment.trainers.anchors import AnchorLogps

POSITION = "completion_position"
HALF_TEMPERATURE = "half_temperature_logps"


def token_inputs(model, inputs: dict, args, kernel_kwargs: dict, packing=None) -> dict[str, torch.Tensor]:
    """The per-token inputs the options need: completion positions 1..n (0 off the completion) for LD-DPO,
    the policy's log-probabilities at temperature 1/2 (no grad) for WPO."""
    from alignment.data.packing import Packing
    from alignment.heads import causal_token_logps

    out = {}
    comp = inputs["completion_mask"][:, 1:]
    if getattr(args, "ld_alpha", None) is not None:
        out[POSITION] = (comp.cumsum(dim=1) * comp).to(torch.float32)
    if getattr(args, "use_weighting", False):
        with torch.no_grad():
            half = causal_token_logps(
                model, inputs["input_ids"], inputs["attention_mask"], inputs["completion_mask"], temperature=0.5,
                packing=packing if packing is not None else Packing.from_batch(inputs), **kernel_kwargs,
            ).logps  # fmt: skip
        out[HALF_TEMPERATURE] = half.detach().float()
    return out


def ld_weights(chunk, alpha: float) -> torch.Tensor:
    """Per-token weights [n]: 1 up to the shorter response's length, alpha past it."""
    shared = torch.minimum(chunk.chosen_tokens, chunk.rejected_tokens)[chunk.token_pair]
    position = chunk.token_inputs[POSITION]
    ones = torch.ones_like(chunk.token_logps)
    return torch.where(position <= shared.to(position.dtype), ones, ones * alpha)


def sequence_logps(chunk, ref: AnchorLogps, alpha: float | None) -> tuple[AnchorLogps, AnchorLogps]:
    """(policy, reference) sequence log-probabilities [k]: the chunk's sums, or LD-DPO's weighted sums."""
    policy = AnchorLogps(chunk.chosen_logps, chunk.rejected_logps)
    if alpha is None:
        return policy, ref
    weights = ld_weights(chunk, alpha)
    ref_tokens = chunk.token_inputs["ref_token_logps"].to(weights.dtype)
    policy = AnchorLogps(*chunk.token_sums(chunk.token_logps * weights))
    ref = AnchorLogps(*chunk.token_sums(ref_tokens * weights))
    return policy, ref


def wpo_weights(chunk) -> torch.Tensor:
    """WPO's pair weights [k] (no gradient)."""
    aligned = chunk.token_inputs[HALF_TEMPERATURE].to(chunk.token_logps.dtype) - chunk.token_logps.detach()
    chosen, rejected = chunk.token_sums(aligned)
    mean_w = chosen / chunk.chosen_tokens.clamp(min=1)
    mean_l = rejected / chunk.rejected_tokens.clamp(min=1)
    return torch.exp(mean_w + mean_l).detach()


class SyncRefModelCallback(TrainerCallback):
    """TR-DPO: every ``ref_model_sync_steps`` steps, ref <- alpha * policy + (1 - alpha) * ref."""

    def __init__(self, trainer):
        anchor = trainer.anchors.get("ref")
        if anchor is None or anchor.model is None:
            raise ValueError(
                "sync_ref_model needs a reference model (ref_model=... or full fine-tuning without precomputed "
                f"values); the reference here is {trainer.ref_mode}"
            )
        self.trainer = trainer

    @staticmethod
    def mix(policy: torch.nn.Module, ref: torch.nn.Module, alpha: float) -> None:
        """ref <- alpha * policy + (1 - alpha) * ref, parameter by parameter (names must match)."""
        from alignment.models import unwrap

        policy_params = dict(unwrap(policy).named_parameters())
        with torch.no_grad():
            for name, ref_param in unwrap(ref).named_parameters():
                source = policy_params.get(name)
                if source is None:
                    raise ValueError(f"sync_ref_model: the policy has no parameter {name!r} of the reference")
                ref_param.mul_(1 - alpha).add_(source.detach().to(ref_param.dtype), alpha=alpha)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % args.ref_model_sync_steps == 0:
            self.mix(self.trainer.model, self.trainer.anchors["ref"].model, args.ref_model_mixup_alpha)


def router_aux_coef(model, args) -> float:
    """The weight of a mixture of experts' router load-balancing loss (Switch Transformer, arXiv 2101.03961,
    eqs. 4-6, as the model's own forward computes it): ``router_aux_loss_coef``, else the model config's;
    0 for a dense model (where setting it is an error)."""
    from alignment.models import unwrap

    config = getattr(unwrap(model), "config", None)
    config = getattr(config, "text_config", None) or config
    coef = getattr(args, "router_aux_loss_coef", None)
    if config is None or not hasattr(config, "output_router_logits"):
        if coef:
            raise ValueError(f"router_aux_loss_coef is set to {coef} but the model is not a mixture of experts")
        return 0.0
    return float(getattr(config, "router_aux_loss_coef", 0.0) if coef is None else coef)


def router_aux_loss(model, router_logits, attention_mask: torch.Tensor) -> torch.Tensor:
    """The load-balancing loss of the model's router logits over the batch's real tokens (the model
    family's own ``load_balancing_loss_func``, with its number of experts and experts per token)."""
    import sys

    from alignment.models import unwrap

    causal_lm = unwrap(model)
    if hasattr(causal_lm, "get_base_model"):  # PEFT
        causal_lm = causal_lm.get_base_model()
    family = sys.modules[type(causal_lm).__module__]
    fn = getattr(family, "load_balancing_loss_func", None)
    experts, top_k = getattr(causal_lm, "num_experts", None), getattr(causal_lm, "num_experts_per_tok", None)
    if fn is None or experts is None or top_k is None:
        raise NotImplementedError(
            f"{type(causal_lm).__name__}: no load_balancing_loss_func / num_experts to compute the router loss "
            "with; set router_aux_loss_coef: 0 to train without it"
        )
    return fn(router_logits, experts, top_k, attention_mask)


def disable_dropout(model: torch.nn.Module) -> None:
    """Set the probability of every dropout module to 0 (TRL's disable_dropout, on by default)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
