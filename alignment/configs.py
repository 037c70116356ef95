"""Training configurations: ``AlignmentConfig(transformers.TrainingArguments)``, ``PreferenceConfig`` (what
every pairwise method shares) and the recipe's script and model arguments. Each method's own config class
lives in its method module (alignment/trainers/builtin/<method>.py) and is registered with it.

Every field has help text; a wrong value fails at construction (and so at recipe parse time) with a
message naming the field and the allowed values. Library-wide defaults differ from TrainingArguments':
bf16 only where a CUDA device supports it, ``remove_unused_columns=False`` (the collator needs the
token-id columns), ``report_to="none"``, logging every 10 steps, and ``max_length=1024``.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from transformers import TrainingArguments

from alignment.checks import check_bounds, check_finite
from alignment.secrets import without_secrets

#: bounds of TrainingArguments' and our numeric fields (transformers checks none of these: a 0 batch size
#: ended in a traceback deep in the data loader)
TRAINING_BOUNDS = {
    "per_device_train_batch_size": ">= 1",
    "per_device_eval_batch_size": ">= 1",
    "gradient_accumulation_steps": ">= 1",
    "eval_accumulation_steps": ">= 1",
    "learning_rate": ">= 0",
    "weight_decay": ">= 0",
    "adam_beta1": "[0, 1)",
    "adam_beta2": "[0, 1)",
    "adam_epsilon": ">= 0",
    "num_train_epochs": ">= 0",
    "warmup_steps": ">= 0",
    "logging_steps": "> 0",
    "eval_steps": "> 0",
    "save_steps": "> 0",
    "save_total_limit": ">= 0",
    "dataloader_num_workers": "[0, 1024]",  # processes: 1e12 spawned until the run hung
    "label_smoothing_factor": "[0, 1)",
    "kernel_memory_mb": ">= 1",
    "dataset_num_proc": "[1, 1024]",
    "max_steps": ">= -1",
    "tiled_mlp_shards": ">= 1",
    "seed": "[0, 4294967295]",  # numpy's and torch's seeds (set_seed refused the others after the model loaded)
    "data_seed": "[0, 4294967295]",
    "ddp_bucket_cap_mb": "> 0",
    "ddp_timeout": "> 0",
    "neftune_noise_alpha": ">= 0",
}


def choice(name: str, value, allowed) -> None:
    """Fail with a message naming the field and the allowed values."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")


def check_template(template: str) -> None:
    """A chat template that Jinja cannot parse fails here, naming its line, not at tokenization."""
    import jinja2

    try:
        jinja2.Environment(extensions=["jinja2.ext.loopcontrols"]).parse(template)
    except jinja2.TemplateSyntaxError as e:
        raise ValueError(f"chat_template is not a valid Jinja template (line {e.lineno}: {e.message})") from None


def _bf16_default() -> bool:
    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


