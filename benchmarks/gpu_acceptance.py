"""The GPU acceptance run: one command on a machine with one CUDA GPU (nothing downloaded) that writes one
JSON and one Markdown summary. ``--dry-run`` runs the same code at tiny shapes on the CPU (the Triton kernels
in Triton's interpreter), which CI does.

    bash benchmarks/gpu_acceptance.sh [--out DIR]          # on a GPU machine: under 8 minutes on an H200
    bash benchmarks/gpu_acceptance.sh --dry-run --out DIR  # anywhere: tiny shapes, CPU

Stages (each in its own process, so that memory peaks are its own):

1. ``tests``: ``pytest -m gpu`` (the ops against the float64 twin in float32 and bf16 with both backends, the
   vLLM test where vllm is installed); the dry run only collects them.
2. ``kernel``: forward + backward of the log-probabilities of N x V = 16k x 128k tokens x vocabulary, H = 4096,
   bf16: the bare three GEMMs (the bound), naive log_softmax, trl 1.16's chunked fused head, our general and
   pair-fused paths with the torch and the Triton backend: milliseconds, TFLOP/s (6 N H V counted) and
   max_memory_allocated; the pair-fused paths as a share of the GEMMs' rate.
3. ``dpo_step``: one DPO step of a Qwen2.5-1.5B-shaped random model (bf16, 4 pairs of 512 + 512 tokens, a
   separate reference, AdamW), ours against trl 1.16's DPOTrainer: tokens/s and max_memory_allocated.
4. ``planner``: ``alignment plan``'s peak for our DPO step of stage 3 (the same model shape, batch and length,
   as a recipe) against the measured peak of that step: ``max_memory_allocated`` on a GPU; in the dry run, the
   planner's own CPU measurement (the profiler's memory events of the same step on real tensors).
5. ``long_context``: one LoRA DPO step of a random Llama-3-8B with activation offloading, the tiled MLP and norms
   (recipes/llama-3-8b/dpo_lora_long.yaml, sdpa attention) at the longest pair this machine holds: the GPU's
   memory and the host's (the offloaded checkpoints, at most 60% of its available memory) against the lines of
   benchmarks/plan_long.json, or ``--long-tokens N``. Planned (``alignment plan``) and measured
   (``max_memory_allocated`` over the precompute pass and the step), with the step's seconds. Dry run: the same
   options on a tiny Qwen2 shape, 256 tokens, against the planner's CPU measurement. At 212,992 tokens on an
   80 GB GPU the plan alone takes minutes on one core and the step several minutes: run it alone with
   ``--stages long_context``.

Targets (BENCHMARKS.md): Triton pair-fused path at >= 60% of the bf16 GEMM rate; DPO step >= 1.2x TRL's
tokens/s at <= its memory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FULL = {"n": 16384, "v": 128256, "h": 4096, "seq": 512, "repeats": 5}
TINY = {"n": 128, "v": 1000, "h": 32, "seq": 16, "repeats": 1}
KERNEL_METHODS = ("gemm", "naive", "trl", "general_torch", "general_triton", "pair_fused_torch",
                  "pair_fused_triton")  # fmt: skip
QWEN_1_5B = {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2, "max_position_embeddings": 4096}  # fmt: skip
STAGES = ("tests", "kernel", "dpo_step", "planner", "long_context")
QWEN_TINY = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256}  # fmt: skip


# ----- helpers --------------------------------------------------------------------------------------------------
def _device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _reset_peak():
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return _peak_host_mb()


def _peak_host_mb() -> float:
    """This process's peak resident host memory (VmHWM), MiB."""
    import re

    return int(re.search(r"VmHWM:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def _timed(run, repeats: int) -> float:
    run()  # warm-up (Triton compiles, cuBLAS picks its kernels)
    _sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        _sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----- stage 2: the kernel -----------------------------------------------------------------------------------
def kernel_worker(method: str, shape: dict) -> dict:
    import torch

    from alignment.losses import dpo_loss
    from alignment.ops import pair_fused_loss, token_logps

    device, (n, v, h, seq) = _device(), (shape["n"], shape["v"], shape["h"], shape["seq"])
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, h, generator=gen).to(device, dtype)
    weight = (torch.randn(v, h, generator=gen) * 0.02).to(device, dtype)
    targets = torch.randint(0, v, (n,), generator=gen).to(device)
    pairs = n // (2 * seq)
    ref = torch.zeros(pairs, device=device)

    def leaves():
        return hidden.detach().requires_grad_(), weight.detach().requires_grad_()

    def loss_fn(chunk):
        losses, metrics = dpo_loss(chunk.chosen_logps, chunk.rejected_logps, ref[chunk.pair_index],
                                   ref[chunk.pair_index])  # fmt: skip
        return losses.sum() / pairs, metrics

    def run():
        if method == "gemm":
            z = hidden @ weight.t()
            z @ weight
            z.t() @ hidden
            return
        hh, ww = leaves()
        if method == "naive":
            logp = torch.log_softmax((hh @ ww.t()).float(), dim=-1).gather(1, targets.unsqueeze(1))
            logp.sum().backward()
        elif method == "trl":
            from trl.kernels.chunked_logprob import ChunkedLogProbFunction
            from trl.trainer.utils import _CHUNKED_LOGPROB_CHUNK_SIZE

            out = ChunkedLogProbFunction.apply(hh, ww, None, targets, 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
                                               ("log_probs",))  # fmt: skip
            out[0].sum().backward()
        elif method.startswith("general"):
            token_logps(hh, ww, targets, path="general", backend=method.split("_")[-1]).logps.sum().backward()
        else:
            backend = method.split("_")[-1]
            out = pair_fused_loss(hh.view(2 * pairs, seq, h), ww, targets.view(2 * pairs, seq), loss_fn,
                                  backend=backend)  # fmt: skip
            out.loss.backward()

    _reset_peak()
    seconds = _timed(run, shape["repeats"])
    return {"method": method, "ms": seconds * 1e3, "tflops": 6 * n * h * v / seconds / 1e12,
            "max_memory_mb": _peak_mb(), "device": device.type, "dtype": str(dtype)}  # fmt: skip


# ----- stage 3: one DPO step -----------------------------------------------------------------------------------
def dpo_worker(which: str, dry: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_train import _rows

    cuda = torch.cuda.is_available()
    words = 16 if dry else 512
    tokenizer = AutoTokenizer.from_pretrained(str(ROOT / "data" / "tokenizer"))
    torch.manual_seed(0)
    config = Qwen2Config(**(QWEN_TINY if dry else QWEN_1_5B), pad_token_id=0, bos_token_id=1, eos_token_id=2)
    dtype = torch.bfloat16 if cuda else torch.float32
    model, ref = Qwen2ForCausalLM(config).to(dtype), Qwen2ForCausalLM(config).to(dtype)
    ref.load_state_dict(model.state_dict())
    data = Dataset.from_list(_rows(4 * 3, words=words))
    common = dict(output_dir=f"/tmp/gpu_acceptance_{which}", per_device_train_batch_size=4, max_steps=3,
                  beta=0.1, learning_rate=1e-6, max_length=2 * words + 8, use_cpu=not cuda, bf16=cuda,
                  report_to=[], save_strategy="no", logging_steps=1000, seed=0, dataloader_num_workers=0)  # fmt: skip
    times: list[float] = []
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def on_step_begin(self, *args, **kwargs):
            _sync()
            times.append(time.perf_counter())

        def on_train_end(self, *args, **kwargs):
            _sync()
            times.append(time.perf_counter())

    if which == "trl":
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model=model, ref_model=ref, args=DPOConfig(**common), train_dataset=data,
                             processing_class=tokenizer, callbacks=[Clock()])  # fmt: skip
    else:
        from alignment.trainers import DPOConfig, DPOTrainer

        trainer = DPOTrainer(model, ref_model=ref, args=DPOConfig(**common, diagnostics=False), train_dataset=data,
                             processing_class=tokenizer, callbacks=[Clock()])  # fmt: skip
    sample = trainer.train_dataset.select(range(4))
    tokens = sum(len(r["prompt_ids"]) + len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in sample)
    _reset_peak()
    trainer.train()
    step_s = (times[-1] - times[1]) / 2  # steps 2 and 3 (step 1 warms up)
    return {"trainer": which, "tokens_per_s": tokens / step_s, "step_s": step_s, "max_memory_mb": _peak_mb()}


# ----- stage 4: the planner ------------------------------------------------------------------------------------
def planner_worker(dry: bool) -> dict:
    import tempfile

    import torch
    import yaml

    from alignment.planning.plan import measure, simulate
    from alignment.recipes import load_recipe

    cuda = torch.cuda.is_available()
    words = 16 if dry else 512
    folder = Path(tempfile.mkdtemp(prefix="gpu-acceptance-plan-"))
    shape = {"model_type": "qwen2", **(QWEN_TINY if dry else QWEN_1_5B), "pad_token_id": 0, "bos_token_id": 1,
             "eos_token_id": 2}  # fmt: skip
    (folder / "model.json").write_text(json.dumps(shape))
    recipe = {"method": "dpo", "init_from_config": str(folder / "model.json"), "beta": 0.1, "learning_rate": 1e-6,
              "dtype": "bfloat16" if cuda else "float32", "bf16": cuda, "use_cpu": not cuda,
              "per_device_train_batch_size": 4, "max_length": 2 * words + 8,
              "output_dir": str(folder / "out")}  # fmt: skip
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    method, script, model_args, config = load_recipe(folder / "recipe.yaml")
    plan = simulate(method, script, model_args, config, 4, 2 * words + 8)
    if cuda:
        return {"planned_mb": plan.peak_bytes / 2**20, "compare_with": "dpo_step ours max_memory_mb"}
    measured = measure(method, script, model_args, config, 4, 2 * words + 8)["peak_bytes"]
    return {"planned_mb": plan.peak_bytes / 2**20, "measured_mb": measured / 2**20,
            "error": plan.peak_bytes / measured - 1}  # fmt: skip


# ----- stage 5: long context ----------------------------------------------------------------------------------
LONG = {"activation_checkpointing": True, "activation_offloading": True, "tiled_mlp": True, "tiled_norms": True}
HOST_SHARE = 0.6  # of the host's available memory the offloaded checkpoints may take (pinned pages)


def card_of(total_bytes: int) -> str | None:
    """The card (alignment.planning.devices) whose reported memory is within 1% of ``total_bytes``."""
    from alignment.planning.devices import CARDS

    return next((name for name, (gib, _) in CARDS.items() if abs(total_bytes / 2**30 - gib) <= 0.01 * gib), None)


def long_rows(card: str | None, model: str | None = None) -> list[dict]:
    """The one-GPU rows of ours in benchmarks/plan_long.json planned for ``card`` (the rows this machine can check);
    for a card the table has no rows for, the H100 80GB rows (their lines scale to any memory)."""
    rows = json.loads((ROOT / "benchmarks" / "plan_long.json").read_text())["rows"]
    mine = [r for r in rows if r["trainer"] == "alignment" and r["devices"] == 1 and (model in (None, r["model"]))]
    return [r for r in mine if r.get("card") == card] or [r for r in mine if r.get("card") == "h100-80gb"]


def long_length(device_bytes: int, host_bytes: int, row: dict | None = None) -> dict:
    """The longest pair of ``row`` (default: Llama-3-8B LoRA DPO with offloading and tiling) this machine can run:
    the row's device line (peak = a + b * tokens, its two shortest plans) at the card's usable memory (the reserve
    of alignment.planning.devices; 95% of an unknown card's), and its host line (pinned bytes per token) at
    HOST_SHARE of the available host memory; the shorter, in 4096-token steps."""
    from alignment.planning.devices import device

    card = card_of(device_bytes)
    row = row or long_rows(card, "llama-3-8b")[0]
    budget = device(card).usable_bytes if card else 0.95 * device_bytes
    (a, pa), (b, pb) = sorted((int(n), p) for n, p in row["points"].items())[:2]
    slope = (pb["peak_bytes"] - pa["peak_bytes"]) / (b - a)
    by_device = a + (budget - pa["peak_bytes"]) / slope
    by_host = HOST_SHARE * host_bytes / 2**30 / (pb.get("pinned_gib", pb["host_gib"]) / b)
    tokens = int(min(by_device, by_host)) // 4096 * 4096
    return {"tokens": tokens, "limited_by": "device" if by_device <= by_host else "host", "card": card,
            "model": row["model"], "by_device": int(by_device), "by_host": int(by_host),
            "table_longest": row.get("longest")}  # fmt: skip


def _available_host_bytes() -> int:
    import re

    return int(re.search(r"MemAvailable:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1)) * 1024


def long_recipe(dry: bool, tokens: int, model: str = "llama-3-8b"):
    """(method, script, model_args, config) of the long-context stage: recipes/llama-3-8b/dpo_lora_long.yaml on a
    random ``model`` (flash_attention_2 where flash-attn is installed, else sdpa, whose mask the trainer avoids;
    one pair of ``tokens`` for its longer sequence); dry: the same options on a tiny Qwen2 shape on the CPU in
    float32 (sdpa)."""
    import importlib.util
    import tempfile

    import yaml

    from alignment.recipes import load_recipe

    flash = not dry and importlib.util.find_spec("flash_attn") is not None
    overrides = {"max_length": tokens, "per_device_train_batch_size": 1, "diagnostics": False,
                 "model_init_kwargs": {"attn_implementation": "flash_attention_2" if flash else "sdpa"},
                 **LONG}  # fmt: skip
    if not dry:
        overrides["init_from_config"] = str(ROOT / "benchmarks" / "model_configs" / f"{model}.json")
        return load_recipe(ROOT / "recipes" / "llama-3-8b" / "dpo_lora_long.yaml", overrides)
    folder = Path(tempfile.mkdtemp(prefix="gpu-acceptance-long-"))
    shape = {"model_type": "qwen2", **QWEN_TINY, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    (folder / "model.json").write_text(json.dumps(shape))
    recipe = {"method": "dpo", "init_from_config": str(folder / "model.json"), "beta": 0.1, "learning_rate": 1e-6,
              "dtype": "float32", "bf16": False, "use_cpu": True, "use_peft": True, "lora_r": 8, "lora_alpha": 16,
              "precompute_ref_logps": True, "output_dir": str(folder / "out"), **overrides}  # fmt: skip
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    return load_recipe(folder / "recipe.yaml")


def long_context_worker(dry: bool, tokens: int | None) -> dict:
    """Stage 5: every one-GPU row of ours in benchmarks/plan_long.json for the card found (Llama-3-8B, Qwen2.5-7B
    LoRA), each at the longest pair this machine holds (or ``tokens``); dry: one tiny row on the CPU."""
    import torch

    if dry or not torch.cuda.is_available():
        return long_context_row(dry, tokens, "llama-3-8b")
    card = card_of(torch.cuda.get_device_properties(0).total_memory)
    rows = [long_context_row(dry, tokens, row["model"]) for row in long_rows(card)]
    return {**rows[0], "rows": rows, "card": card}


def long_context_row(dry: bool, tokens: int | None, model: str) -> dict:
    """Plan, then run, one step of ``model``'s longest pair: on a GPU, the precompute pass and the training step on
    real random weights, ``torch.cuda.max_memory_allocated`` against the plan's peak; dry: the planner's CPU
    measurement (the profiler's memory events of the same step on real tensors) against its CPU plan."""
    from unittest import mock

    import torch

    from alignment.planning import plan as planning

    cuda = torch.cuda.is_available()
    chosen = {"tokens": tokens or 256, "limited_by": "given" if tokens or dry else None, "model": model}
    if cuda and not tokens:
        row = long_rows(card_of(torch.cuda.get_device_properties(0).total_memory), model)[0]
        chosen = long_length(torch.cuda.get_device_properties(0).total_memory, _available_host_bytes(), row)
    n = chosen["tokens"]
    recipe = long_recipe(dry, n, model)
    began = time.perf_counter()
    planned = planning.simulate(*recipe, 1, n, target="cuda" if cuda else "cpu")
    result = {**chosen, "planned_mb": planned.peak_bytes / 2**20, "plan_s": round(time.perf_counter() - began),
              "planned_host_mb": (planned.host_offload_bytes or 0) / 2**20,
              "planned_pinned_mb": (planned.host_pinned_bytes or 0) / 2**20,
              "attention": planned.attention}  # fmt: skip
    if not cuda:
        measured = planning.measure(*recipe, 1, n)["peak_bytes"]
        return {**result, "measured_mb": measured / 2**20, "error": planned.peak_bytes / measured - 1}

    real_model = planning.fake_model

    def on_gpu(cfg, dtype, fake=True, attention="sdpa"):  # real random weights, made on the GPU (seconds)
        with torch.device("cuda"):
            return real_model(cfg, dtype, False, attention)

    with mock.patch.object(planning, "fake_model", on_gpu):
        trainer, inputs, precompute = planning.build(*recipe, 1, n, fake=False)
    inputs = trainer._prepare_inputs(inputs)
    _reset_peak()
    began = time.perf_counter()
    if precompute:
        planning.precompute_phase(trainer, inputs)
    _sync()
    middle = time.perf_counter()
    planning.step(trainer, inputs)
    _sync()
    measured = torch.cuda.max_memory_allocated()
    return {**result, "measured_mb": measured / 2**20, "error": planned.peak_bytes / measured - 1,
            "precompute_s": round(middle - began, 1), "step_s": round(time.perf_counter() - middle, 1),
            "host_peak_mb": _peak_host_mb()}  # fmt: skip


# ----- the stages as subprocesses -----------------------------------------------------------------------------
def _sub(args: list[str], env: dict, timeout: int) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)  # fmt: skip
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1][:300]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_tests(dry: bool, env: dict) -> dict:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"]
    cmd += ["--collect-only"] if dry else []
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    last = (done.stdout.strip().splitlines() or [""])[-1]
    return {"command": " ".join(cmd[2:]), "returncode": done.returncode, "summary": last, "collected_only": dry}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (what CI runs)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_acceptance"), help="folder of the summary")
    parser.add_argument("--kernel-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dpo-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--planner-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long-context-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--long-tokens", type=int, default=None, help="stage 5's tokens per sequence (default: "
                        "the longest this machine holds)")  # fmt: skip
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated subset of {','.join(STAGES)}")
    args = parser.parse_args()
    shape = TINY if args.dry_run else FULL
    if args.kernel_worker:
        print(json.dumps(kernel_worker(args.kernel_worker, shape)))
        return 0
    if args.dpo_worker:
        print(json.dumps(dpo_worker(args.dpo_worker, args.dry_run)))
        return 0
    if args.planner_worker:
        print(json.dumps(planner_worker(args.dry_run)))
        return 0
    if args.long_context_worker:
        print(json.dumps(long_context_worker(args.dry_run, args.long_tokens)))
        return 0
    stages = [x.strip() for x in args.stages.split(",") if x.strip()]
    unknown = sorted(set(stages) - set(STAGES))
    if unknown:
        parser.error(f"unknown stage(s) {', '.join(unknown)}; the stages are {', '.join(STAGES)}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if args.dry_run:
        env.update({"TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"})
    began = time.perf_counter()
    dry = ["--dry-run"] if args.dry_run else []
    summary = {
        "dry_run": args.dry_run,
        "machine": platform.node(),
        "shape": shape,
        "stages": stages,
    }
    if "tests" in stages:
        summary["tests"] = run_tests(args.dry_run, env)
    if "kernel" in stages:
        summary["kernel"] = [{"method": m, **_sub(["--kernel-worker", m, *dry], env, 600)} for m in KERNEL_METHODS]
    if "dpo_step" in stages:
        summary["dpo_step"] = [{"trainer": w, **_sub(["--dpo-worker", w, *dry], env, 900)} for w in ("trl", "ours")]
    if "planner" in stages:
        summary["planner"] = _sub(["--planner-worker", *dry], env, 900)
    if "long_context" in stages:
        tokens = ["--long-tokens", str(args.long_tokens)] if args.long_tokens else []
        summary["long_context"] = _sub(["--long-context-worker", *dry, *tokens], env, 3600)
    ours = next((r for r in summary.get("dpo_step", []) if r["trainer"] == "ours" and "max_memory_mb" in r), None)
    if ours and "planned_mb" in summary.get("planner", {}) and "measured_mb" not in summary["planner"]:
        summary["planner"]["measured_mb"] = ours["max_memory_mb"]  # on a GPU: stage 3's max_memory_allocated
        summary["planner"]["error"] = summary["planner"]["planned_mb"] / ours["max_memory_mb"] - 1
    summary["seconds"] = round(time.perf_counter() - began, 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_acceptance.json").write_text(json.dumps(summary, indent=1))
    (out / "gpu_acceptance.md").write_text(markdown(summary))
    print(markdown(summary))
    return 0


def markdown(summary: dict) -> str:
    title = f"# GPU acceptance{' (dry run: tiny shapes on the CPU)' if summary['dry_run'] else ''}"
    lines = [title, "", f"- stages: {', '.join(summary['stages'])}"]
    if "tests" in summary:
        lines.append(f"- tests: `{summary['tests']['command']}` -> {summary['tests']['summary']}")
    if "kernel" in summary:
        lines += _kernel_lines(summary)
    if "dpo_step" in summary:
        lines += ["", "| DPO step | tokens/s | max memory (MiB) |", "| --- | ---: | ---: |"]
        for r in summary["dpo_step"]:
            if "error" in r:
                lines.append(f"| {r['trainer']} | error: {r['error']} | |")
            else:
                lines.append(f"| {r['trainer']} | {r['tokens_per_s']:.0f} | {r['max_memory_mb']:.0f} |")
    if "planner" in summary:
        lines += ["", _compared("planner", summary["planner"])]
    if "long_context" in summary:
        long = summary["long_context"]
        lines.append(_compared(f"long context ({long.get('tokens', '?')} tokens per sequence, limited by "
                               f"{long.get('limited_by')}; step {long.get('step_s', '-')} s)", long))  # fmt: skip
    lines += [f"- {summary['seconds']} s in all", ""]
    return "\n".join(lines)


def _compared(name: str, r: dict) -> str:
    if isinstance(r.get("error"), float):
        return f"- {name}: {r['planned_mb']:.0f} MiB planned, {r['measured_mb']:.0f} MiB measured ({r['error']:+.1%})"
    return f"- {name}: {r}"


def _kernel_lines(summary: dict) -> list[str]:
    kernel = {r["method"]: r for r in summary["kernel"]}
    gemm = kernel.get("gemm", {}).get("tflops")
    lines = [f"- shape: N {summary['shape']['n']}, V {summary['shape']['v']}, H {summary['shape']['h']}", "",
             "| kernel | ms | TFLOP/s | share of the GEMMs' rate | max memory (MiB) |",
             "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for method, r in kernel.items():
        if "error" in r:
            lines.append(f"| {method} | error: {r['error']} | | | |")
            continue
        share = f"{r['tflops'] / gemm:.0%}" if gemm else "-"
        lines.append(f"| {method} | {r['ms']:.2f} | {r['tflops']:.3g} | {share} | {r['max_memory_mb']:.0f} |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
