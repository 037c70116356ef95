"""alignment plan: one optimizer step simulated on fake tensors equals, within 10%, the same step measured on this
CPU (parameters of the trained and anchor models plus the peak of what torch allocates, from the profiler's memory
events); the JSON it writes; the longest length that fits a memory; one-line errors."""

import json
import sys

import pytest

from alignment.cli import main
from alignment.errors import RecipeError
from alignment.planning.plan import parse_memory, rows_shape, search, simulate
from alignment.recipes import load_recipe
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_plan import QWEN, WIDE, calibrate


def _config(tmp_path, shape):
    path = tmp_path / "model.json"
    path.write_text(json.dumps(shape))
    return str(path)


@pytest.mark.parametrize("method", ["dpo", "sparsepo", "inpo"])
def test_the_plan_matches_the_measured_peak_within_10_percent(tmp_path, method):
    (row,) = calibrate(method, _config(tmp_path, QWEN), lengths=(64,))
    assert abs(row["error"]) <= 0.10, row
    assert sum(row["breakdown"].values()) == row["planned"]  # the breakdown is taken at the peak
    assert row["phase_peaks"]["kernel"] > 0 and row["phase_peaks"]["backward"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("shape", ["sft_model", "llama_wide", "qwen2_tiny"])
@pytest.mark.parametrize("method", ["dpo", "sparsepo", "inpo"])
def test_calibration_grid(tmp_path, shape, method):
    config = {"sft_model": None, "llama_wide": WIDE, "qwen2_tiny": QWEN}[shape]
    for row in calibrate(method, config and _config(tmp_path, config)):
        assert abs(row["error"]) <= 0.10, row


def test_the_cli_prints_a_breakdown_and_writes_json(tmp_path, capsys):
    out = tmp_path / "plan.json"
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    assert main(["plan", recipe, "--json", str(out), "--batch", "4", "--max_length", "128"]) == 0
    printed = capsys.readouterr().out
    assert "dpo: 4 pairs of 128 tokens per device" in printed and "at the peak: parameters" in printed
    plan = json.loads(out.read_text())
    assert {"resident_bytes", "step_peak_bytes", "peak_bytes", "breakdown", "search"} <= set(plan)
    assert plan["peak_bytes"] >= plan["resident_bytes"] + plan["step_peak_bytes"] - 1
    assert sum(plan["breakdown"].values()) == plan["peak_bytes"]
    assert plan["precompute_peak_bytes"] is not None  # the recipe precomputes its reference


def test_max_length_auto_finds_the_longest_length_that_fits(tmp_path, capsys):
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    method, script, model_args, config = load_recipe(recipe, {"use_cpu": True})
    shape = rows_shape(method, script, config)  # the rows' proportions at each length searched
    memory = simulate(method, script, model_args, config, 4, 300, shape=shape).peak_bytes  # 300 just fits
    out = tmp_path / "plan.json"
    assert main(["plan", recipe, "--batch", "4", "--max_length", "auto", "--device_memory", f"{memory}B",
                 "--json", str(out)]) == 0  # fmt: skip
    found = json.loads(out.read_text())
    assert found["search"]["best"] == 256 and found["peak_bytes"] <= memory  # multiples of 64: 256 <= 300 < 320
    assert simulate(method, script, model_args, config, 4, 320, shape=shape).peak_bytes > memory


def test_search_and_memory_units():
    assert search(lambda x: x <= 1000, 64, 4096, 64) == 960 and search(lambda x: False, 64, 128, 64) is None
    assert parse_memory("80GB") == 80 * 2**30 == parse_memory("80GiB") and parse_memory("512MB") == 512 * 2**20
    for bad in ("80", "abc", "0GB", "-1GB", "1e30GB", "GB"):
        with pytest.raises(RecipeError):
            parse_memory(bad)


def test_errors_are_one_line(capsys):
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    assert main(["plan", str(ROOT / "recipes" / "quickstart" / "sparsepo.yaml"), "--trainer", "trl"]) == 2
    assert "plans trl's DPOTrainer, not sparsepo" in capsys.readouterr().err
    assert main(["plan", recipe, "--max_length", "auto"]) == 2
    assert "need --device NAME" in capsys.readouterr().err
    for option, value in (
        ("--device_memory", "80"),
        ("--device", "h300"),
        ("--batch", "0"),
        ("--devices", "abc"),
        ("--max_length", "0"),
        ("--max_length", "abc"),
        ("--completion_tokens", "1,2,3"),
    ):
        assert main(["plan", recipe, option, value]) == 2, (option, value)
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1 and option in err, err


def test_a_reward_model_plan_matches_the_measured_peak(tmp_path):
    """method: reward: the backbone and a one-output head (no LM head, no fused op), planned within 10%."""
    (row,) = calibrate("reward", _config(tmp_path, QWEN), lengths=(64,))
    assert abs(row["error"]) <= 0.10, row
    assert sum(row["breakdown"].values()) == row["planned"]
    assert "kernel" not in row["phase_peaks"] or row["phase_peaks"]["kernel"] == 0  # no LM head: no fused op


def test_an_online_dpo_plan_counts_its_generation_phase(tmp_path):
    """method: online_dpo: the sampling phase (transformers generate, KV cache of 2B rows x prompt + N tokens)
    planned from its prefill and its last decode step equals a real generate of all N steps on this CPU; the
    training step of the sampled pairs within 10%."""
    (row,) = calibrate("online_dpo", _config(tmp_path, QWEN), lengths=(96,))
    planned, measured = row["generation"]
    assert measured and abs(planned / measured - 1) <= 0.01, row
    assert abs(row["error"]) <= 0.10 and sum(row["breakdown"].values()) == row["planned"], row
    assert row["phase_peaks"]["generation"] > 0 and row["phase_peaks"]["kernel"] > 0


def test_online_dpo_under_zero3_gathers_the_policy_for_generation(tmp_path):
    """Each rank holds the whole policy while it samples (trl's unwrap_model_for_generation gathers it)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from alignment.planning.describe import describe

    recipe = str(ROOT / "recipes" / "quickstart" / "online_dpo.yaml")
    overrides = {"use_cpu": True, "init_from_config": _config(tmp_path, QWEN)}
    name, script, model_args, config = load_recipe(recipe, overrides)
    one = simulate(name, script, model_args, config, 4, 64)
    four = simulate(name, script, model_args, config, 4, 64, devices=4)
    policy = 4 * sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.for_model(**QWEN)).parameters())
    sampling = one.generation_peak_bytes - one.resident_bytes  # the cache and the sampling buffers, not shared
    assert four.generation_peak_bytes == four.resident_bytes + (policy - policy // 4) + sampling
    assert any("generation phase peak" in line and "gathered whole" in line for line in describe(four))


def test_online_dpo_with_vllm_plans_the_step_beside_the_engine(tmp_path):
    """use_vllm: colocate: the card less vLLM's gpu_memory_utilization of it, no generate phase on the card (the
    engine samples), the same training step; server: the whole card for the step."""
    from alignment.planning.describe import describe
    from alignment.planning.devices import device
    from alignment.planning.plan import plan_recipe

    recipe = str(ROOT / "recipes" / "quickstart" / "online_dpo.yaml")
    base = {"init_from_config": _config(tmp_path, QWEN), "max_length": 64}
    card = device("h100-80gb")
    generate = plan_recipe(recipe, base, device_memory=card, target="cuda")
    colocate = plan_recipe(recipe, {**base, "use_vllm": True, "vllm_gpu_memory_utilization": 0.4},
                           device_memory=card, target="cuda")  # fmt: skip
    server = plan_recipe(recipe, {**base, "use_vllm": True, "vllm_mode": "server"}, device_memory=card, target="cuda")
    assert generate.generation_peak_bytes is not None and generate.sampler is None
    for plan in (colocate, server):
        assert plan.generation_peak_bytes is None and "generation" not in plan.phase_peaks
        assert plan.step_peak_bytes == generate.step_peak_bytes and plan.resident_bytes == generate.resident_bytes
    assert colocate.usable_bytes == card.usable_bytes - int(0.4 * card.total_bytes)
    assert server.usable_bytes == card.usable_bytes
    assert any("sampling" in line and "gpu_memory_utilization 0.4" in line for line in describe(colocate))
    assert any("colocated vLLM engine" in line for line in describe(colocate))