@dataclass
class ScriptArguments:
    """What a recipe trains on: model, datasets and the evaluation split."""

    model_name_or_path: str = field(default="data/sft_model", metadata={"help": "Model path or Hub name."})
    tokenizer_name_or_path: str | None = field(
        default=None, metadata={"help": "Tokenizer path or Hub name (default: the model's)."}
    )
    dataset_mixture: list[str] | None = field(
        default=None,
        metadata={
            "help": "Dataset sources: files, save_to_disk folders or Hub names; 'path:weight' sets a weight; or "
            "{path, split, config, columns, weight} mappings (the handbook's shape is mapped to these)."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of each source to load."})
    eval_dataset: list[str] | None = field(default=None, metadata={"help": "Evaluation sources (same syntax)."})
    eval_split: str = field(default="test", metadata={"help": "Split of each evaluation source (Hub datasets)."})
    test_split_size: float | None = field(
        default=None, metadata={"help": "Hold out this fraction of the training mix for evaluation."}
    )
    drop_invalid_rows: bool = field(default=False, metadata={"help": "Drop malformed rows instead of failing."})
    eval_task: str | None = field(
        default=None, metadata={"help": "After training, run `alignment eval` on this task (arithmetic/sentiment/rps)."}
    )
    eval_prompts: int = field(default=500, metadata={"help": "Held-out prompts for the task evaluation."})
    eval_start: bool = field(
        default=True,
        metadata={"help": "With eval_task, also evaluate the start model before training (the report shows both)."},
    )
    report: bool = field(default=True, metadata={"help": "After training, write output_dir/report.html and report.md."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train into an output_dir that holds a finished run, replacing it."}
    )
    init_from_config: str | None = field(
        default=None,
        metadata={"help": "A JSON model config: build the model from it with random weights instead of loading "
                  "model_name_or_path (alignment plan reads it without building weights)."},
    )  # fmt: skip
    #: the self-play loop's settings (alignment.loops.settings.SelfPlayArguments) when the recipe says
    #: ``loop: self_play``; set by alignment.recipes from the loop's own fields, not parsed as one field
    self_play: Any = field(default=None, init=False, repr=False, metadata={"help": "The self-play loop's settings."})

    def __post_init__(self):
        check_finite(self)
        size = self.test_split_size
        if size is not None and not (0 < size < 1 or (size >= 1 and float(size).is_integer())):
            raise ValueError(f"test_split_size must be a fraction in (0, 1) or a whole number of rows, got {size}")
        check_bounds(self, {"eval_prompts": ">= 1"})


@dataclass
class ModelArguments:
    """How the model is built: dtype, PEFT/LoRA."""

    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16, float16 or auto."})
    use_peft: bool = field(default=False, metadata={"help": "Train a LoRA adapter instead of all weights."})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.0, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "Modules to adapt (default: all linear layers but the head)."}
    )
    lora_modules_to_save: list[str] | None = field(
        default=None, metadata={"help": "Modules trained in full beside the adapter (e.g. lm_head)."}
    )
    lora_task_type: str = field(default="CAUSAL_LM", metadata={"help": "PEFT task type."})
    use_rslora: bool = field(default=False, metadata={"help": "Rank-stabilized LoRA scaling (alpha / sqrt(r))."})
    use_dora: bool = field(default=False, metadata={"help": "Weight-decomposed LoRA (DoRA)."})

    def __post_init__(self):
        choice("dtype", self.dtype, ("float32", "bfloat16", "float16", "auto"))
        check_finite(self)
        check_bounds(self, {"lora_r": ">= 1", "lora_alpha": "> 0", "lora_dropout": "[0, 1)"})

    def peft_config(self):
        if not self.use_peft:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=self.lora_r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.lora_target_modules or "all-linear",
            modules_to_save=self.lora_modules_to_save,
            task_type=self.lora_task_type,
            use_rslora=self.use_rslora,
            use_dora=self.use_dora,
        )


