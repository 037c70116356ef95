"""PreferenceTrainer(AlignmentTrainer): (prompt, chosen, rejected) pairs, named anchors and the pair-fused step.

Constructed the way TRL's trainers are::

    trainer = DPOTrainer(model, ref_model=None, args=DPOConfig(...), train_dataset=ds, eval_dataset=None,
                         processing_class=tokenizer, compute_metrics=None, callbacks=None, peft_config=None)

(TRL's DPOTrainer arguments, in TRL's order.)

``model`` is a model object or a path/Hub name; datasets are ``datasets.Dataset``s with prompt/chosen/
rejected columns (standard, conversational or implicit-prompt) or already tokenized ones. One training
step runs the backbone once on [chosen; rejected] and evaluates the method's loss inside the fused op's
pair-fused path (dh and dW formed in the forward; with a frozen head, as under LoRA, no dW is formed):
the [B, T, V] logits are never built.

A method subclass overrides hooks, never the step:

- ``pair_losses(chunk, anchors, token_scale)`` -> (per-pair losses [k], metrics): the method's pure loss on
  one chunk of whole pairs. ``anchors[name]`` holds that anchor's summed log-probabilities of the chunk's
  pairs (``.chosen``, ``.rejected``, [k]); per-token values are in ``chunk.token_inputs``.
- ``token_inputs(model, inputs, anchors)`` -> extra per-token tensors [2B, T-1] handed to the loss (e.g. a
  token-mask network's outputs, which then receive their gradient); by default the anchors' per-token
  log-probabilities when the trainer sets ``anchor_token_logps = True``.
- ``make_dataset`` for methods whose rows need more than validation and tokenization.

The anchors a method needs are declared at registration (``anchors=("ref",)``); ``ref_model=`` supplies
``ref`` and ``anchors={"prev": model, path or adapter state}`` any of them (alignment.trainers.anchors).
"""

from __future__ import annotations

import torch

from alignment.data import PREFERENCE, PreferenceCollator
from alignment.heads import causal_pair_loss, lm_head
from alignment.long_context import sequence_parallel as sp
from alignment.losses.z_loss import z_loss
from alignment.trainers import anchors as anchor_lib
from alignment.trainers import packing as packing_lib
from alignment.trainers import trl_options
from alignment.trainers.anchors import Anchor, AnchorLogps
from alignment.trainers.base import AlignmentTrainer, deepspeed_inference


