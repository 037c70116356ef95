"""AlignmentTrainer(transformers.Trainer): what every method shares.

Model, tokenizer and PEFT setup; datasets through the ``make_dataset`` hook; step metrics and their single
collective; ``log``; the banner; the model card; the diagnostics wiring. It knows nothing of pairs or
anchors: :class:`~alignment.trainers.preference.PreferenceTrainer` adds those, and a method without pairs
(SFT, the regret-loss trainer) subclasses this class directly and overrides ``compute_loss``.

A subclass is registered as a method with :func:`alignment.trainers.registry.register`, which sets its
``method`` (name, config class, paper, anchors, ...).
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from transformers import Trainer

from alignment.checkpoints import latest_valid_checkpoint
from alignment.configs import AlignmentConfig
from alignment.data import PREFERENCE, tokenize_preference_dataset, validate_dataset
from alignment.data.loading import check_one_split, check_tokenized_columns
from alignment.data.tokenize import tokenize_stream
from alignment.diagnostics.collapse import collapse_stats
from alignment.errors import RecipeError, RunError
from alignment.locks import output_dir_lock
from alignment.long_context import offload_context, sequence_parallel, tile_mlps
from alignment.long_context.tiling import MLP, NORMS
from alignment.models import load_model, load_tokenizer, model_name, unwrap
from alignment.run_settings import check_same, read_settings, write_settings
from alignment.trainers import banner, packing, resume
from alignment.trainers.console import quiet_deepspeed_cpu_notice, use_compact_console
from alignment.trainers.finite import NonFiniteGuard, refuse_nonfinite_weights
from alignment.trainers.registry import Method
from alignment.trainers.trl_options import disable_dropout

logger = logging.getLogger("alignment")


@dataclass
class RunInfo:
    """What the model card says about how a model was made, beyond the trainer's own state: the command
    that reproduces it, the dataset sources, the base model (when it differs from the loaded path) and the
    task evaluation (of the start model too). ``alignment train`` fills it; from Python pass
    ``run_info=RunInfo(...)``."""

    command: str | None = None
    datasets: list[str] = field(default_factory=list)
    base_model: str | None = None
    eval: dict | None = None
    eval_start: dict | None = None  # the start model's task evaluation (``alignment train`` with eval_start)


class AlignmentTrainer(Trainer):
    """Shared machinery of every method trainer (see the module docstring)."""

    method: Method  # set by @register
    #: the completion columns of a row: ("chosen", "rejected") for pairs, ("completion",) for SFT
    completions: tuple[str, ...] = ()
    #: the rows are prompts and each step samples its completions (online DPO; planned with its generation phase)
    samples_completions = False
    loss_is_scaled_for_ga = False  # the Trainer divides our micro-batch loss by the accumulation steps
    needs_tokenizer = True  # False for a method whose model reads no text (the numeric regret learner)
    supports_z_loss = True  # False for a method whose loss does not come through the kernel's softmax
    supports_stablemax = True  # False where the loss needs the kernel's entropy or KL (not built for StableMax)
    supports_packing = False  # True for the trainers whose batches are token sequences (padding_free)
    #: the metrics of the console's one line per log, beside step and loss (the full record: train_log.jsonl)
    console_metrics: tuple[str, ...] = ()
    #: the loss runs on sequence-parallel shards (a preference loss of each sequence's summed log-probabilities)
    supports_sequence_parallel = False
    #: the tokenization rule of trl 1.16's trainer for this method (``tokenization: trl``) and whether it is the
    #: method's default (``tokenization: auto``); alignment.data.trl_rules
    trl_tokenization = "shared"
    trl_tokenization_by_default = False
    #: the head alignment.models.load_model builds: "causal_lm" (a policy) or "reward" (a one-output scalar head)
    model_head = "causal_lm"
    vocabulary_softmax = True  # False for a scalar head (the reward model): no softmax-collapse diagnostics

    def __init__(
        self,
        model,
        args: AlignmentConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        peft_config=None,
        callbacks=None,
        data_collator=None,
        optimizers=(None, None),
        model_init_kwargs: dict | None = None,
        run_info: RunInfo | None = None,
        compute_metrics=None,
    ):
        method = self._registered()
        args = args or method.config()
        if not isinstance(args, method.config):
            raise TypeError(f"{type(self).__name__} needs a {method.config.__name__}, got {type(args).__name__}")
        if args.normalizer != "softmax" and not self.supports_stablemax:
            raise NotImplementedError(
                f"normalizer {args.normalizer!r} is not implemented for {method.name} yet (it needs the kernel's "
                "entropy or KL, or has no vocabulary softmax); use softmax"
            )
        if args.padding_free and not self.supports_packing:
            raise ValueError(f"padding_free packs token sequences: {method.name} batches have none to pack")
        if args.z_loss and not self.supports_z_loss:
            raise ValueError(f"z_loss is supported by the trainers with a vocabulary softmax, not {method.name}")
        if self.completions and train_dataset is None:
            raise ValueError(f"`train_dataset` is required: {type(self).__name__} trains on rows with prompt and "
                             f"{self.completions}")  # fmt: skip
        check_one_split(train_dataset)
        self.load_kwargs = load_kwargs(args, model_init_kwargs, model)
        self.model_id = model_name(model)
        model = load_model(model, head=self.model_head, **self.load_kwargs)
        if processing_class is None and self.needs_tokenizer:
            if not self.model_id:
                raise ValueError("pass processing_class (a tokenizer): the model has no path to load one from")
            processing_class = load_tokenizer(self.model_id, args.trust_remote_code)
        set_pad_token(processing_class, args.pad_token)
        if hasattr(model, "add_model_tags"):  # shown on the Hub when the model is pushed
            model.add_model_tags(["alignment", method.name])
        #: the model came with its adapter (a PeftModel, no peft_config): its reference is that adapter's copy
        from alignment.trainers.anchors.peft import is_peft

        self.starting_adapter = peft_config is None and is_peft(model)
        if peft_config is not None:
            import warnings

            from peft import get_peft_model

            with warnings.catch_warnings():  # peft asks the model under transformers' old name; nothing to act on
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                model = get_peft_model(model, peft_config)
        if args.disable_dropout:  # after PEFT, as TRL does: the adapters' dropout (lora_dropout) is disabled too
            disable_dropout(model)
        self.run_info = run_info or RunInfo()
        self.setting_changes: list[str] = []  # what a resume with allow_changed_settings changed
        self.data_reports: dict[str, str] = {}
        self.ref_cache_files: list[str] = []
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._queued_logs: dict[str, float] = {}
        self.setup_anchors(model, args, train_dataset, eval_dataset)
        train_dataset = self.make_dataset(train_dataset, processing_class, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: self.make_dataset(v, processing_class, args, k) for k, v in eval_dataset.items()}
        else:
            eval_dataset = self.make_dataset(eval_dataset, processing_class, args, "eval")
        quiet_deepspeed_cpu_notice(args.use_cpu)
        sequence_parallel.check_method(self.supports_sequence_parallel, method.name, args.sequence_parallel_size)
        if args.sequence_parallel_size > 1:
            sequence_parallel.check_deepspeed_launch(args)  # accelerate's own error names no fix
            sequence_parallel.check_heads(getattr(model, "config", None), args.sequence_parallel_size)
            if getattr(args, "precompute_ref_logps", False):  # its pass would run whole sequences on one process
                raise NotImplementedError(
                    "precompute_ref_logps with sequence_parallel_size > 1: the precompute pass runs whole sequences "
                    "on one process; leave it off and the reference runs on each step's shards (docs/long-context.md)"
                )
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator or self.make_collator(processing_class, args),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
            compute_metrics=compute_metrics,
        )
        packing.configure(self)
        self.prepare_anchors()
        self.tile_mlps()
        if args.sequence_parallel_size > 1:
            self.check_sequence_parallel()
        self.probe_status = banner.probe_status(self)
        from alignment.checkpoints import SigtermCheckpoint

        self.sigterm = SigtermCheckpoint()  # before the diagnostics: its handler is in place when they start
        self.add_callback(self.sigterm)
        self.nonfinite = NonFiniteGuard(self)
        self.add_callback(self.nonfinite)
        use_compact_console(self, self.console_metrics)
        if args.diagnostics and self.probe_status == "on":
            from alignment.diagnostics import DiagnosticsCallback

            self.add_callback(DiagnosticsCallback(self))
        self.log_banner()

    def tile_mlps(self) -> None:
        """With ``tiled_mlp`` (``tiled_norms``): the MLPs (normalizations) of the trained model and of every anchor's
        frozen copy in sequence tiles."""
        kinds = (MLP if self.args.tiled_mlp else ()) + (NORMS if self.args.tiled_norms else ())
        if not kinds:
            return
        models = [self.model, *(a.model for a in getattr(self, "anchors", {}).values() if a.model is not None)]
        if not sum(tile_mlps(m, self.args.tiled_mlp_shards, kinds) for m in {id(m): m for m in models}.values()):
            names = " or ".join(f"*{k}" for k in kinds)
            raise RecipeError(f"tiled_mlp / tiled_norms: {type(unwrap(self.model)).__name__} has no {names} to tile")

    @classmethod
    def _registered(cls) -> Method:
        method = getattr(cls, "method", None)  # a subclass of a registered trainer is that method
        if not isinstance(method, Method):
            raise TypeError(f"{cls.__name__} is not a registered method: decorate it with @register(...)")
        return method

    # ----- hooks ---------------------------------------------------------------------------------------
    @classmethod
    def tokenize_rule(cls, args) -> str:
        """alignment.data.tokenize's rule for ``args.tokenization`` (auto / shared / trl) on this method."""
        choice = getattr(args, "tokenization", "auto")
        if choice == "trl" or (choice == "auto" and cls.trl_tokenization_by_default):
            return cls.trl_tokenization
        return "shared"

    def make_dataset(self, dataset, tokenizer, args, name: str):
        """Validate and tokenize one dataset whose rows have a prompt and the ``completions`` columns
        (already tokenized datasets and None pass through; a trainer without ``completions`` takes its
        datasets as they are). Precomputed anchor columns (``*_logps``) travel with their rows."""
        if dataset is None or not self.completions:
            return dataset
        if is_stream(dataset):
            check_stream(args, name)
            return tokenize_stream(dataset, tokenizer, name, self.completions, self.cut_length(args),
                                   args.truncation_mode, args.chat_template, args.max_prompt_length,
                                   args.max_completion_length,
                                   rule=self.tokenize_rule(args))  # fmt: skip
        if {"prompt_ids", *(f"{c}_ids" for c in self.completions)} <= set(dataset.column_names):
            check_tokenized_columns(dataset, f"{name} dataset")
            return dataset
        dataset, report = validate_dataset(dataset, f"{name} dataset", completions=self.completions)
        logger.info("%s", report)
        dataset, tok_report = tokenize_preference_dataset(
            dataset, tokenizer, self.cut_length(args), args.truncation_mode, args.chat_template, args.dataset_num_proc,
            name,
            args.max_prompt_length, args.max_completion_length, rule=self.tokenize_rule(args),
        )  # fmt: skip
        self.data_reports[name] = str(tok_report)
        if name == "train":
            check_learnable(dataset, self.completions, tok_report, args)
        return dataset

    def cut_length(self, args) -> int | None:
        """The length tokenization truncates rows to (``max_length``; a method that drops long rows instead,
        as the reward model does, returns None and filters them itself)."""
        return args.max_length

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        """Trainer.evaluate, taking raw rows too (prompt/chosen/rejected, a dict of splits): they are validated
        and tokenized as at construction (and their anchor values precomputed when the config asks)."""
        if isinstance(eval_dataset, dict):
            metrics = {}
            for name, dataset in eval_dataset.items():
                prepared = self.prepare_eval_dataset(dataset, name)
                metrics.update(super().evaluate(prepared, ignore_keys, f"{metric_key_prefix}_{name}"))
            return metrics
        if eval_dataset is not None and not isinstance(eval_dataset, str):
            eval_dataset = self.prepare_eval_dataset(eval_dataset, "eval")
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def prepare_eval_dataset(self, dataset, name: str):
        """A dataset given to ``evaluate``: validated and tokenized like the constructor's (already
        tokenized ones pass through)."""
        return self.make_dataset(dataset, self.processing_class, self.args, name)

    def make_collator(self, tokenizer, args):
        raise NotImplementedError(f"{type(self).__name__} must define make_collator or be given a data_collator")

    def setup_anchors(self, model, args, train_dataset, eval_dataset) -> None:
        """Build the method's frozen anchors (before the datasets are tokenized); none by default."""

    def prepare_anchors(self) -> None:
        """Place the anchors on the device and precompute what the config asks (after Trainer.__init__)."""

    def anchor_summary(self) -> dict[str, str]:
        return {"reference": "none"}

    def kernel_path(self) -> str:
        return "general (token log-probabilities, recompute in backward)"

    def probe_dataset(self):
        """The dataset whose first rows are the probe pairs of the diagnostics callback (pairs only)."""
        return None

    # ----- tokens and the kernel -------------------------------------------------------------------------
    def kernel_kwargs(self) -> dict:
        budget = self.args.kernel_memory_mb
        out = {"memory_budget": budget * 2**20} if budget else {}
        if self.args.normalizer != "softmax":
            out["normalizer"] = self.args.normalizer
        if self.args.kernel_backend != "auto":
            out["backend"] = self.args.kernel_backend
        return out

    def counted_tokens(self, batch) -> torch.Tensor:
        """The tokens a token mean divides by: every completion token of the batch."""
        return batch["completion_mask"][:, 1:].sum()

    def _get_num_items_in_batch(self, batch_samples, device):
        """``counted_tokens`` over the accumulation window and all processes (for token means)."""
        count = torch.as_tensor(sum(self.counted_tokens(b) for b in batch_samples), device=device)
        if self.args.world_size > 1:
            count = self.accelerator.gather(count.reshape(1)).sum()
        return count

    def token_scale(self, num_items_in_batch) -> float | None:
        """The token count that makes a micro-batch token mean equal the global one after the Trainer's
        division by the accumulation steps and DDP's average over processes."""
        if num_items_in_batch is None:
            return None
        steps = max(getattr(self, "current_gradient_accumulation_steps", 1), 1)
        return float(num_items_in_batch) / (steps * max(self.args.world_size, 1))

    # ----- metrics and logs --------------------------------------------------------------------------------
    def collapse_metrics(self, collapsed, logps, mask) -> dict[str, torch.Tensor]:
        """The softmax-collapse fractions of a step under ``diagnostics/`` (empty when diagnostics are off)."""
        if not self.args.diagnostics:
            return {}
        return {f"diagnostics/{k}": v for k, v in collapse_stats(collapsed, logps, mask).items()}

    def log_step_metrics(self, values: dict, mode: str) -> None:
        """Record the means of this step's metrics over the batch and all processes in one collective:
        every value is [n] (per pair or per sequence) or a scalar (repeated n times), and they travel as one
        [n, metrics] tensor."""
        device = self.accelerator.device
        flat = [torch.as_tensor(v, device=device).detach().float().reshape(-1) for v in values.values()]
        n = max(f.numel() for f in flat)
        stacked = torch.stack([f.expand(n) for f in flat], dim=1)
        # training: every pair counts (gather_for_metrics would cut an accumulation step's first micro-batch to
        # the epoch's remainder, as the Trainer has already fetched the step's last one and the loader reports
        # its end); evaluation: the duplicates that even out the processes' last batches are dropped
        gather = self.accelerator.gather if mode == "train" else self.accelerator.gather_for_metrics
        means = gather(stacked).mean(dim=0).tolist()
        for key, value in zip(values, means):
            self._metrics[mode][key].append(value)

    def queue_log(self, values: dict[str, float]) -> None:
        """Values to add, once, to the next training log (the diagnostics callback's latest probe)."""
        self._queued_logs.update(values)

    def training_step(self, *args, **kwargs):
        with self.activation_offload():
            loss = super().training_step(*args, **kwargs)
        self.nonfinite.record_loss(loss)  # checked with the gradients before the optimizer step
        return loss

    @contextlib.contextmanager
    def sequence_parallel(self):
        """With ``sequence_parallel_size`` > 1, while training: accelerate registers DeepSpeed's Ulysses attention
        for 2B rows per B pairs ([chosen; rejected]) and the Trainer's data loader adapter is ours, which keeps
        per-pair columns whole (alignment.long_context.sequence_parallel)."""
        if self.args.sequence_parallel_size == 1:
            yield
            return
        from unittest import mock

        from deepspeed.runtime.sequence_parallel import parallel_state_sp as mpu
        from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

        from alignment.long_context import sequence_parallel as sp

        def adapter(loader, model):
            group = mpu.get_sequence_parallel_group()
            return sp.ShardedBatches(loader, mpu.get_sequence_parallel_rank(), mpu.get_sequence_parallel_world_size(),
                                     group, self.accelerator.device)  # fmt: skip

        register = UlyssesSPAttentionHF.register_with_transformers
        rows = sp.preference_rows(register) if self.completions == PREFERENCE else register
        with mock.patch.object(UlyssesSPAttentionHF, "register_with_transformers", rows), \
                mock.patch.object(self.accelerator, "deepspeed_ulysses_dl_adapter", adapter):  # fmt: skip
            yield

    def check_sequence_parallel(self) -> None:
        """The options a method cannot run on sequence-parallel shards, refused (PreferenceTrainer's)."""

    def activation_offload(self):
        """The context a training step's forward and backward run in: trl's activation offloading with
        ``activation_offloading`` (one manager per trainer, made at the first step), else nothing."""
        if not self.args.activation_offloading:
            return contextlib.nullcontext()
        if getattr(self, "_offload", None) is None:
            self._offload = offload_context(self.model, self.args.device)
        return self._offload

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        """Trainer.save_model (and so every checkpoint and push), refused for a model with non-finite weights."""
        refuse_nonfinite_weights(self.model, f"the model to be saved in {output_dir or self.args.output_dir}")
        return super().save_model(output_dir, _internal_call)

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
        if mode == "train":
            logs.update(self._queued_logs)
            self._queued_logs = {}
        super().log(logs, start_time)

    def _save_checkpoint(self, model, trial):
        """Checkpoints are written to a staging folder and renamed when complete (alignment.checkpoints), each
        with the settings it was trained with (alignment.run_settings)."""
        from alignment.checkpoints import save_atomically

        def save():
            super(AlignmentTrainer, self)._save_checkpoint(model, trial)
            if self.args.should_save:  # inside the staging folder (save_atomically's output dir)
                staged = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
                write_settings(staged, self.run_settings())

        save_atomically(self, save, trial)

    # ----- one run, one writer, one set of settings --------------------------------------------------------
    def run_settings(self) -> dict:
        """What makes this run this run (alignment.trainers.resume.run_settings), compared on a resume."""
        return resume.run_settings(self)

    def train(self, resume_from_checkpoint=None, trial=None, **kwargs):
        """Trainer.train holding the output_dir's lock (alignment.locks); a resumed checkpoint's settings must
        equal this run's (``allow_changed_settings`` records the changes instead), and a checkpoint saved at the
        last step is the result, not a new start (alignment.trainers.resume)."""
        with output_dir_lock(self.args.output_dir, self.run_info.command, enabled=self.is_world_process_zero()):
            folder = resume_from_checkpoint
            if folder is True:
                folder = latest_valid_checkpoint(self.args.output_dir)
            if folder:
                self.setting_changes = check_same(read_settings(folder), self.run_settings(), f"checkpoint {folder}",
                                                  self.args.allow_changed_settings)  # fmt: skip
                if not self.setting_changes and resume.at_the_end(self, folder):
                    result = resume.finish_from(self, folder)
                    self.after_train()
                    return result
            with self.sequence_parallel():
                result = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        if self.state.global_step == getattr(self, "_initial_global_step", -1):
            resume.drop_empty_train_loss(self, result)
        self.after_train()
        return result

    # ----- hooks for modules a method trains beside the policy (SparsePO's mask network) --------------------
    def extra_param_groups(self) -> list[dict]:
        """Optimizer groups of parameters a method trains beside the policy (each with its own ``lr`` /
        ``weight_decay``); their parameters leave the default groups. None by default."""
        return []

    def save_extra_modules(self, output_dir: str, state_dict: dict | None) -> dict | None:
        """Save what is the method's own beside the policy in ``output_dir`` and return the policy's state dict
        (``state_dict``: the one being saved, None for the model's own; the default keeps it unchanged)."""
        return state_dict

    def after_train(self) -> None:
        """Called on every process when train() returns (e.g. a snapshot for the report); nothing by default."""

    def create_optimizer(self, model=None):
        """The Trainer's optimizer, with the groups of :meth:`extra_param_groups` added once."""
        fresh = self.optimizer is None
        optimizer = super().create_optimizer(model)
        groups = self.extra_param_groups() if fresh else []
        if groups:
            ids = {id(p) for group in groups for p in group["params"]}
            for group in optimizer.param_groups:
                group["params"] = [p for p in group["params"] if id(p) not in ids]
            for group in groups:
                optimizer.add_param_group(group)
        return optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer._save of the policy, after :meth:`save_extra_modules` took what is the method's own."""
        output_dir = output_dir or self.args.output_dir
        super()._save(output_dir, self.save_extra_modules(output_dir, state_dict))

    # ----- the Hub --------------------------------------------------------------------------------------
    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """Write our model card (method, paper, base model, data, hyperparameters, metrics, command)."""
        from alignment.hub import write_model_card

        if self.is_world_process_zero():
            write_model_card(self, model_name)

    # ----- what is active (the text: alignment.trainers.banner) --------------------------------------------
    def active_summary(self) -> dict[str, str]:
        """The banner's rows (methods add their own, e.g. SparsePO's token masks)."""
        return banner.active_summary(self)

    def _zero_stage(self) -> str:
        return banner.zero_stage(self)

    def log_banner(self) -> None:
        banner.log_banner(self)


