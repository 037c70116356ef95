"""Plans a real card holds (docs/planning.md): the cards' usable memory, the pinned host allocator's blocks, the
pair planned, the precompute phase under ZeRO-3, and the verdicts the CLI prints."""

import json

import pytest

from alignment.cli import main
from alignment.errors import RecipeError
from alignment.planning.devices import CARDS, CONTEXT_BYTES, FRAGMENTATION, device, raw
from alignment.planning.fake import PairShape, batch_rows
from alignment.planning.offload import PlannedOffload, pinned_size
from alignment.planning.plan import simulate
from alignment.recipes import load_recipe
from tests.conftest import ROOT

RECIPE = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
GIB = 2**30


def test_a_card_is_what_torch_reports_minus_a_stated_reserve():
    h100 = device("h100-80gb")
    assert h100.total_bytes == int(79.19 * GIB) and device("H100") == h100
    assert h100.usable_bytes == h100.total_bytes - CONTEXT_BYTES - int(FRAGMENTATION * h100.total_bytes)
    assert 75.5 * GIB < h100.usable_bytes < 76.5 * GIB  # not the nameplate's 80
    assert all(device(name).usable_bytes < gib * GIB for name, (gib, _) in CARDS.items())
    assert raw(80 * GIB).usable_bytes == 80 * GIB  # --device_memory is a raw budget
    with pytest.raises(RecipeError, match="h100-80gb"):
        device("h300")


def test_pinned_blocks_are_powers_of_two_and_reused_per_size():
    assert [pinned_size(n) for n in (1, 1024, 1025, 3 * GIB + GIB // 4)] == [1, 1024, 2048, 4 * GIB]
    import torch

    offload = PlannedOffload([], streams=True)
    x = torch.ones(3 * 2**18 + 4, requires_grad=True)
    with offload:  # three tensors of 3 MiB + 16 B saved at once: three 4 MiB blocks
        a = x * 1.5
        loss = a.sin().sum() + (a + 1).cos().sum() + (a + 2).tanh().sum()
        loss.backward()
    assert offload.host_peak == 3 * x.numel() * 4 and offload.pinned_bytes == 3 * 4 * 2**20


def test_an_unequal_pair_is_what_is_planned():
    shape = PairShape.from_tokens(100, 300, 150, "given")
    assert shape.tokens(400) == (100, 300, 150)
    (row,) = batch_rows(1, 400, 1000, shape=shape)
    assert (len(row["prompt_ids"]), len(row["chosen_ids"]), len(row["rejected_ids"])) == (100, 300, 150)
    rejected_longer = PairShape.from_tokens(100, 150, 300, "given")
    assert rejected_longer.tokens(400) == (100, 150, 300)


def test_the_precompute_phase_is_planned_under_zero3():
    method, script, model_args, config = load_recipe(RECIPE, {"use_cpu": True})
    assert config.precompute_ref_logps
    one = simulate(method, script, model_args, config, 2, 128)
    four = simulate(method, script, model_args, config, 2, 128, devices=4)
    assert one.precompute_peak_bytes and four.precompute_peak_bytes  # a rank's share of the precompute pass
    assert four.precompute_peak_bytes < one.precompute_peak_bytes
    for plan in (one, four):
        assert sum(plan.breakdown.values()) == plan.peak_bytes


def test_the_cli_plans_a_card_a_pair_and_a_node(tmp_path, capsys):
    out = tmp_path / "plan.json"
    args = ["plan", RECIPE, "--device", "h100-80gb", "--prompt_tokens", "40", "--completion_tokens", "120,60",
            "--activation_checkpointing", "true", "--activation_offloading", "true", "--target", "cuda",
            "--devices", "2", "--host_memory", "1GB", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "prompt 40 + chosen 120 / rejected 60 tokens" in printed and "h100-80gb: 76.06 GiB usable" in printed
    assert "pinned host memory" in printed and ": fits" in printed
    plan = json.loads(out.read_text())
    assert plan["fits"] is True and plan["usable_bytes"] == device("h100-80gb").usable_bytes
    assert plan["devices_per_node"] == 2 and plan["host_fits"] is True and plan["host_pinned_bytes"] > 0
    assert sum(plan["breakdown"].values()) == plan["peak_bytes"]
    assert main([*args[:-2], "--host_memory", "4KB"]) == 0  # the same node with too little host memory
    assert "DOES NOT FIT in" in capsys.readouterr().out


def test_plan_options_after_the_recipe_are_read_with_their_types(capsys):
    assert main(["plan", RECIPE, "--batch", "2", "--max_length", "64", "--devices", "0"]) == 2
    assert "--devices" in capsys.readouterr().err
    assert main(["plan", RECIPE, "--batch", "2", "--max_length", "64", "--skew", "maybe"]) == 2
    assert "--skew" in capsys.readouterr().err
    assert main(["plan", RECIPE, "--batch", "2", "--max_length", "64", "--device_memory", "80"]) == 2
    assert "give a size with its unit" in capsys.readouterr().err