def on_device(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model.to(device)``, skipped when every parameter is there already (a no-op that the planner's fake
    parameters cannot take: alignment.planning)."""
    if all(p.device == torch.device(device) for p in model.parameters()):
        return model
    return model.to(device)


def reference_free(method, args, sources: dict) -> None:
    """A method without anchors (CPO, SimPO, ORPO) refuses the options that only act on a reference."""
    if method.anchors:
        return
    if sources:
        raise ValueError(f"{method.name} is reference-free: it takes no ref_model or anchors (got {sorted(sources)})")
    for option in ("precompute_ref_logps", "sync_ref_model"):
        if getattr(args, option, False):
            raise ValueError(f"{method.name} is reference-free: {option} has no reference to act on; leave it off")


class PreferenceTrainer(AlignmentTrainer):
    """Pairs, named anchors and the pair-fused step (see the module docstring)."""

    console_metrics = ("rewards/margins", "rewards/accuracies")

    completions = PREFERENCE
    trl_tokenization = "trl_dpo"  # trl 1.16's DPOTrainer: keep_end cuts each sequence separately
    #: the loss needs each anchor's per-token log-probabilities too (chunk.token_inputs["<name>_token_logps"])
    anchor_token_logps = False
    #: pair_losses goes through sequence_logps and weighted (LD-DPO's ld_alpha, WPO's use_weighting)
    supports_sequence_options = False
    supports_packing = True
    #: release the frozen copies once their values are precomputed (False: the method reads them later)
    frees_precomputed_anchors = True

    def __init__(
        self,
        model,
        ref_model=None,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        model_init_kwargs: dict | None = None,
        run_info=None,
        anchors: dict | None = None,
    ):
        """TRL's DPOTrainer arguments in TRL's order, then ours (model_init_kwargs, run_info, anchors)."""
        if quantization_config is not None:
            model_init_kwargs = {**(model_init_kwargs or {}), "quantization_config": quantization_config}
        sources = dict(anchors or {})
        if ref_model is not None:
            if "ref" in sources:
                raise ValueError("pass the reference either as ref_model or as anchors['ref'], not both")
            sources["ref"] = ref_model
        self._anchor_sources = sources
        self.anchors: dict[str, Anchor] = {}
        self._batch_pairs = 0
        reference_free(self._registered(), args, sources)
        for option in ("ld_alpha", "use_weighting"):
            if getattr(args, option, None) not in (None, False) and not self.supports_sequence_options:
                raise ValueError(f"{option} is supported by the dpo and rpo methods, not {self._registered().name}")
        if getattr(args, "ld_alpha", None) is not None:  # LD-DPO weighs the reference's tokens too
            self.anchor_token_logps = True
        super().__init__(
            model,
            args,
            train_dataset,
            eval_dataset,
            processing_class,
            peft_config,
            callbacks,
            data_collator,
            optimizers,
            model_init_kwargs,
            run_info,
            compute_metrics=compute_metrics,
        )
        self.router_coef = trl_options.router_aux_coef(self.model, self.args)
        #: TRL's attribute: a mixture of experts' router loss is added (``router_aux_loss_coef`` times aux_loss)
        self.aux_loss_enabled = bool(self.router_coef)
        if getattr(self.args, "sync_ref_model", False):
            self.add_callback(trl_options.SyncRefModelCallback(self))

    # ----- data -------------------------------------------------------------------------------------
    def make_collator(self, tokenizer, args):
        return PreferenceCollator(tokenizer.pad_token_id, args.pad_to_multiple_of)

    def prepare_eval_dataset(self, dataset, name: str):
        dataset = super().prepare_eval_dataset(dataset, name)
        if getattr(self.args, "precompute_ref_logps", False):
            for anchor in self.anchors.values():
                if anchor.kind != "columns" and anchor.columns[0] not in dataset.column_names:
                    anchor_lib.refuse_freed(anchor, name)
                    dataset = anchor_lib.precompute(self, anchor, dataset, name, self.anchor_token_logps)
        return dataset

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        """With ``compute_metrics``: predictions are the implicit rewards [B, 2] of (chosen, rejected) (the
        summed log-probabilities for a method without rewards) and labels zeros [B] (the preferred
        response's index), so ``(p[:, 0] > p[:, 1]).mean()`` is the reward accuracy. (TRL passes logits
        recomputed by an extra forward, deprecated there; the [B, T, V] logits are never built here.)"""
        if prediction_loss_only or self.compute_metrics is None:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        half = inputs["input_ids"].shape[0] // 2
        if "rewards/chosen" in out.metrics:
            pairs = torch.stack([out.metrics["rewards/chosen"], out.metrics["rewards/rejected"]], dim=1)
        else:
            pairs = torch.stack([out.seq_logps[:half], out.seq_logps[half:]], dim=1)
        labels = torch.zeros(half, dtype=torch.long, device=pairs.device)
        return loss.detach(), pairs.detach().float(), labels

    def probe_dataset(self):
        dataset = self.eval_dataset
        if dataset is None or isinstance(dataset, dict):
            dataset = self.train_dataset
        return dataset

    # ----- anchors ---------------------------------------------------------------------------------------
    @property
    def ref_model(self):
        """The reference policy's module (None when it is the adapter-disabled policy or data columns)."""
        anchor = self.anchors.get("ref")
        return None if anchor is None else anchor.model

    @property
    def ref_mode(self) -> str:
        anchor = self.anchors.get("ref")
        return "none" if anchor is None else anchor.describe()

    def setup_anchors(self, model, args, train_dataset, eval_dataset) -> None:
        columns = set(getattr(train_dataset, "column_names", None) or [])
        if eval_dataset is not None and not isinstance(eval_dataset, dict):
            columns &= set(getattr(eval_dataset, "column_names", None) or [])
        self.anchors = anchor_lib.build_anchors(
            self.method.anchors, model, self._anchor_sources, self.load_kwargs, columns,
            starting_adapter=getattr(self, "starting_adapter", False),
        )  # fmt: skip
        if getattr(args, "precompute_ref_logps", False):
            for anchor in self.anchors.values():
                anchor.precomputed = True

    def prepare_anchors(self) -> None:
        if self.is_deepspeed_enabled and self._zero_stage() == "3":
            swapped = [n for n, a in self.anchors.items() if a.kind == "adapter state"]
            if swapped:  # its weights are partitioned: they cannot be swapped in for a pass (refused before any step)
                raise NotImplementedError(
                    f"anchor {swapped[0]!r} is an adapter's saved weights (a PeftModel's starting adapter, or "
                    "anchors={name: state}), which DeepSpeed ZeRO-3 partitions: pass the anchor as a model, as "
                    "precomputed <name>_chosen_logps / <name>_rejected_logps columns, or use ZeRO-2"
                )
        placed: dict[int, torch.nn.Module] = {}
        for anchor in self.anchors.values():
            if anchor.model is None:
                continue
            key = id(anchor.model)
            if key not in placed:
                if self.is_deepspeed_enabled:
                    placed[key] = deepspeed_inference(anchor.model, self.accelerator)
                else:
                    placed[key] = on_device(anchor.model, self.accelerator.device)
            anchor.model = placed[key]
        if not getattr(self.args, "precompute_ref_logps", False):
            return
        for anchor in self.anchors.values():
            if anchor.kind == "columns":
                continue
            self.train_dataset = anchor_lib.precompute(
                self, anchor, self.train_dataset, "train", self.anchor_token_logps
            )
            if isinstance(self.eval_dataset, dict):
                self.eval_dataset = {
                    k: anchor_lib.precompute(self, anchor, v, k, self.anchor_token_logps)
                    for k, v in self.eval_dataset.items()
                }
            elif self.eval_dataset is not None:
                self.eval_dataset = anchor_lib.precompute(
                    self, anchor, self.eval_dataset, "eval", self.anchor_token_logps
                )

    def train(self, *args, **kwargs):
        """Trainer.train, the frozen copies released first when their values are precomputed."""
        if getattr(self.args, "precompute_ref_logps", False) and self.frees_precomputed_anchors:
            self.free_precomputed_anchors()
        return super().train(*args, **kwargs)

    def free_precomputed_anchors(self) -> None:
        """When training starts every dataset carries the anchors' values, so the frozen copies (``copy``
        anchors: a whole copy of the policy, 16 GB for an 8B model in bf16) are no longer needed during the
        run: they are released (a dataset given to ``evaluate`` before training still has its values computed).
        A model passed as an anchor (``ref_model=``) stays, as TRL keeps it; the adapter kinds cost nothing."""
        freed = False
        for anchor in self.anchors.values():
            if anchor.kind == "copy" and anchor.model is not None:
                anchor.model, anchor.freed, freed = None, True, True
        if freed:
            import gc

            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

    def anchor_logps(self, inputs: dict, packing=None) -> dict[str, AnchorLogps]:
        """Every anchor's log-probabilities for this batch: from its columns when the batch carries them,
        else one no-grad pass of the anchor's policy through the fused op (``packing``: the step's)."""
        out = {}
        for name, anchor in self.anchors.items():
            if anchor.columns[0] in inputs:
                out[name] = anchor_lib.from_batch(anchor, inputs, self.anchor_token_logps)
                continue
            with anchor.policy(self.model) as policy:
                out[name] = anchor_lib.anchor_logps(policy, inputs, self.kernel_kwargs(), self.anchor_token_logps,
                                                    packing)  # fmt: skip
        return out

    def check_sequence_parallel(self) -> None:
        """Under sequence parallelism (``supports_sequence_parallel``: the loss reads each sequence's summed
        log-probabilities only) the options that read single tokens, and ZeRO-3, are refused."""
        if self.is_deepspeed_enabled and self._zero_stage() == "3":  # tests/distributed: ZeRO-2 only so far
            raise NotImplementedError(
                "sequence_parallel_size > 1 under DeepSpeed ZeRO-3 does not give one process's gradients yet; use "
                "ZeRO-2 (accelerate_configs/deepspeed_ulysses.yaml)"
            )
        for option in ("ld_alpha", "use_weighting", "padding_free", "z_loss", "whole_batch_loss"):
            if getattr(self.args, option, None) not in (None, False, 0, 0.0):
                raise NotImplementedError(f"{option} is not implemented with sequence_parallel_size > 1 yet")

    def anchor_summary(self) -> dict[str, str]:
        summary = {"reference": self.ref_mode}
        summary.update({f"anchor {n}": a.describe() for n, a in self.anchors.items() if n != "ref"})
        summary["precompute ref logps"] = str(bool(getattr(self.args, "precompute_ref_logps", False)))
        return summary

    # ----- the step -----------------------------------------------------------------------------------
    def pair_losses(self, chunk, anchors: dict[str, AnchorLogps], token_scale: float):
        """Per-pair losses [k] and metrics for one chunk of pairs (the method's pure loss)."""
        raise NotImplementedError(f"{type(self).__name__} must define pair_losses")

    def token_inputs(self, model, inputs: dict, anchors: dict[str, AnchorLogps],
                     packing=None) -> dict[str, torch.Tensor]:  # fmt: skip
        """Extra per-token tensors [2B, T-1] for the loss (``chunk.token_inputs``), aligned with the
        shifted targets; those that require grad receive their gradient through the fused op. Besides the
        anchors' per-token values: the completion positions (LD-DPO) and the half-temperature
        log-probabilities (WPO) when the config asks for them."""
        out = {f"{name}_token_logps": a.tokens for name, a in anchors.items() if a.tokens is not None}
        out.update(trl_options.token_inputs(model, inputs, self.args, self.kernel_kwargs(), packing))
        return out

    def sequence_logps(self, chunk, ref: AnchorLogps) -> tuple[AnchorLogps, AnchorLogps]:
        """The policy's and the reference's sequence log-probabilities of the chunk's pairs ([k] each):
        plain sums, or LD-DPO's length-desensitized sums when ``ld_alpha`` is set."""
        return trl_options.sequence_logps(chunk, ref, getattr(self.args, "ld_alpha", None))

    def weighted(self, chunk, losses: torch.Tensor) -> torch.Tensor:
        """Per-pair losses [k], times WPO's weights when ``use_weighting`` is set."""
        if not getattr(self.args, "use_weighting", False):
            return losses
        return losses * trl_options.wpo_weights(chunk)

    def pair_op_kwargs(self, anchors: dict[str, AnchorLogps]) -> dict:
        """Extra options of the pair-fused op for this step (e.g. ``ref_hidden``/``ref_weight``, which make
        ``chunk.token_kl`` the per-token KL(pi_ref || pi_theta)); none by default."""
        return {}

    def scored_mask(self, inputs: dict) -> torch.Tensor:
        """[2B, T] the tokens the fused op scores (a chunk's sums and token tensors cover them): the
        completions by default; ORPO also scores the chosen rows' prompts (its NLL covers them, as TRL's)."""
        return inputs["completion_mask"]

    def counted_tokens(self, batch) -> torch.Tensor:
        """The tokens a token mean divides by: the chosen completion tokens."""
        comp = batch["completion_mask"]
        return comp[: comp.shape[0] // 2, 1:].sum()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        shard = inputs if "shift_targets" in inputs else None  # a sequence-parallel shard (alignment.long_context)
        reduce = sp.group_sum(sp.sequence_group()) if shard is not None else None
        packing = packing_lib.batch_packing(self, inputs)  # checked against the model before any packed pass
        anchors = self.anchor_logps(inputs, packing)
        n_pairs = inputs["input_ids"].shape[0] // 2
        scale = self.token_scale(num_items_in_batch)
        if scale is None:  # evaluation: this batch's own chosen tokens
            scale = float(self.counted_tokens(inputs))
        self._batch_pairs = n_pairs
        z_coef = self.args.z_loss
        scored_mask = self.scored_mask(inputs)
        scored = scored_mask[:, 1:].sum() if z_coef else None  # no host sync when z-loss is off

        def loss_fn(chunk):
            dtype = chunk.chosen_logps.dtype
            index = chunk.pair_index
            chunk_anchors = {
                name: AnchorLogps(a.chosen[index].to(dtype), a.rejected[index].to(dtype)) for name, a in anchors.items()
            }
            losses, metrics = self.pair_losses(chunk, chunk_anchors, scale)
            contribution = losses.sum() / n_pairs
            if z_coef:  # PaLM's z-loss on every scored token (chosen and rejected), through the token lse
                contribution = contribution + z_loss(chunk.token_lse, z_coef, scored)
                chosen_sq, rejected_sq = chunk.token_sums(chunk.token_lse.detach() ** 2)
                metrics["z_loss/lse_squared"] = (chosen_sq + rejected_sq) / (
                    chunk.chosen_tokens + chunk.rejected_tokens
                ).clamp(min=1)
            return contribution, metrics

        loss_fn.whole_batch = bool(getattr(self.args, "whole_batch_loss", False))  # e.g. aot sorts the batch
        loss_fn.sequence_sum = reduce

        capture = {} if self.router_coef else None
        out = causal_pair_loss(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            scored_mask,
            loss_fn,
            backbone_kwargs={"output_router_logits": True} if self.router_coef else None,
            capture=capture,
            packing=packing,
            shard=shard,
            token_inputs=self.token_inputs(model, inputs, anchors, packing),
            **self.pair_op_kwargs(anchors),
            **self.kernel_kwargs(),
        )
        if shard is None:
            self._record(out, scored_mask[:, 1:], out.seq_logps)
        else:  # each sequence's tokens and sums over the ranks holding its positions
            scored_tokens = shard["shift_targets"] != sp.IGNORE
            self._record(out, scored_tokens, reduce(out.seq_logps.detach()), reduce(scored_tokens.sum(dim=1)))
        loss = out.loss
        if self.router_coef:  # a mixture of experts: the router's load-balancing loss, as TRL adds it
            mask = inputs["attention_mask"] if packing is None else packing.token_mask  # router logits' tokens
            aux = trl_options.router_aux_loss(model, capture["outputs"].router_logits, mask)
            loss = loss + self.router_coef * aux
            self.log_step_metrics({"aux_loss": aux.detach()}, "train" if self.model.training else "eval")
        return (loss, out) if return_outputs else loss

    def _record(self, out, comp, seq_logps, tokens=None) -> None:
        """Log the step's metrics: ``comp`` [2B, T'] the scored tokens of ``out.token_logps``; ``seq_logps`` and
        ``tokens`` [2B] each sequence's sum and scored tokens (over the group under sequence parallelism)."""
        mode = "train" if self.model.training else "eval"
        half = comp.shape[0] // 2
        tokens = (comp.sum(dim=1) if tokens is None else tokens).clamp(min=1).float()
        per_token = seq_logps.detach() / tokens
        values = dict(out.metrics)
        values["logps/chosen_per_token"] = per_token[:half]
        values["logps/rejected_per_token"] = per_token[half:]
        values.update(self.collapse_metrics(out.collapsed, out.token_logps, comp))
        self.log_step_metrics(values, mode)

    def kernel_path(self) -> str:
        frozen = not lm_head(self.model).weight.requires_grad
        return "pair-fused, head frozen (dh in forward, no dW)" if frozen else "pair-fused (3 GEMMs)"