def load_kwargs(args, model_init_kwargs: dict | None, model) -> dict:
    """from_pretrained's keyword arguments: the config's ``model_init_kwargs`` and ``trust_remote_code``, then
    the constructor's ``model_init_kwargs``; a warning when the model is already built (they do nothing)."""
    merged = {**(args.model_init_kwargs or {}), **(model_init_kwargs or {})}
    if merged and isinstance(model, nn.Module):
        logger.warning("model_init_kwargs %s are ignored: the model is already instantiated", sorted(merged))
    if args.trust_remote_code:
        merged.setdefault("trust_remote_code", True)
    return merged


def set_pad_token(tokenizer, pad_token: str | None) -> None:
    """The config's pad token (which must be in the vocabulary), else the tokenizer's, else its EOS token."""
    if tokenizer is None:
        return
    if pad_token is not None:
        if tokenizer.convert_tokens_to_ids(pad_token) in (None, tokenizer.unk_token_id):
            raise ValueError(f"pad_token {pad_token!r} is not in the tokenizer's vocabulary")
        tokenizer.pad_token = pad_token
    elif tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def is_stream(dataset) -> bool:
    """A streaming ``datasets.IterableDataset`` (tokenized on the fly, never loaded whole)."""
    from datasets import IterableDataset

    return isinstance(dataset, IterableDataset)


