"""PreferenceTrainer(transformers.Trainer): the one fat trainer file; methods are thin subclasses.

Constructed the way TRL's trainers are::

    trainer = DPOTrainer(model, ref_model=None, args=DPOConfig(...), train_dataset=ds, eval_dataset=None,
                         processing_class=tokenizer, peft_config=None, callbacks=None)

``model`` is a model object or a path/Hub name; datasets are ``datasets.Dataset``s with prompt/chosen/
rejected columns (standard, conversational or implicit-prompt) or already tokenized ones. One training
step runs the backbone once on [chosen; rejected] and evaluates the method's loss inside the fused op's
pair-fused path (dh and dW formed in the forward; with a frozen head, as under LoRA, no dW is formed):
the [B, T, V] logits are never built. A method subclass overrides hooks (``pair_losses``,
``make_dataset``, ``compute_loss`` for SFT), never copies the step.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer

from alignment.configs import AlignmentConfig, DPOConfig
from alignment.data import (
    PreferenceCollator,
    tokenize_preference_dataset,
    validate_dataset,
)
from alignment.diagnostics.collapse import collapse_stats
from alignment.models import causal_pair_loss, lm_head, unwrap
from alignment.trainers import reference as ref_lib

logger = logging.getLogger("alignment")
TOKEN_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def load_model(model, dtype: str = "float32", trust_remote_code: bool = False) -> nn.Module:
    if not isinstance(model, str):
        return model
    torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype)
    return AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype, trust_remote_code=trust_remote_code)


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


class PreferenceTrainer(Trainer):
    """Shared machinery: data preparation, reference policy, the pair-fused step, metrics, the banner."""

    method = "dpo"
    paper = "Direct Preference Optimization (Rafailov et al. 2023)"
    arxiv = "2305.18290"
    config_class: type[AlignmentConfig] = DPOConfig
    loss_is_scaled_for_ga = False  # the Trainer divides our micro-batch loss by the accumulation steps

    def __init__(
        self,
        model,
        ref_model=None,
        args: AlignmentConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        callbacks=None,
        data_collator=None,
        optimizers=(None, None),
        model_init_kwargs: dict | None = None,
    ):
        args = args or self.config_class()
        if not isinstance(args, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(args).__name__}")
        kwargs = model_init_kwargs or {}
        model_id = model if isinstance(model, str) else getattr(getattr(model, "config", None), "_name_or_path", None)
        model = load_model(model, **kwargs)
        if processing_class is None:
            if not model_id:
                raise ValueError("pass processing_class (a tokenizer): the model has no path to load one from")
            processing_class = AutoTokenizer.from_pretrained(model_id)
        if processing_class.pad_token is None:
            processing_class.pad_token = processing_class.eos_token
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.model_id = model_id
        self.ref_cache_files: list[str] = []
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._prepare_reference(model, ref_model, args, kwargs)
        train_dataset = self.make_dataset(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self.make_dataset(v, processing_class, args, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self.make_dataset(eval_dataset, processing_class, args, "eval")
        collator = data_collator or PreferenceCollator(processing_class.pad_token_id, args.pad_to_multiple_of)
        super().__init__(
            model=model,
            args=args,
            data_collator=collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._place_reference()
        self.probe_status = self._probe_status()
        if args.diagnostics and self.probe_status == "on":
            from alignment.diagnostics import DiagnosticsCallback

            self.add_callback(DiagnosticsCallback(self))
        if getattr(args, "precompute_ref_logps", False):
            self.train_dataset = ref_lib.precompute(self, self.train_dataset, "train")
            if self.eval_dataset is not None and not isinstance(self.eval_dataset, dict):
                self.eval_dataset = ref_lib.precompute(self, self.eval_dataset, "eval")
        self.log_banner()

    # ----- data -------------------------------------------------------------------------------------
    def make_dataset(self, dataset, tokenizer, args, name: str):
        """Validate and tokenize a preference dataset (already tokenized ones pass through)."""
        if dataset is None:
            return None
        if all(c in dataset.column_names for c in TOKEN_COLUMNS):
            return dataset
        dataset, report = validate_dataset(dataset, f"{name} dataset")
        logger.info("%s", report)
        dataset, tok_report = tokenize_preference_dataset(
            dataset,
            tokenizer,
            args.max_length,
            args.truncation_mode,
            args.chat_template,
            args.dataset_num_proc,
            name,
        )
        self.__dict__.setdefault("data_reports", {})[name] = str(tok_report)
        return dataset

    # ----- reference ---------------------------------------------------------------------------------
    def _prepare_reference(self, model, ref_model, args, kwargs) -> None:
        self.ref_adapter_off = False
        if not getattr(args, "beta", None):  # SFT: no reference
            self.ref_model, self.ref_mode = None, "none"
            return
        if ref_model is not None:
            self.ref_model, self.ref_mode = ref_lib.frozen_copy(load_model(ref_model, **kwargs)), "model"
        elif _is_peft(model):
            self.ref_model, self.ref_mode, self.ref_adapter_off = None, "adapter", True
        else:
            self.ref_model, self.ref_mode = ref_lib.frozen_copy(model), "copy"
        if getattr(args, "precompute_ref_logps", False):
            self.ref_mode = f"precomputed ({self.ref_mode})"

    def _place_reference(self) -> None:
        if self.ref_model is None:
            return
        if self.is_deepspeed_enabled:
            self.ref_model = _deepspeed_inference(self.ref_model, self.accelerator)
        else:
            self.ref_model = self.ref_model.to(self.accelerator.device)

    def kernel_kwargs(self) -> dict:
        budget = self.args.kernel_memory_mb
        return {"memory_budget": budget * 2**20} if budget else {}

    def reference_logps(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if "ref_chosen_logps" in inputs:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        if self.ref_adapter_off:
            with ref_lib.adapter_disabled(self.model):
                return ref_lib.sequence_logps(self.model, inputs, self.kernel_kwargs())
        return ref_lib.sequence_logps(self.ref_model, inputs, self.kernel_kwargs())

    # ----- the step -----------------------------------------------------------------------------------
    def pair_losses(self, chunk, ref_chosen, ref_rejected, token_scale):
        """Per-pair losses [k] and metrics for one chunk of pairs (the method's pure loss)."""
        raise NotImplementedError

    def counted_tokens(self, batch) -> torch.Tensor:
        """The tokens a token mean divides by: the chosen completion tokens (SFT: all completion tokens)."""
        comp = batch["completion_mask"]
        return comp[: comp.shape[0] // 2, 1:].sum()

    def _get_num_items_in_batch(self, batch_samples, device):
        """``counted_tokens`` over the accumulation window and all processes (for token means)."""
        count = torch.as_tensor(sum(self.counted_tokens(b) for b in batch_samples), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    def token_scale(self, num_items_in_batch) -> float | None:
        """The chosen-token count that makes a micro-batch token mean equal the global one after the
        Trainer's division by the accumulation steps and DDP's average over processes."""
        if num_items_in_batch is None:
            return None
        steps = (
            max(self.current_gradient_accumulation_steps, 1)
            if hasattr(self, "current_gradient_accumulation_steps")
            else 1
        )
        return float(num_items_in_batch) / (steps * max(self.args.world_size, 1))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        ref_chosen, ref_rejected = self.reference_logps(inputs)
        n_pairs = inputs["input_ids"].shape[0] // 2
        scale = self.token_scale(num_items_in_batch)
        if scale is None:  # evaluation: this batch's own chosen tokens
            scale = float(inputs["completion_mask"][:n_pairs, 1:].sum())
        self._batch_pairs = n_pairs

        def loss_fn(chunk):
            dtype = chunk.chosen_logps.dtype
            losses, metrics = self.pair_losses(
                chunk, ref_chosen[chunk.pair_index].to(dtype), ref_rejected[chunk.pair_index].to(dtype), scale
            )
            return losses.sum() / n_pairs, metrics

        out = causal_pair_loss(
            model,
            inputs["input_ids"],
            inputs["attention_mask"],
            inputs["completion_mask"],
            loss_fn,
            **self.kernel_kwargs(),
        )
        self._record(out, inputs)
        return (out.loss, out) if return_outputs else out.loss

    def _record(self, out, inputs) -> None:
        mode = "train" if self.model.training else "eval"
        comp = inputs["completion_mask"][:, 1:]
        half = comp.shape[0] // 2
        tokens = comp.sum(dim=1).clamp(min=1).float()
        per_token = out.seq_logps.detach() / tokens
        values = dict(out.metrics)
        values["logps/chosen_per_token"] = per_token[:half]
        values["logps/rejected_per_token"] = per_token[half:]
        if self.args.diagnostics:
            stats = collapse_stats(out.collapsed, out.token_logps, comp)
            values.update({f"diagnostics/{key}": value for key, value in stats.items()})
        self.log_step_metrics(values, mode)

    def log_step_metrics(self, values: dict, mode: str) -> None:
        """Record the means of this step's metrics over the batch and all processes in one collective:
        every value is [n] (per pair or per sequence) or a scalar (repeated n times), and they travel as one
        [n, metrics] tensor."""
        device = self.accelerator.device
        flat = [torch.as_tensor(v, device=device).detach().float().reshape(-1) for v in values.values()]
        n = max(f.numel() for f in flat)
        stacked = torch.stack([f.expand(n) for f in flat], dim=1)
        means = self.accelerator.gather_for_metrics(stacked).mean(dim=0).tolist()
        for key, value in zip(values, means):
            self._metrics[mode][key].append(value)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        prefix = "eval_" if mode == "eval" and any(k.startswith("eval_") for k in logs) else ""
        for key, values in self._metrics[mode].items():
            if values:
                logs[prefix + key] = sum(values) / len(values)
        self._metrics[mode].clear()
        if mode == "train":  # the latest probe of the diagnostics callback, once
            logs.update(self.__dict__.pop("latest_diagnostics", {}))
        super().log(logs, start_time)

    # ----- the Hub --------------------------------------------------------------------------------------
    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Write our model card (method, paper, base model, data, hyperparameters, metrics, command)."""
        from alignment.hub import write_model_card

        if self.is_world_process_zero():
            write_model_card(self, model_name)

    # ----- what is active ------------------------------------------------------------------------------
    def active_summary(self) -> dict[str, str]:
        head = lm_head(self.model)
        frozen = not head.weight.requires_grad
        if self.is_deepspeed_enabled:
            engine = f"DeepSpeed ZeRO-{self._zero_stage()}"
        elif self.is_fsdp_enabled:
            engine = "FSDP"
        else:
            engine = "DDP" if self.args.world_size > 1 else "single process"
        peft = "none"
        if _is_peft(self.model):
            cfg = next(iter(unwrap_peft(self.model).peft_config.values()))
            peft = f"{type(cfg).__name__} r={getattr(cfg, 'r', '?')}"
        return {
            "method": f"{self.method} ({self.paper}, arXiv {self.arxiv})",
            "kernel path": "pair-fused, head frozen (dh in forward, no dW)" if frozen else "pair-fused (3 GEMMs)",
            "reference": self.ref_mode,
            "precompute ref logps": str(bool(getattr(self.args, "precompute_ref_logps", False))),
            "distributed": f"{engine}, {self.args.world_size} process(es), {self.args.device}",
            "peft": peft,
            "precision": "bf16" if self.args.bf16 else ("fp16" if self.args.fp16 else "float32"),
            "diagnostics": self.diagnostics_summary(),
        }

    def _probe_status(self) -> str:
        """'on', or why the probe-set diagnostics (entanglement, displacement) cannot run here."""
        if self.is_deepspeed_enabled and self._zero_stage() == "3":
            return "off: DeepSpeed ZeRO-3 partitions the parameters (per-pair gradients need them whole)"
        if self.is_fsdp_enabled:
            return "off: FSDP shards the parameters (per-pair gradients need them whole)"
        return "on"

    def diagnostics_summary(self) -> str:
        if not self.args.diagnostics:
            return "off"
        if self.probe_status != "on":
            return f"softmax collapse every step; probes {self.probe_status}"
        args = self.args
        params = f", params ~ /{args.diagnostics_params}/" if args.diagnostics_params else ""
        first = ", first-order check" if args.diagnostics_first_order else ""
        return (
            f"softmax collapse every step; entanglement + displacement on {args.diagnostics_probe_pairs} probe "
            f"pairs every {args.diagnostics_steps} steps{params}{first}"
        )

    def _zero_stage(self) -> str:
        plugin = self.accelerator.state.deepspeed_plugin
        return str(plugin.zero_stage) if plugin is not None else "?"

    def log_banner(self) -> None:
        lines = [f"  {k:<22}{v}" for k, v in self.active_summary().items()]
        if self.accelerator.is_main_process:
            logger.warning("alignment %s trainer, active configuration:\n%s", self.method, "\n".join(lines))


def unwrap_peft(model):
    while not hasattr(model, "peft_config") and hasattr(model, "module"):
        model = model.module
    return model


def _deepspeed_inference(model: nn.Module, accelerator) -> nn.Module:
    """Wrap a frozen reference model in a DeepSpeed engine with the training run's ZeRO stage (stage 3
    partitions it too), no optimizer."""
    import deepspeed

    plugin = accelerator.state.deepspeed_plugin
    config = {
        "train_micro_batch_size_per_gpu": plugin.deepspeed_config.get("train_micro_batch_size_per_gpu", 1),
        "zero_optimization": {"stage": plugin.zero_stage if plugin.zero_stage == 3 else 0},
        "bf16": {"enabled": bool(plugin.deepspeed_config.get("bf16", {}).get("enabled", False))},
    }
    engine, *_ = deepspeed.initialize(model=unwrap(model), config=config)
    engine.eval()
    return engine