@dataclass
class AlignmentConfig(TrainingArguments):
    """Library-wide training options (TrainingArguments plus data and kernel settings)."""

    output_dir: str = field(default="outputs/run", metadata={"help": "Where checkpoints, logs and the report go."})
    bf16: bool = field(
        default_factory=_bf16_default, metadata={"help": "bf16 mixed precision (default: on supported GPUs)."}
    )
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the token-id columns (leave False)."})
    report_to: str | list[str] = field(
        default="none", metadata={"help": "Integrations to report to (none, wandb, ...)."}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every N optimizer steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpointing: no, steps or epoch."})
    save_steps: float | None = field(
        default=None, metadata={"help": "Save a checkpoint every N steps (alone: turns save_strategy steps on)."}
    )
    max_length: int | None = field(default=1024, metadata={"help": "Truncate prompt + completion to this many tokens."})
    truncation_mode: str = field(default="keep_start", metadata={"help": "keep_start or keep_end."})
    tokenization: str = field(
        default="auto",
        metadata={
            "help": "shared: one prompt per pair (trl 1.16's DPOTrainer / KTOTrainer rule; keep_end cuts the "
            "shared prompt); trl: exactly what trl 1.16's trainer for this method does (CPO / ORPO: each "
            "completion its own prompt tokens, rows whose prompt fills max_length kept; DPO: keep_end cuts each "
            "sequence separately); auto: trl for cpo and orpo, shared otherwise. README, Tokenization."
        },
    )
    max_prompt_length: int | None = field(
        default=None,
        metadata={"help": "Keep the prompt's last N tokens, before max_length applies (TRL before 0.29)."},
    )
    max_completion_length: int | None = field(
        default=None,
        metadata={"help": "Keep each completion's first N tokens, before max_length applies (TRL before 0.29)."},
    )
    pad_to_multiple_of: int | str | None = field(
        default=None, metadata={"help": "Pad batches to a multiple of this ('auto', TRL's default: none here)."}
    )
    activation_offloading: bool = field(
        default=False,
        metadata={
            "help": "Move the tensors saved for the backward pass (with activation_checkpointing: the hidden states "
            "between layers) to CPU memory as they are made and back when the backward needs them (trl's "
            "OffloadActivations: pinned memory, a side stream). Exact; docs/long-context.md."
        },
    )
    tiled_mlp: bool = field(
        default=False,
        metadata={
            "help": "Compute every decoder layer's MLP in sequence tiles, forward and backward (DeepSpeed's "
            "TiledMLP, ALST): its [T, intermediate] tensors become [tile, intermediate]. Exact; docs/long-context.md."
        },
    )
    tiled_norms: bool = field(
        default=False,
        metadata={
            "help": "Compute the RMSNorms / LayerNorms in sequence tiles too (DeepSpeed's TiledMLP on them): their "
            "float32 [T, hidden] temporaries become [tile, hidden]. Exact; docs/long-context.md."
        },
    )
    sequence_parallel_size: int = field(
        default=1,
        metadata={
            "help": "Split each batch's sequences across this many ranks by position (DeepSpeed Ulysses through "
            "accelerate's ParallelismConfig; launch under DeepSpeed with a multiple of it as the process count). "
            "Methods: dpo. docs/long-context.md."
        },
    )
    tiled_mlp_shards: int | None = field(
        default=None,
        metadata={"help": "Tiles per sequence for tiled_mlp (default: ceil(tokens / hidden_size), ALST's rule)."},
    )
    chat_template: str | None = field(
        default=None, metadata={"help": "A Jinja chat template overriding the tokenizer's."}
    )
    dataset_num_proc: int | None = field(default=None, metadata={"help": "Processes for tokenization."})
    kernel_memory_mb: int | None = field(
        default=None, metadata={"help": "Working-memory budget of the fused op (MiB)."}
    )
    kernel_backend: str = field(
        default="auto",
        metadata={
            "help": "Who does the fused op's per-tile work: auto (Triton on a CUDA device when installed), torch or "
            "triton (also ALIGNMENT_KERNEL_BACKEND)."
        },
    )
    padding_free: bool = field(
        default=False,
        metadata={
            "help": "Pack each batch's sequences end to end (position_ids restart per sequence): no compute on "
            "padding. Preference methods and SFT."
        },
    )
    model_init_kwargs: dict | str | None = field(
        default=None,
        metadata={
            "help": "Keyword arguments of from_pretrained when the model is given by name (dtype as a string or a "
            "torch dtype, attn_implementation, ...); a JSON string from the command line."
        },
    )
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    disable_dropout: bool = field(default=True, metadata={"help": "Set every dropout probability of the model to 0."})
    pad_token: str | None = field(
        default=None, metadata={"help": "The padding token (default: the tokenizer's, else its EOS token)."}
    )
    z_loss: float = field(
        default=0.0,
        metadata={
            "help": "PaLM's z-loss (arXiv 2204.02311): this coefficient times the mean over scored tokens of "
            "lse^2, the log softmax normalizer squared (keeps the logits from drifting); 0: off."
        },
    )
    normalizer: str = field(
        default="softmax",
        metadata={
            "help": "How logits become probabilities in the loss: softmax, or stablemax (arXiv 2501.04697: s(x) = "
            "x + 1 for x >= 0, 1/(1 - x) below, in place of exp; not for sparsepo or regret)."
        },
    )
    allow_changed_settings: bool = field(
        default=False,
        metadata={
            "help": "Resume a checkpoint (or rerun a self-play folder) with settings other than those it was started "
            "with; the changes are logged and recorded (otherwise: an error listing them)."
        },
    )
    diagnostics: bool = field(
        default=True,
        metadata={
            "help": "Training diagnostics: softmax-collapse fractions on every step (free), gradient entanglement "
            "and likelihood displacement on a fixed probe set every diagnostics_steps (preference trainers)."
        },
    )
    diagnostics_steps: int = field(default=50, metadata={"help": "Probe every N optimizer steps (and at start/end)."})
    diagnostics_probe_pairs: int = field(
        default=16, metadata={"help": "Probe pairs: the first rows of the eval split (else of the training split)."}
    )
    diagnostics_params: str | None = field(
        default=None,
        metadata={"help": "Regex on parameter names: probe gradients over these trainable parameters only."},
    )
    diagnostics_first_order: bool = field(
        default=False,
        metadata={
            "help": "Also compare the first-order prediction <delta theta, g_w> with the observed change of logp_w "
            "over the step after each probe (keeps 2 x probe-pairs gradients in memory)."
        },
    )

    def __getstate__(self):
        """Pickled (training_args.bin in every save and checkpoint, which a push uploads) without its secrets:
        ``hub_token`` and any other field named like a credential (alignment.secrets) is None there."""
        return without_secrets(self.__dict__)

    def __copy__(self):  # copies keep every value (the pickling above is for files only)
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        new.__dict__.update({k: copy.deepcopy(v, memo) for k, v in self.__dict__.items()})
        return new

    def __post_init__(self):
        check_finite(self)  # every number of every method's config: --beta inf, --learning_rate nan
        check_bounds(self, TRAINING_BOUNDS)
        if isinstance(self.model_init_kwargs, str):  # from the command line
            import json

            try:
                self.model_init_kwargs = json.loads(self.model_init_kwargs)
            except json.JSONDecodeError as err:
                raise ValueError(f"model_init_kwargs is not valid JSON: {err}") from None
        if self.model_init_kwargs is not None and not isinstance(self.model_init_kwargs, dict):
            raise ValueError(f"model_init_kwargs must be a mapping, got {self.model_init_kwargs!r}")
        if self.sequence_parallel_size < 1:
            raise ValueError(
                f"sequence_parallel_size must be a positive number of ranks, got {self.sequence_parallel_size}"
            )
        if self.sequence_parallel_size > 1 and getattr(self, "parallelism_config", None) is None:
            from alignment.long_context.sequence_parallel import parallelism_config

            attention = (self.model_init_kwargs or {}).get("attn_implementation", "sdpa")  # Ulysses wraps this one
            self.parallelism_config = parallelism_config(self.sequence_parallel_size, attention)
        if isinstance(self.pad_to_multiple_of, str):  # TRL's "auto" (128 on Neuron devices only), or from text
            text = self.pad_to_multiple_of.lower()
            if text in ("auto", "none", "null"):
                self.pad_to_multiple_of = None
            elif text.isdigit() and int(text) > 0:
                self.pad_to_multiple_of = int(text)
            else:
                raise ValueError(f"pad_to_multiple_of must be a positive integer, 'auto' or None, got {text!r}")
        # idempotent, as every step of this method must be (dataclasses.replace runs it again on its own output):
        # save_steps stays None while checkpoints are off, so a rebuilt config cannot read it as "--save_steps N"
        strategy = str(getattr(self.save_strategy, "value", self.save_strategy))
        if self.save_steps is not None and strategy == "no":
            self.save_strategy = "steps"  # --save_steps N alone means: save every N steps
        elif self.save_steps is None and strategy != "no":
            self.save_steps = 500  # TrainingArguments' default
        choice("truncation_mode", self.truncation_mode, ("keep_start", "keep_end"))
        choice("tokenization", self.tokenization, ("auto", "shared", "trl"))
        choice("normalizer", self.normalizer, ("softmax", "stablemax"))
        choice("kernel_backend", self.kernel_backend, ("auto", "torch", "triton"))
        if not self.z_loss >= 0:
            raise ValueError(f"z_loss must be >= 0, got {self.z_loss}")
        for name in ("max_prompt_length", "max_completion_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {getattr(self, name)}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError(f"max_length must be >= 2 or None, got {self.max_length}")
        for name in ("diagnostics_steps", "diagnostics_probe_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.chat_template is not None:
            check_template(self.chat_template)
        if self.diagnostics_params is not None:
            try:
                re.compile(self.diagnostics_params)
            except re.error as err:
                raise ValueError(f"diagnostics_params is not a valid regular expression: {err}") from None
        from alignment.long_context.allocator import configure_allocator

        configure_allocator(self)  # before TrainingArguments may touch the device (expandable segments)
        super().__post_init__()


@dataclass
class PreferenceConfig(AlignmentConfig):
    """Options of every pairwise method: where its anchors' log-probabilities come from."""

    precompute_ref_logps: bool = field(
        default=False,
        metadata={
            "help": "Compute the anchors' (reference's) log-probabilities once before training (cached on disk)."
        },
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Cache folder for precomputed anchor values (default output_dir/_ref_logps_cache, which a push "
            "to the Hub leaves out)."
        },
    )
    precompute_ref_log_probs: bool | None = field(
        default=None, metadata={"help": "TRL's name for precompute_ref_logps (an alias)."}
    )
    precompute_ref_batch_size: int | None = field(
        default=None, metadata={"help": "Batch size of the precomputation (default: per_device_eval_batch_size)."}
    )
    learning_rate: float = field(default=1e-6, metadata={"help": "The initial learning rate (TRL's DPO default)."})
    ld_alpha: float | None = field(
        default=None,
        metadata={
            "help": "LD-DPO (Liu et al. 2024, arXiv 2409.06411): weight of the tokens of the longer response past "
            "the shorter one's length, in policy and reference log-probabilities (None: off)."
        },
    )
    use_weighting: bool = field(
        default=False,
        metadata={
            "help": "WPO (Zhou et al. 2024, arXiv 2406.11827, eq. 2): weight each pair by exp of the mean over its "
            "tokens of log p - log sum_v p_v^2, chosen times rejected (one extra no-grad policy pass per step)."
        },
    )
    sync_ref_model: bool = field(
        default=False,
        metadata={
            "help": "TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656): every ref_model_sync_steps steps set "
            "ref <- alpha * policy + (1 - alpha) * ref (needs a reference model, not precomputed values)."
        },
    )
    ref_model_sync_steps: int = field(default=512, metadata={"help": "TR-DPO: steps between reference updates."})
    ref_model_mixup_alpha: float = field(default=0.6, metadata={"help": "TR-DPO: alpha of the reference update."})
    router_aux_loss_coef: float | None = field(
        default=None,
        metadata={
            "help": "Mixture-of-experts models: weight of the router's load-balancing loss added to the loss (None: "
            "the model config's own coefficient; 0: off); logged as aux_loss."
        },
    )
    #: fields the model card leaves out (paths that mean nothing on another machine, aliases)
    card_exclude: ClassVar[tuple[str, ...]] = ("ref_cache_dir", "precompute_ref_log_probs", "precompute_ref_batch_size")
    #: the fields that act on a reference (a reference-free method's card leaves them out too)
    reference_fields: ClassVar[tuple[str, ...]] = (
        "precompute_ref_logps", "ld_alpha", "use_weighting", "sync_ref_model", "ref_model_sync_steps",
        "ref_model_mixup_alpha",
    )  # fmt: skip

    def __post_init__(self):
        if self.precompute_ref_log_probs is not None:  # TRL's spelling: one setting, two names
            self.precompute_ref_logps = bool(self.precompute_ref_log_probs or self.precompute_ref_logps)
            self.precompute_ref_log_probs = self.precompute_ref_logps
        if self.ld_alpha is not None and not 0.0 <= self.ld_alpha <= 1.0:
            raise ValueError(f"ld_alpha must be in [0, 1] or None, got {self.ld_alpha}")
        if self.sync_ref_model and self.precompute_ref_logps:
            raise ValueError("sync_ref_model updates the reference, so its log-probabilities cannot be precomputed")
        if self.ref_model_sync_steps < 1 or not 0.0 <= self.ref_model_mixup_alpha <= 1.0:
            raise ValueError("ref_model_sync_steps must be >= 1 and ref_model_mixup_alpha in [0, 1]")
        if self.precompute_ref_batch_size is not None and self.precompute_ref_batch_size < 1:
            raise ValueError(f"precompute_ref_batch_size must be >= 1, got {self.precompute_ref_batch_size}")
        super().__post_init__()