def check_stream(args, name: str) -> None:
    """What a streamed dataset needs: ``max_steps`` for training (its length is unknown, as in transformers),
    and no precompute (the values are computed once over a dataset with a length; TRL refuses it too)."""
    if getattr(args, "precompute_ref_logps", False):
        raise ValueError(
            f"`precompute_ref_log_probs=True` is not supported with IterableDataset: the {name} dataset streams, so "
            "its reference log-probabilities cannot be precomputed: set precompute_ref_logps: false, or load the "
            "dataset without streaming=True"
        )
    if name == "train" and args.max_steps <= 0:
        raise ValueError("a streaming train dataset (IterableDataset) has no length: set max_steps (> 0)")


def deepspeed_inference(model: nn.Module, accelerator) -> nn.Module:
    """Wrap a frozen model in a DeepSpeed engine with the training run's ZeRO stage (stage 3 partitions it
    too), no optimizer."""
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


def check_learnable(dataset, completions: tuple[str, ...], report, args) -> None:
    """A training set whose rows hold no completion token at all (every prompt fills max_length, so truncation left
    nothing to score) is refused before training: such a run would take its steps and change nothing."""
    if len(dataset) == 0:
        return  # the data layer names the dropped rows
    columns = [f"{c}_ids" for c in completions if f"{c}_ids" in dataset.column_names]
    if columns and not any(len(ids) for c in columns for ids in dataset[c]):
        raise RunError(f"train dataset: none of its {len(dataset)} rows keeps a completion token after truncation to "
                       f"max_length {args.max_length} ({report.truncated} truncated): nothing to learn from; raise "
                       "max_length, or set max_prompt_length / truncation_mode keep_end to cut the prompts"
                       )  # fmt: skip
