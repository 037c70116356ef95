"""The planner's long-context models (docs/long-context.md): activation offloading counted as trl's manager moves
tensors (host memory on its own line), the tiled MLP and norms, sequence parallelism's rank shard."""

import pytest
import torch

from alignment.cli import main
from alignment.planning.offload import PlannedOffload
from alignment.planning.plan import simulate
from alignment.recipes import load_recipe
from tests.conftest import ROOT

RECIPE = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")


def plan(length=384, batch=2, devices=1, **overrides):
    method, script, model_args, config = load_recipe(RECIPE, {"use_cpu": True, "activation_checkpointing": True,
                                                              **overrides})  # fmt: skip
    return simulate(method, script, model_args, config, batch, length, devices=devices)


def test_offloading_moves_the_checkpoints_to_the_host():
    plain, offloaded = plan(), plan(activation_offloading=True)
    # at least every decoder layer's input hidden states: 4 layers x [4, 384, 192] float32
    assert offloaded.host_offload_bytes >= 4 * 4 * 384 * 192 * 4
    assert plain.host_offload_bytes is None
    # the forward's saved tensors (the tiny model's step peaks in its LM head, which stays on the device)
    assert offloaded.breakdown["activations"] < plain.breakdown["activations"]


def test_the_planned_offload_moves_what_trls_manager_moves(tokenizer):
    """On real tensors, the same forward pass under trl's OffloadActivations (CPU as its device) and under the
    planner's PlannedOffload (the CPU's rules: no streams): the same bytes leave the device."""
    from alignment.long_context import offload_context
    from alignment.planning.fake import checkpointing
    from tests.helpers import tiny_llama

    model = tiny_llama(len(tokenizer), hidden=64, layers=3)
    checkpointing(model)
    ids = torch.randint(3, model.config.vocab_size, (2, 40))
    trl_ctx = offload_context(model, torch.device("cpu"))
    with trl_ctx:
        loss = model.model(input_ids=ids).last_hidden_state.pow(2).mean()
        moved = sum(t[0].numel() * t[0].element_size() for t in trl_ctx.tracker.values() if t[1])
        loss.backward()
    ours = PlannedOffload(model.parameters(), streams=False)
    with ours:
        loss = model.model(input_ids=ids).last_hidden_state.pow(2).mean()
        counted = ours.host_current
        loss.backward()
    assert moved > 0 and counted == moved and ours.host_current == 0


def test_the_cli_reports_the_host_memory(capsys):
    assert main(["plan", RECIPE, "--batch", "2", "--max_length", "256", "--activation_offloading", "true",
                 "--activation_checkpointing", "true"]) == 0  # fmt: skip
    assert "CPU memory, offloaded" in capsys.readouterr().out


def test_tiling_lowers_the_step_peak():
    plain = plan(length=512, activation_offloading=True)
    tiled = plan(length=512, activation_offloading=True, tiled_mlp=True, tiled_norms=True, tiled_mlp_shards=4)
    assert tiled.step_peak_bytes < plain.step_peak_bytes


def test_a_sequence_parallel_rank_holds_its_shard():
    """Two ranks, each pair split in two: a rank's activations are about those of a step on half the length (plus
    the attention's swapped copies), and far below a whole-length step's."""
    common = {"devices": 2, "precompute_ref_logps": False}  # the reference pass in the step, as under SP
    whole = plan(length=512, **common)  # ZeRO-3 share of the whole pair
    half = plan(length=256, **common)
    split = plan(length=512, sequence_parallel_size=2, **common)
    assert split.sequence_parallel == 2 and split.max_length == 512
    transient = split.breakdown["activations_and_workspace"]
    assert transient == pytest.approx(half.breakdown["activations_and_workspace"], rel=0.2)
    assert transient < 0.7 * whole.breakdown["activations_and_workspace"]


def test_sequence_parallel_needs_a_multiple_of_its_size_as_devices():
    from alignment.errors import RecipeError

    with pytest.raises(RecipeError, match="multiple of it"):
        plan(devices=3, sequence_parallel_size=2)
