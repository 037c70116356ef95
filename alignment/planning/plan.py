"""``alignment plan RECIPE.yaml``: the memory of one optimizer step of a recipe's training, simulated on fake
tensors (torch's FakeTensorMode), so that an 8B model's step costs no memory and no weights are read.

How: the model is built from its config alone (``init_from_config``, or the config.json of the recipe's model
folder) with fake parameters; the recipe's own trainer is built around it (its method, anchors, PEFT, kernel
options, optimizer) with a synthetic batch of real token ids (``per_device_train_batch_size`` pairs, each
sequence ``max_length`` tokens, the first quarter prompt); then ``compute_loss``, ``backward`` and the
optimizer's step run through the real code - the backbone, the anchors' passes, the fused op's tiles - while
torch's MemTracker follows every fake allocation. With ``precompute_ref_logps`` the anchors' pass is simulated
as its own phase (the frozen copy is alive then), and the step runs from precomputed columns after the copy is
released, as training does.

The step simulated is training's steady-state step: the optimizer's state (AdamW's moments) already exists, as
from the second step on (:func:`steady_state`); the precompute phase runs before it, as at the start of training.

Reported (bytes): ``resident_bytes`` (parameters of the trained model and the anchors, and the optimizer's state,
before the step),
``step_peak_bytes`` (the most the step allocates above them), ``peak_bytes`` (their sum, the larger of the
precompute phase and the step), and ``breakdown`` (MemTracker's categories at the peak: parameters,
gradients, optimizer states, activations and temporaries - the kernel's tiles are activations there).

A recipe that trains on a GPU (no ``use_cpu``) is planned along the GPU code paths (alignment.planning.gpu:
the fused op's GEMMs in bf16 with float32 output, the Triton backend, its launches allocating nothing); ``trainer
= "trl"`` plans trl's DPOTrainer on the same model and batch (alignment.planning.trl_dpo); ``devices`` > 1 is
each rank's share under ZeRO-3 (alignment.planning.zero3); ``skew`` makes the batch's pairs length-skewed (pair i
of ``length / 2**i`` tokens), where ``padding_free`` packs only the real tokens.

What it does not count: the CUDA caching allocator's fragmentation and reserved-but-free blocks, cuBLAS /
NCCL workspaces, the CUDA context (about 0.5-1 GB per device), and the data loader's host memory. Expect a
GPU's ``max_memory_allocated`` within a few percent of ``peak_bytes`` and ``nvidia-smi`` 1-3 GB above it.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from unittest import mock

from alignment.errors import RecipeError
from alignment.planning.attention import check as check_attention
from alignment.planning.attention import gpu_attention, recipe_attention
from alignment.planning.describe import describe, parse_memory  # noqa: F401 (the CLI's, re-exported)
from alignment.planning.fake import (
    DEFAULT_SHAPE,
    PairShape,
    batch_rows,
    checkpointing,
    fake_model,
    model_config,
    model_dtype,
    planning_tokenizer,
)
from alignment.planning.gpu import gpu_code_paths
from alignment.planning.offload import PlannedOffload
from alignment.planning.sequence_parallel import share_zero2, ulysses_attention
from alignment.planning.tracker import StorageTracker, nbytes, tensors_of
from alignment.planning.zero3 import share


@dataclass
class Plan:
    method: str
    batch: int
    max_length: int
    resident_bytes: int
    step_peak_bytes: int
    peak_bytes: int
    precompute_peak_bytes: int | None = None
    breakdown: dict[str, int] = field(default_factory=dict)
    search: dict | None = None
    trainer: str = "alignment"
    target: str = "cpu"
    devices: int = 1
    skew: bool = False
    #: the most host (CPU) memory the offloaded activations take at once, per device (activation_offloading)
    host_offload_bytes: int | None = None
    #: ranks each pair is split across (sequence_parallel_size; the step planned is one rank's shard)
    sequence_parallel: int = 1
    #: why the plan has this length: the training rows' longest sequence, max_length, or the one asked for
    length_source: str | None = None
    #: the attention implementation counted (the recipe's model_init_kwargs attn_implementation)
    attention: str = "sdpa"
    #: the planned pair (its longer sequence max_length tokens): prompt, chosen and rejected tokens, and why
    pair: str | None = None
    #: the phase the peak falls in (precompute, forward, backward, optimizer)
    peak_phase: str | None = None
    #: each phase's peak above the resident bytes, and the fused op's own (``kernel``)
    phase_peaks: dict[str, int] = field(default_factory=dict)
    #: host memory as torch's pinned allocator holds it for the offloaded tensors (blocks of a power of two)
    host_pinned_bytes: int | None = None
    #: the card planned for (alignment.planning.devices) and the verdicts against its usable memory
    device: str | None = None
    usable_bytes: int | None = None
    fits: bool | None = None
    host_memory_bytes: int | None = None
    devices_per_node: int = 1
    host_fits: bool | None = None
    #: online DPO's sampling phase (alignment.planning.generation): its peak, and the tokens sampled per completion
    generation_peak_bytes: int | None = None
    new_tokens: int | None = None
    #: how online DPO samples when not with transformers generate on the training card (use_vllm)
    sampler: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def releasing_fake_tensors(function):
    """``function``, and when it raises, the frames of the traceback cleared and collected before the error goes
    on. Those frames hold the fake model and a half-built trainer; left to the interpreter's teardown, they are
    freed after torch's fake-tensor machinery is gone, and their storages' finalizers corrupt the heap
    ("corrupted double-linked list", a segmentation fault after the error was printed)."""
    import functools

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except BaseException as e:
            import gc
            import traceback

            traceback.clear_frames(e.__traceback__)
            gc.collect()
            raise

    return wrapped


def build(method_name: str, script, model_args, config, batch: int, length: int, fake: bool = True,
          skew: bool = False, rows: list[dict] | None = None, shape: PairShape = DEFAULT_SHAPE):  # fmt: skip
    """(trainer, inputs, precompute): the recipe's trainer around a model built from its config alone (fake
    parameters, or real random ones for a measurement) with the recipe's attention implementation, and a batch of
    ``batch`` synthetic pairs of ``shape`` whose longer sequence has ``length`` tokens (length-skewed with
    ``skew``); ``precompute``: the recipe precomputes its anchors (simulated as their own phase)."""
    from datasets import Dataset

    from alignment.trainers import get_method

    method = get_method(method_name)
    sampled = method.trainer.samples_completions
    if (not method.trainer.completions and not sampled) or method.build is not None:
        raise NotImplementedError(f"alignment plan simulates trainers of token sequences, not {method_name}")
    cfg = model_config(script, config.trust_remote_code)
    model = fake_model(cfg, model_dtype(model_args), fake, recipe_attention(config), method.trainer.model_head)
    precompute = bool(getattr(config, "precompute_ref_logps", False))
    config = _planning_copy(config, batch, length)
    pairs = rows or batch_rows(batch, length, cfg.vocab_size, skew, shape)  # rows: the data's own
    data = Dataset.from_list([{"prompt": "a prompt"}] * batch if sampled else pairs)
    extra = {"reward_funcs": [_no_reward]} if sampled else {}  # the step's pairs are given: no judge runs
    with mock.patch.object(type(config), "place_model_on_device", property(lambda self: not fake)):
        trainer = method.trainer(model, args=config, train_dataset=data, processing_class=planning_tokenizer(),
                                 peft_config=model_args.peft_config(), **extra)  # fmt: skip
    if config.activation_checkpointing or config.gradient_checkpointing:
        checkpointing(trainer.model)
    trainer.create_optimizer()
    trainer.log_step_metrics = lambda values, mode: None  # host-side means of fake values: not memory
    if hasattr(trainer, "record_metrics"):  # the same for a method's own host-side metrics (reward: min / max)
        trainer.record_metrics = lambda *args: None
    trainer._packing_checked = fake  # the packing check compares hidden states: real ones only
    if sampled:  # the pairs the step's sampling made (alignment.planning.generation plans the sampling)
        inputs = trainer.pair_collator([{k: row[k] for k in PAIR_COLUMNS} for row in pairs])
    else:
        inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(batch)])
    return trainer, inputs, precompute


PAIR_COLUMNS = ("prompt_ids", "chosen_ids", "rejected_ids")


def _no_reward(prompts, **columns) -> list[float]:
    return [0.0] * len(prompts)


def sampled_shape(config, length: int) -> PairShape:
    """The pair online DPO trains on at ``length`` tokens: both completions sampled to ``max_new_tokens`` (no EOS,
    the worst case), the prompt the rest (training keeps a sequence's end: the prompt is what is cut)."""
    new = min(config.max_new_tokens, length - 1)
    return PairShape.from_tokens(length - new, new, new, f"sampled: both completions max_new_tokens {new}, no EOS")


def _anchor_models(trainer) -> list:
    models = [a.model for a in getattr(trainer, "anchors", {}).values() if a.model is not None]
    return list({id(m): m for m in models if m is not trainer.model}.values())


def steady_state(trainer) -> None:
    """The optimizer's state as from training's second step on (AdamW's two moments per trained parameter),
    made before the simulated step: one optimizer step on zero gradients at learning rate 0, the gradients then
    dropped. Training repeats that step (its backward runs with the state resident), not the first one, whose
    state appears only at its end."""
    import torch

    optimizer = trainer.optimizer
    trained = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    rates = [group["lr"] for group in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
    for p in trained:
        p.grad = torch.zeros_like(p)
    optimizer.step()
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    optimizer.zero_grad(set_to_none=True)


def precompute_phase(trainer, inputs: dict) -> None:
    """Each anchor's no-grad pass over the batch; its values become the batch's columns, and the frozen copies
    are released, as training does after a precompute."""
    for name, values in trainer.anchor_logps(inputs).items():
        inputs[f"{name}_chosen_logps"], inputs[f"{name}_rejected_logps"] = values.chosen, values.rejected
    trainer.free_precomputed_anchors()


def step(trainer, inputs: dict, tracker=None, offload=None) -> None:
    """One optimizer step: compute_loss, backward, the optimizer (phases recorded when a tracker is given), in the
    trainer's activation-offloading context or ``offload`` (the planner's count of it on fake tensors)."""
    import contextlib

    def phase(name):
        return tracker.phase(name) if tracker is not None else contextlib.nullcontext()

    context = offload or getattr(trainer, "activation_offload", contextlib.nullcontext)()
    with context:  # as training_step runs both
        with phase("forward"), _kernel_phase(tracker) if tracker is not None else contextlib.nullcontext():
            loss = trainer.compute_loss(trainer.model, inputs)
        with phase("backward"):
            loss.backward()
    del loss
    with phase("optimizer"):
        trainer.optimizer.step()


@releasing_fake_tensors
def simulate(method_name: str, script, model_args, config, batch: int, length: int, *, target: str = "cpu",
             trainer: str = "alignment", devices: int = 1, skew: bool = False, rows: list[dict] | None = None,
             shape: PairShape = DEFAULT_SHAPE, generate: bool = True) -> Plan:  # fmt: skip
    """One optimizer step of ``batch`` pairs of ``shape`` whose longer sequence has ``length`` tokens, on fake
    tensors: on this CPU's code paths or a GPU's (``target="cuda"``, with the attention the recipe asks for), of our
    trainer or trl's DPOTrainer (``trainer="trl"``), one device or each rank's share under ZeRO-3 (``devices``),
    full-length or length-skewed pairs (``skew``). With the recipe's ``sequence_parallel_size`` N: one rank's shard
    of T/N positions under ZeRO-2 (planning.sequence_parallel). ``rows``: the batch's tokenized rows
    (planning.data_length), instead of synthetic ones. ``generate``: online DPO's sampling phase runs
    transformers generate on the training card (False: a vLLM engine samples, planned by the caller)."""
    attention = recipe_attention(config)
    check_attention(attention, target)
    if _samples(method_name):
        shape = sampled_shape(config, length)
    parallel = getattr(config, "sequence_parallel_size", 1)
    if parallel > 1:
        if trainer != "alignment" or devices % parallel:
            raise RecipeError(f"sequence_parallel_size {parallel}: plan our trainer on a multiple of it as --devices "
                              f"(got --devices {devices}, trainer {trainer})")  # fmt: skip
        if getattr(config, "precompute_ref_logps", False):
            raise RecipeError("precompute_ref_logps with sequence_parallel_size > 1 is not implemented (its pass "
                              "runs whole sequences on one process): set it false, the reference then runs on the "
                              "shards")  # fmt: skip
        with ulysses_attention(parallel, attention):
            plan = _simulate(method_name, script, model_args, config, batch, -(-length // parallel), target=target,
                             trainer=trainer, devices=devices, skew=skew, zero=2, shape=shape,
                             generate=generate)  # fmt: skip
        plan.max_length, plan.sequence_parallel = length, parallel
        plan.pair = shape.describe(length)
        return plan
    return _simulate(method_name, script, model_args, config, batch, length, target=target, trainer=trainer,
                     devices=devices, skew=skew, rows=rows, shape=shape, generate=generate)  # fmt: skip


def _simulate(method_name: str, script, model_args, config, batch: int, length: int, *, target: str, trainer: str,
              devices: int, skew: bool, zero: int = 3, rows: list[dict] | None = None,
              shape: PairShape = DEFAULT_SHAPE, generate: bool = True) -> Plan:  # fmt: skip
    if trainer not in ("alignment", "trl"):
        raise ValueError(f"trainer must be 'alignment' or 'trl', got {trainer!r}")
    if target not in ("cpu", "cuda"):
        raise ValueError(f"target must be 'cpu' or 'cuda', got {target!r}")
    attention = recipe_attention(config)
    paths = gpu_code_paths() if target == "cuda" else contextlib.nullcontext()
    recipe = (method_name, script, model_args, config, batch, length)
    with paths:
        if trainer == "trl":
            built, inputs, precompute, anchors = _build_trl(*recipe, skew, shape=shape)
        else:
            built, inputs, precompute = build(*recipe, skew=skew, rows=rows, shape=shape)
            anchors = _anchor_models(built)
        kernels = gpu_attention(attention, built.model) if target == "cuda" else contextlib.nullcontext()
        with kernels:
            plan = _phases(built, inputs, precompute, anchors, config, target, shape.tokens(length) if
                           _samples(method_name) and generate else None)  # fmt: skip
    plan.method, plan.batch, plan.max_length, plan.trainer = method_name, batch, length, trainer
    plan.target, plan.devices, plan.skew, plan.attention = target, devices, skew, attention
    plan.pair = None if rows else shape.describe(length)
    if devices > 1:
        _share(plan, built, zero, devices)
    for private in ("_tracker", "_anchors", "_precompute", "_pre_anchors", "_generation"):
        plan.__dict__.pop(private, None)
    return plan


def _samples(method_name: str) -> bool:
    from alignment.trainers import get_method

    return get_method(method_name).trainer.samples_completions


def _phases(built, inputs, precompute: bool, anchors: list, config, target: str, sampled=None) -> Plan:
    """The precompute phase (when the recipe has one), the generation phase (``sampled``: the pair's (prompt,
    chosen, rejected) tokens, for online DPO) and the steady-state step of ``built``, tracked; the plan's peak and
    its breakdown at the peak (the resident parts and what is alive then, by kind: they sum to it)."""
    pre, pre_anchors = None, anchors
    if precompute and getattr(built, "anchors", None):  # a frozen copy or the adapter-off pass
        pre_resident = {"parameters": nbytes(built.model.parameters()),
                        "anchors": nbytes(p for m in anchors for p in m.parameters())}  # fmt: skip
        with StorageTracker(built.model, *anchors) as pre_tracker, pre_tracker.phase("precompute"):
            precompute_phase(built, inputs)
        pre = (pre_resident, pre_tracker)
        anchors = _anchor_models(built)
    steady_state(built)
    resident = {"parameters": nbytes(built.model.parameters()),
                "anchors": nbytes(p for m in anchors for p in m.parameters()),
                "optimizer_states": nbytes(tensors_of([built.optimizer]))}  # fmt: skip
    generation = None
    if sampled is not None:
        from alignment.planning.generation import simulate_generation

        with StorageTracker(built.model, built.optimizer, *anchors) as generation:
            simulate_generation(built, len(inputs["input_ids"]) // 2, sampled[0], sampled[1], generation)
    offload = None
    with StorageTracker(built.model, built.optimizer, *anchors) as tracker:
        tracker.track_gradients(built.model.parameters())
        if getattr(config, "activation_offloading", False):  # the recipe's (trl's own manager is modelled too)
            offload = PlannedOffload(built.model.parameters(), streams=target == "cuda", tracker=tracker)
        step(built, inputs, tracker, offload)
    total = sum(resident.values())
    plan = Plan("", 0, 0, total, tracker.overall, total + tracker.overall)
    plan.breakdown = {**resident, **tracker.at_peak}
    plan.peak_phase = tracker.peak_phase
    plan.phase_peaks = dict(tracker.marks)
    plan._tracker, plan._anchors = tracker, anchors  # for a rank's share (not serialized)
    if generation is not None:
        plan.new_tokens = sampled[1]
        plan.generation_peak_bytes = total + generation.overall
        plan.phase_peaks["generation"] = generation.overall
        plan._generation = generation.overall
        if plan.generation_peak_bytes > plan.peak_bytes:
            plan.peak_bytes, plan.peak_phase = plan.generation_peak_bytes, "generation"
            plan.breakdown = {**resident, **generation.at_peak}
    if pre is not None:
        pre_resident, pre_tracker = pre
        plan.precompute_peak_bytes = sum(pre_resident.values()) + pre_tracker.overall
        plan.phase_peaks["precompute"] = pre_tracker.overall
        plan._precompute, plan._pre_anchors = (pre_resident, pre_tracker), pre_anchors
        if plan.precompute_peak_bytes > plan.peak_bytes:
            plan.peak_bytes, plan.peak_phase = plan.precompute_peak_bytes, "precompute"
            plan.breakdown = {**pre_resident, **pre_tracker.at_peak}
    if offload is not None:
        plan.host_offload_bytes, plan.host_pinned_bytes = offload.host_peak, offload.pinned_bytes
    return plan


def _share(plan: Plan, built, zero: int, devices: int) -> None:
    """Replace ``plan``'s totals by one rank's under ZeRO-3 (or ZeRO-2 with sequence parallelism), the precompute
    phase's included."""
    model_of = share if zero == 3 else share_zero2
    tracker, anchors = plan._tracker, plan._anchors
    rank = model_of(built.model, anchors, tracker.transient_marks["backward"], devices, _hidden(built.model))
    plan.resident_bytes, plan.step_peak_bytes = rank.partitioned_bytes, rank.peak_bytes - rank.partitioned_bytes
    plan.peak_bytes, plan.breakdown, plan.precompute_peak_bytes = rank.peak_bytes, rank.breakdown(), None
    plan.peak_phase = "backward"
    if getattr(plan, "_generation", None) is not None:  # the policy gathered whole for generation
        from alignment.planning.generation import gathered_bytes

        gathered = gathered_bytes(built.model, devices)
        plan.generation_peak_bytes = rank.partitioned_bytes + gathered + plan._generation
        if plan.generation_peak_bytes > plan.peak_bytes:
            plan.peak_bytes, plan.peak_phase = plan.generation_peak_bytes, "generation"
            plan.breakdown = {"partitioned": rank.partitioned_bytes, "gathered_parameters": gathered,
                              "generation": plan._generation}  # fmt: skip
    if getattr(plan, "_precompute", None) is not None:
        _, pre_tracker = plan._precompute
        before = model_of(built.model, plan._pre_anchors, pre_tracker.overall, devices, _hidden(built.model))
        before.bucket_bytes = 0  # no gradients to reduce in a no-grad pass
        plan.precompute_peak_bytes = before.peak_bytes
        if before.peak_bytes > plan.peak_bytes:
            plan.peak_bytes, plan.breakdown, plan.peak_phase = before.peak_bytes, before.breakdown(), "precompute"


def _hidden(model) -> int:
    return model.get_input_embeddings().weight.shape[1]


def _build_trl(method_name, script, model_args, config, batch: int, length: int, skew: bool, fake: bool = True,
               shape: PairShape = DEFAULT_SHAPE):  # fmt: skip
    from alignment.planning.trl_dpo import build_trl, trl_anchor_models

    if method_name != "dpo":
        raise NotImplementedError(f"the trl comparison plans trl's DPOTrainer, not {method_name}")
    cfg = model_config(script, config.trust_remote_code)
    model = fake_model(cfg, model_dtype(model_args), fake, recipe_attention(config))
    copy = _planning_copy(config, batch, length)
    copy.precompute_ref_logps = bool(getattr(config, "precompute_ref_logps", False))
    rows = batch_rows(batch, length, cfg.vocab_size, skew, shape)
    trainer, inputs = build_trl(cfg, model_args, copy, rows, model, fake)
    return trainer, inputs, False, trl_anchor_models(trainer)


def _profiled_peak(run) -> int:
    """The most torch allocates during ``run()`` above what was allocated before (torch profiler's memory
    events, summed in time order). Earlier garbage is collected first: a free inside the window of a tensor made
    before it would count against the window's allocations."""
    import gc

    from torch.profiler import ProfilerActivity, profile

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())  # fmt: skip
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


def measure(method_name: str, script, model_args, config, batch: int, length: int, trainer: str = "alignment",
            shape: PairShape = DEFAULT_SHAPE) -> dict:  # fmt: skip
    """The same step on real tensors on this CPU: the trained and anchor models' parameters plus the peak of
    what torch allocates during the step (and during the precompute phase), from the profiler's memory events."""
    if trainer == "trl":
        built, inputs, precompute, anchors = _build_trl(method_name, script, model_args, config, batch, length,
                                                        False, fake=False, shape=shape)  # fmt: skip
        steady_state(built)
        resident = nbytes(p for m in [built.model, *anchors] for p in m.parameters())
        resident += nbytes(tensors_of([built.optimizer]))
        step_peak = _profiled_peak(lambda: step(built, inputs))
        return {"resident_bytes": resident, "step_peak_bytes": step_peak, "precompute_peak_bytes": None,
                "peak_bytes": resident + step_peak}  # fmt: skip
    sampled = _samples(method_name)
    if sampled:
        shape = sampled_shape(config, length)
    trainer, inputs, precompute = build(method_name, script, model_args, config, batch, length, fake=False, shape=shape)
    pre_peak = None
    if precompute and getattr(trainer, "anchors", None):
        resident = nbytes(p for m in [trainer.model, *_anchor_models(trainer)] for p in m.parameters())
        pre_peak = resident + _profiled_peak(lambda: precompute_phase(trainer, inputs))
    steady_state(trainer)
    resident = nbytes(p for m in [trainer.model, *_anchor_models(trainer)] for p in m.parameters())
    resident += nbytes(tensors_of([trainer.optimizer]))
    generation_peak = None
    if sampled:
        from alignment.planning.generation import measure_generation

        prompt, new, _ = shape.tokens(length)
        generation_peak = resident + _profiled_peak(lambda: measure_generation(trainer, batch, prompt, new))
    step_peak = _profiled_peak(lambda: step(trainer, inputs))
    return {"resident_bytes": resident, "step_peak_bytes": step_peak, "precompute_peak_bytes": pre_peak,
            "generation_peak_bytes": generation_peak,
            "peak_bytes": max(resident + step_peak, pre_peak or 0, generation_peak or 0)}  # fmt: skip


def _kernel_phase(tracker: StorageTracker):
    """Record the fused op's peak above its start (its tiles, compacted states, formed gradients) as ``kernel``:
    the op's entry points, as alignment.heads calls them, are wrapped for the block."""
    import contextlib

    from alignment import heads as models

    stack = contextlib.ExitStack()
    for name in ("pair_fused_loss", "token_logps"):
        original = getattr(models, name)

        def wrapped(*args, _original=original, **kwargs):
            start, before = tracker.current, tracker.peak
            tracker.peak = tracker.current
            try:
                with tracker.labelled("kernel_workspace"):
                    return _original(*args, **kwargs)
            finally:
                tracker.marks["kernel"] = max(tracker.marks.get("kernel", 0), tracker.peak - start)
                tracker.peak = max(before, tracker.peak)

        stack.enter_context(mock.patch.object(models, name, wrapped))
    return stack


def _planning_copy(config, batch: int, length: int):
    """The run's config for one simulated step: this batch and length, no precompute (simulated as its phase),
    no diagnostics, no files."""
    import copy
    import tempfile

    config = copy.deepcopy(config)
    config.per_device_train_batch_size, config.max_length = batch, length
    config.output_dir = tempfile.mkdtemp(prefix="alignment-plan-")
    if hasattr(config, "precompute_ref_logps"):
        config.precompute_ref_logps = False
    config.diagnostics, config.report_to = False, []
    if hasattr(config, "sequence_parallel_size"):  # simulated as one rank's shard, no process group
        config.sequence_parallel_size, config.parallelism_config = 1, None
    return config


def search(fits, low: int, high: int, step: int) -> int | None:
    """The largest multiple of ``step`` in [low, high] for which ``fits`` holds (monotone), or None."""
    if not fits(low):
        return None
    best, lo, hi = low, low // step, high // step
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid * step):
            best, lo = mid * step, mid
        else:
            hi = mid - 1
    return best


def host_memory() -> int:
    """This machine's memory in bytes (the default --host_memory)."""
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


#: the longest pair and the largest batch the planner simulates (a step beyond them is refused before simulating)
MAX_TOKENS, MAX_BATCH, MAX_DEVICES = 1 << 22, 4096, 1 << 16


def check_options(length, batch, devices: int) -> None:
    """The planner's own options inside what it simulates, in one line each."""
    if not isinstance(devices, int) or not 1 <= devices <= MAX_DEVICES:
        raise RecipeError(f"--devices must be a whole number from 1 to {MAX_DEVICES}, got {devices}")
    for name, value, low, cap in (("--max_length", length, 2, MAX_TOKENS), ("--batch", batch, 1, MAX_BATCH)):
        if value in (None, "auto"):
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise RecipeError(f"{name} must be a whole number or auto, got {value!r}") from None
        if not low <= number <= cap:
            raise RecipeError(f"{name} must be from {low} to {cap:,} (or auto), got {value}")


@releasing_fake_tensors
def plan_recipe(recipe: str, overrides: dict | None = None, devices: int = 1, device_memory=None,
                length: str | None = None, batch: str | None = None, trainer: str = "alignment",
                skew: bool = False, target: str | None = None, prompt_tokens: int | None = None,
                completion_tokens: tuple[int, int] | None = None, host_bytes: int | None = None,
                devices_per_node: int | None = None) -> Plan:  # fmt: skip
    """The plan of a recipe (``alignment plan``). ``length`` / ``batch``: a number, or "auto" for the longest
    length (the largest batch) whose peak fits ``device_memory`` (a :class:`~alignment.planning.devices.Device`,
    whose usable memory counts, or a raw budget in bytes). ``target``: the device the step runs on (by default the
    recipe's: cpu with ``use_cpu``, else cuda); ``devices`` > 1: each rank's share under ZeRO-3;
    ``trainer="trl"``: trl's DPOTrainer on the same model and batch; ``skew``: length-skewed pairs;
    ``prompt_tokens`` / ``completion_tokens`` (chosen, rejected): the pair planned (else the recipe's rows when they
    can be read, else a synthetic unequal pair); ``host_bytes`` (default: this machine's memory) and
    ``devices_per_node`` (default: min(devices, 8)): the host verdict of the offloaded tensors per node."""
    from alignment.planning.devices import Device, raw
    from alignment.recipes import load_recipe
    from alignment.yaml_io import load_yaml

    check_options(length, batch, devices)
    card = device_memory if isinstance(device_memory, Device) or device_memory is None else raw(int(device_memory))
    if target is None:
        raw_recipe = load_yaml(Path(recipe).read_text(encoding="utf-8"), str(recipe)) if Path(recipe).exists() else {}
        use_cpu = {**(raw_recipe if isinstance(raw_recipe, dict) else {}), **(overrides or {})}.get("use_cpu", False)
        target = "cpu" if use_cpu is True else "cuda"
    method, script, model_args, config = load_recipe(recipe, {**(overrides or {}), "use_cpu": True})
    check_attention(recipe_attention(config), target)
    engine = vllm_engine(config)
    if engine is not None:
        config.use_vllm = False  # the step does not depend on it, and this machine has no vLLM to build it with
        if card is not None and engine[0] == "colocate":
            card = card.with_engine(engine[1])
    # a self-play recipe plans one iteration's training step (its trainer is the method's, its rows the pairs)
    b = config.per_device_train_batch_size if batch in (None, "auto") else int(batch)
    n = (config.max_length or 1024) if length in (None, "auto") else int(length)
    source = "given (--max_length)" if length not in (None, "auto") else f"max_length {n}"
    rows, shape = None, DEFAULT_SHAPE
    if completion_tokens is not None:
        prompt = prompt_tokens if prompt_tokens is not None else round(max(completion_tokens) / 3)
        shape = PairShape.from_tokens(prompt, *completion_tokens, "given (--prompt_tokens, --completion_tokens)")
        if length is None:
            n, source = prompt + max(completion_tokens), "the pair given (--prompt_tokens, --completion_tokens)"
    plain = length is None and batch != "auto" and not skew and trainer == "alignment" and completion_tokens is None
    if plain and getattr(config, "sequence_parallel_size", 1) == 1:  # the heaviest batch of the rows themselves
        from alignment.planning.data_length import heaviest_batch

        rows, longest, source = heaviest_batch(method, script, config, b)
        n = longest or n
    elif completion_tokens is None and length is not None:
        shape = rows_shape(method, script, config) or shape  # the rows' own proportions at another length
    if not 2 <= n <= MAX_TOKENS:
        raise RecipeError(f"a pair of {n:,} tokens ({source}): the planner simulates 2 to {MAX_TOKENS:,}")
    options = {"target": target, "trainer": trainer, "devices": devices, "skew": skew, "shape": shape,
               "generate": engine is None}  # fmt: skip

    def plan(pairs: int, tokens: int, data: list[dict] | None = None) -> Plan:
        return simulate(method, script, model_args, config, pairs, tokens, rows=data, **options)

    if "auto" in (length, batch):
        if card is None:
            raise RecipeError("--max_length auto / --batch auto need --device NAME (e.g. h100-80gb) or "
                              "--device_memory SIZE (e.g. 80GB)")  # fmt: skip
        from alignment.planning.search import longest

        cache: dict[int, Plan] = {}

        def peak_at(x: int) -> int:
            cache[x] = plan(b if length == "auto" else x, x if length == "auto" else n)
            return cache[x].peak_bytes

        grain, limit = (64, MAX_TOKENS) if length == "auto" else (1, MAX_BATCH)
        best = longest(peak_at, card.usable_bytes, grain, limit, start=n if length == "auto" else b)
        result = cache[best] if best else cache[min(cache)]
        result.search = {"field": "max_length" if length == "auto" else "batch", "best": best,
                         "device_memory": card.usable_bytes}  # fmt: skip
        result.length_source = "the longest that fits" if length == "auto" else source
    else:
        result = plan(b, n, rows)
        result.length_source = source
    _verdicts(result, card, host_bytes, devices_per_node or min(devices, 8))
    if engine is not None:
        result.sampler = (f"vLLM, {engine[0]}: " + (f"its engine takes gpu_memory_utilization {engine[1]:g} of the "
                          "card, the step the rest" if engine[0] == "colocate" else "the engine runs on other GPUs "
                          "(trl vllm-serve); nothing of it on this card"))  # fmt: skip
    return result


def vllm_engine(config) -> tuple[str, float] | None:
    """(vllm_mode, gpu_memory_utilization) of an online DPO recipe that samples with vLLM, else None: no
    generate phase is then planned on the training card."""
    if not getattr(config, "use_vllm", False):
        return None
    return config.vllm_mode, config.vllm_gpu_memory_utilization


def rows_shape(method, script, config) -> PairShape | None:
    """The proportions of the recipe's heaviest row (prompt share, the shorter completion's share), when the rows
    can be read."""
    from alignment.planning.data_length import heaviest_batch

    rows, _, _ = heaviest_batch(method, script, config, 1)
    if not rows or "chosen_ids" not in rows[0] or "rejected_ids" not in rows[0]:
        return None
    row = rows[0]
    chosen, rejected = len(row["chosen_ids"]), len(row["rejected_ids"])
    return PairShape.from_tokens(len(row["prompt_ids"]), max(chosen, 1), max(rejected, 1),
                                 "the proportions of the training rows' longest pair")  # fmt: skip


def _verdicts(plan: Plan, card, host_bytes: int | None, per_node: int) -> None:
    if card is not None:
        plan.device = card.describe()
        plan.usable_bytes = card.usable_bytes
        plan.fits = plan.peak_bytes <= card.usable_bytes
    if plan.host_pinned_bytes is not None:
        plan.host_memory_bytes = host_bytes or host_memory()
        plan.devices_per_node = per_node
        plan.host_fits = plan.host_pinned_bytes * per_node <= plan.host_memory_bytes
