"""Sequence parallelism (DeepSpeed Ulysses through accelerate): the batch's shards, and two gloo processes splitting
every pair by position give the loss and the weights of one process on the whole pairs (slow: real launches)."""

import pytest
import torch

from alignment.long_context.sequence_parallel import IGNORE, check_heads, shard, shifted
from tests.distributed.test_training import run, same


def batch(rows=4, length=7, pairs=2):
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 50, (rows, length), generator=gen)
    completion = torch.zeros(rows, length, dtype=torch.long)
    completion[:, 3:] = 1
    completion[0, -2:] = 0  # padding at the end of a row
    return {"input_ids": ids, "attention_mask": (completion + (torch.arange(length) < 3)).clamp(max=1),
            "completion_mask": completion, "ref_chosen_logps": torch.randn(pairs, generator=gen)}  # fmt: skip


def test_targets_are_shifted_before_the_cut():
    b = batch()
    targets = shifted(b["input_ids"], b["completion_mask"])
    assert targets[0, 2].item() == b["input_ids"][0, 3].item()  # position 2 predicts the first completion token
    assert (targets[:, :2] == IGNORE).all() and (targets[:, -1] == IGNORE).all()
    assert (targets[0, -3:] == IGNORE).all()  # the row's padding is not scored


@pytest.mark.parametrize("world", [2, 3, 4])
def test_shards_cover_the_batch_once(world):
    b = batch()
    parts = [shard(b, r, world) for r in range(world)]
    width = parts[0]["input_ids"].shape[1]
    assert all(p["input_ids"].shape == (4, width) for p in parts) and width * world >= 7 > width * (world - 1) - 1
    for key in ("input_ids", "completion_mask", "position_ids", "shift_targets"):
        joined = torch.cat([p[key] for p in parts], dim=1)
        assert joined.shape[1] == width * world
        if key == "position_ids":
            assert torch.equal(joined[0], torch.arange(width * world))
        elif key == "shift_targets":
            assert torch.equal(joined[:, :7], shifted(b["input_ids"], b["completion_mask"]))
            assert (joined[:, 7:] == IGNORE).all()
        else:
            assert torch.equal(joined[:, :7], b[key]) and (joined[:, 7:] == 0).all()
    assert all(torch.equal(p["ref_chosen_logps"], b["ref_chosen_logps"]) for p in parts)  # per-pair columns whole


def test_sequence_parallel_outside_deepspeed_is_refused(tmp_path, tokenizer, data_dir):
    from alignment.trainers import DPOConfig, DPOTrainer
    from tests.helpers import preference_rows, tiny_llama, train_args

    config = train_args(DPOConfig, tmp_path, sequence_parallel_size=2)
    assert config.parallelism_config.sp_size == 2 and config.parallelism_config.sp_backend == "deepspeed"
    with pytest.raises(ValueError, match="runs under DeepSpeed"):
        DPOTrainer(tiny_llama(len(tokenizer)), args=config, train_dataset=preference_rows(data_dir),
                   processing_class=tokenizer)  # fmt: skip
    with pytest.raises(ValueError, match="sequence_parallel_size must be a positive"):
        train_args(DPOConfig, tmp_path, sequence_parallel_size=0)


def test_precomputing_the_reference_is_refused(tmp_path, tokenizer, data_dir, monkeypatch):
    """The precompute pass runs whole sequences on one process: under sequence parallelism it is refused, by the
    trainer (as launched under DeepSpeed) and by the planner."""
    from alignment.errors import RecipeError
    from alignment.planning.plan import simulate
    from alignment.recipes import load_recipe
    from alignment.trainers import DPOConfig, DPOTrainer
    from tests.conftest import ROOT
    from tests.helpers import preference_rows, tiny_llama, train_args

    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    config = train_args(DPOConfig, tmp_path, sequence_parallel_size=2, precompute_ref_logps=True)
    with pytest.raises(NotImplementedError, match="precompute_ref_logps with sequence_parallel_size"):
        DPOTrainer(tiny_llama(len(tokenizer)), args=config, train_dataset=preference_rows(data_dir),
                   processing_class=tokenizer)  # fmt: skip
    recipe = load_recipe(ROOT / "recipes" / "quickstart" / "dpo.yaml", {"sequence_parallel_size": 2, "use_cpu": True})
    with pytest.raises(RecipeError, match="precompute_ref_logps with sequence_parallel_size"):
        simulate(*recipe, 1, 64, devices=2)


def test_other_methods_say_it_is_not_implemented(tmp_path, tokenizer, data_dir):
    from alignment.trainers import CPOConfig, CPOTrainer
    from tests.helpers import preference_rows, tiny_llama, train_args

    with pytest.raises(NotImplementedError, match="implemented for dpo, not cpo"):
        CPOTrainer(tiny_llama(len(tokenizer)), args=train_args(CPOConfig, tmp_path, sequence_parallel_size=2),
                   train_dataset=preference_rows(data_dir), processing_class=tokenizer)  # fmt: skip


@pytest.mark.parametrize(("heads", "kv", "size", "ok"), [(32, 8, 8, True), (32, 4, 8, True), (28, 4, 4, True),
                                                         (28, 4, 8, False), (32, 6, 8, False)])  # fmt: skip
def test_heads_follow_deepspeed_ulysses_rule(heads, kv, size, ok):
    """Heads divisible by the ranks; key/value heads divisible by them or dividing them (then repeated)."""
    from types import SimpleNamespace

    config = SimpleNamespace(num_attention_heads=heads, num_key_value_heads=kv)
    if ok:
        check_heads(config, size)
    else:
        with pytest.raises(ValueError, match=f"{heads} attention heads"):
            check_heads(config, size)


@pytest.mark.slow
def test_two_processes_split_each_pair_and_equal_one(tmp_path):
    """DPO, one SGD step on 8 pairs: one process (batch 8) against 2 DeepSpeed ZeRO-2 processes with
    sequence_parallel_size 2 (each loads 4 pairs; the group works through both batches, each rank holding half of
    every sequence's positions; 2 accumulation steps make the same optimizer step)."""
    import deepspeed  # noqa: F401

    single = run(tmp_path / "single.pt", "dpo", 8, 1)
    split = run(tmp_path / "sp.pt", "dpo:sp", 4, 2, "deepspeed_ulysses.yaml")
    assert "DeepSpeed ZeRO-2, 2 process(es)" in split["summary"]["distributed"]
    whole = single["seen"][0][0]
    assert all(positions < whole and positions == end for positions, end in split["seen"][:1])  # rank 0: first half
    assert 2 * split["seen"][0][0] >= whole
    same(single, split)
    for key in ("rewards/chosen", "rewards/margins", "logps/chosen", "logps/rejected_per_token"):
        assert split["log"][key] == pytest.approx(single["log"][key], rel=1e-5), key
