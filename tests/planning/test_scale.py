"""The planner at scale, checked on what this CPU can run: trl's DPOTrainer planned against its measured step,
ZeRO-3 shares, the GPU code paths, length-skewed batches with padding-free packing."""

import json

import pytest

from alignment.planning.fake import lengths
from alignment.planning.plan import measure, simulate
from alignment.planning.zero3 import TRAINED_BYTES
from alignment.recipes import load_recipe
from tests.conftest import ROOT

DPO = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
QWEN = {"model_type": "qwen2", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 3000, "max_position_embeddings": 512,
        "tie_word_embeddings": False, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}  # fmt: skip


def _recipe(tmp_path, **overrides):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(QWEN))
    return load_recipe(DPO, {"init_from_config": str(path), "use_cpu": True, "precompute_ref_logps": False,
                             **overrides})  # fmt: skip


def test_trl_plan_matches_trls_measured_step_within_10_percent(tmp_path):
    method, script, model_args, config = _recipe(tmp_path)
    planned = simulate(method, script, model_args, config, 4, 96, trainer="trl").peak_bytes
    measured = measure(method, script, model_args, config, 4, 96, trainer="trl")["peak_bytes"]
    assert abs(planned / measured - 1) <= 0.10, (planned, measured)


def test_zero3_share_partitions_states_and_keeps_the_step(tmp_path):
    method, script, model_args, config = _recipe(tmp_path)
    one = simulate(method, script, model_args, config, 2, 64)
    four = simulate(method, script, model_args, config, 2, 64, devices=4)
    trained = one.breakdown["parameters"] // 4  # float32 parameters: numel = bytes / 4
    assert four.breakdown["partitioned_states"] == (TRAINED_BYTES * trained + one.breakdown["anchors"]) // 4
    assert 0 < four.breakdown["activations_and_workspace"] <= one.step_peak_bytes
    assert four.breakdown["gathered_parameters"] > 0 and four.peak_bytes < one.peak_bytes


def test_the_gpu_code_paths_copy_no_float32_weight(tmp_path):
    """bf16 weights: on CPU the op upcasts the [V, H] head per tile; on a GPU it never copies it."""
    method, script, model_args, config = _recipe(tmp_path, dtype="bfloat16", bf16=True)
    cpu = simulate(method, script, model_args, config, 2, 64, target="cpu").phase_peaks["kernel"]
    gpu = simulate(method, script, model_args, config, 2, 64, target="cuda").phase_peaks["kernel"]
    head = QWEN["vocab_size"] * QWEN["hidden_size"] * 4
    assert cpu - gpu >= head, (cpu, gpu)


def test_padding_free_plans_only_the_real_tokens_of_skewed_batches(tmp_path):
    assert lengths(4, 1024, True) == [1024, 512, 256, 128] and lengths(2, 100, False) == [100, 100]
    method, script, model_args, config = _recipe(tmp_path)
    padded = simulate(method, script, model_args, config, 4, 256, skew=True)
    method, script, model_args, config = _recipe(tmp_path, padding_free=True)
    packed = simulate(method, script, model_args, config, 4, 256, skew=True)
    assert packed.step_peak_bytes < 0.8 * padded.step_peak_bytes, (packed.step_peak_bytes, padded.step_peak_bytes)


@pytest.mark.parametrize("trainer", ["alignment", pytest.param("trl", marks=pytest.mark.slow)])
def test_an_8b_step_plans_on_fake_tensors_without_their_memory(trainer):
    """Llama-3-8B's shape, LoRA: 15 GiB of bf16 parameters planned, far more than this process ever held."""
    import resource

    method, script, model_args, config = load_recipe(
        ROOT / "recipes" / "llama-3-8b" / "dpo_lora.yaml",
        {"init_from_config": str(ROOT / "benchmarks" / "model_configs" / "llama-3-8b.json"), "use_cpu": True},
    )
    plan = simulate(method, script, model_args, config, 1, 256, target="cuda", trainer=trainer)
    assert plan.breakdown["parameters"] > 15 * 2**30 and plan.step_peak_bytes > 0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 < plan.breakdown["parameters"] / 2
