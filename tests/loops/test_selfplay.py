"""The self-play loop on the shipped tiny model and the rps task: two INPO iterations write every stage's
file and one line per iteration; a rerun regenerates nothing; a lost stage is redone alone."""

import dataclasses
import json
import shutil

import pytest
import torch

from alignment.cli import main
from alignment.diagnostics.report import write_report
from alignment.io import read_jsonl
from alignment.loops import selfplay
from alignment.loops.selfplay import SelfPlay, SelfPlayArguments
from alignment.trainers import INPOConfig


def loop_and_config(tmp_path):
    loop = SelfPlayArguments(iterations=2, samples_per_prompt=4, prompts_per_iteration=8, prompt_task="rps",
                             loop_eval_prompts=8, generation_batch_size=8)  # fmt: skip
    config = INPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True, per_device_train_batch_size=8,
                        num_train_epochs=1, learning_rate=1e-4, eta=0.5, report_to=[], save_strategy="no",
                        logging_steps=1, ref_cache_dir=str(tmp_path / "cache"), seed=3)  # fmt: skip
    return loop, config


def test_two_inpo_iterations_then_resume(data_dir, tmp_path, monkeypatch):
    loop, config = loop_and_config(tmp_path)
    rows = SelfPlay("inpo", loop, str(data_dir / "sft_model"), config).run()
    out = tmp_path / "run"
    assert [r["iteration"] for r in rows] == [0, 1, 2]
    for t in (1, 2):
        folder = out / f"iteration-{t}"
        samples = [json.loads(x) for x in (folder / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 8 and all(len(s["responses"]) == 4 for s in samples)
        verdicts = [json.loads(x) for x in (folder / "verdicts.jsonl").read_text().splitlines()]
        assert len(verdicts) == 8 and rows[t]["pairs"] == sum(v["winner"] is not None for v in verdicts) > 0
        assert (folder / "model" / "trained.json").exists() and (folder / "model" / "model.safetensors").exists()
        assert 0 < rows[t]["judge_calls"] <= rows[t]["judge_comparisons"] <= 8 * 2 * 4
        assert set(rows[t]["seconds"]) == {"generate", "judge", "train", "evaluate"}
        assert "tv_to_uniform" in json.dumps(rows[t]["sampled"])
    assert rows[2]["policy"].endswith("iteration-2/model")
    summary = json.loads((out / "alignment_run.json").read_text())
    assert summary["loop"] == "self_play" and summary["iterations"] == rows
    steps = [e["step"] for e in summary["log_history"] if "loss" in e]
    assert steps == sorted(steps) and {e["iteration"] for e in summary["log_history"]} == {1, 2}
    page, markdown = write_report([str(out)])
    assert "Self-play iterations" in page.read_text()
    table = markdown.read_text().split("self-play iterations")[1].splitlines()
    body = [line for line in table if line.startswith("| ") and "iteration" not in line and "---" not in line]
    assert [line.split("|")[1].strip() for line in body] == ["0", "1", "2"]
    text = markdown.read_text()
    assert "tv_to_uniform (sampled)" in text and "(inpo, self-play, 2 iterations)" in text
    for made in (page, markdown):
        made.unlink()
    files = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "_alignment.lock"}

    def refuse(*args, **kwargs):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr("alignment.generation.generate_responses", refuse)
    assert SelfPlay("inpo", loop, str(data_dir / "sft_model"), config).run() == rows
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != "_alignment.lock"} == files
    # lose iteration 2's model and its line: only training and evaluation run again (sampling is refused)
    shutil.rmtree(out / "iteration-2" / "model")
    lines = (out / "iterations.jsonl").read_text().splitlines()
    (out / "iterations.jsonl").write_text("\n".join(lines[:2]) + "\n")
    monkeypatch.setattr(SelfPlay, "evaluate", lambda self, t, path: {"greedy": {}, "sampled": {}})
    again = SelfPlay("inpo", loop, str(data_dir / "sft_model"), config).run()
    assert (out / "iteration-2" / "model" / "trained.json").exists() and again[2]["pairs"] == rows[2]["pairs"]
    assert (out / "iteration-2" / "samples.jsonl").stat().st_mtime_ns == files[out / "iteration-2" / "samples.jsonl"]


def test_bad_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="samples_per_prompt must be >= 2"):
        SelfPlayArguments(samples_per_prompt=1)
    with pytest.raises(ValueError, match="judge must be"):
        selfplay.make_judge("oracle", "rps")


def test_iterative_dpo_with_a_fitted_bradley_terry_judge(data_dir, tmp_path):
    from alignment.judges import RewardModelJudge
    from alignment.trainers import DPOConfig

    loop = SelfPlayArguments(iterations=1, samples_per_prompt=4, prompts_per_iteration=8, prompt_task="rps",
                             loop_eval_prompts=8, generation_batch_size=8, judge="bradley_terry",
                             judge_fit_prompts=12, judge_fit_epochs=1)  # fmt: skip
    config = DPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True, per_device_train_batch_size=8,
                       num_train_epochs=1, report_to=[], save_strategy="no", seed=3)  # fmt: skip
    run = SelfPlay("dpo", loop, str(data_dir / "sft_model"), config)
    rows = run.run()
    fit = json.loads((tmp_path / "run" / "judge" / "fit.json").read_text())
    assert fit["task"] == "rps" and fit["comparisons"] > 0 and isinstance(run.judge, RewardModelJudge)
    # a pointwise judge ranks by best and worst of K: one scoring call, K items per prompt
    assert rows[1]["judge_calls"] == 1 and rows[1]["judge_comparisons"] == 8 * 4
    assert rows[1]["pairs"] > 0


def test_vllm_backend_without_vllm_is_a_clear_error(data_dir, tmp_path, capsys):
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is not None and torch.cuda.is_available():
        pytest.skip("vllm and a GPU are here: tests/test_vllm_backend.py runs the backend")
    recipe = str(data_dir.parent / "recipes" / "quickstart" / "inpo.yaml")
    code = main(["train", recipe, "--generation_backend", "vllm", "--output_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: generation_backend: vllm needs")
    assert not (tmp_path / "run" / "iterations.jsonl").exists()
    with pytest.raises(ValueError, match="generation_backend must be transformers or vllm"):
        SelfPlayArguments(generation_backend="sglang")


def test_prompts_from_a_dataset_with_any_judge(data_dir, tmp_path):
    from alignment.data.errors import DataFormatError
    from alignment.judges import CallableJudge
    from alignment.trainers import DPOConfig

    prompts = [f"Say something about the number {i}." for i in range(12)]
    rows = [{"prompt": p} for p in prompts[:6]] + [{"prompt": [{"role": "user", "content": p}]} for p in prompts[6:]]
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loop = SelfPlayArguments(iterations=2, samples_per_prompt=3, prompts_per_iteration=6, prompt_task=None,
                             prompt_dataset=str(tmp_path / "prompts.jsonl"), max_new_tokens=6,
                             generation_batch_size=8)  # fmt: skip
    config = DPOConfig(output_dir=str(tmp_path / "run"), use_cpu=True, per_device_train_batch_size=4,
                       num_train_epochs=1, report_to=[], save_strategy="no", seed=5)  # fmt: skip
    shorter = CallableJudge(lambda p, a, b: 1.0 if len(a) < len(b) else 0.0 if len(a) > len(b) else 0.5)
    result = SelfPlay("dpo", loop, str(data_dir / "sft_model"), config, judge=shorter).run()
    seen = [s["prompt"] for t in (1, 2) for s in read_jsonl(tmp_path / "run" / f"iteration-{t}" /
                                                                     "samples.jsonl")]  # fmt: skip
    assert sorted(seen) == sorted(prompts)  # two disjoint slices of the shuffled dataset
    assert [set(r) & {"greedy", "sampled"} for r in result] == [set()] * 3  # no task: nothing to evaluate
    assert result[1]["pairs"] > 0
    (tmp_path / "bad.jsonl").write_text('{"prompt": "fine"}\n{"question": "no prompt field"}\n')
    bad = dataclasses.replace(loop, prompt_dataset=str(tmp_path / "bad.jsonl"))
    config.output_dir = str(tmp_path / "bad")
    with pytest.raises(DataFormatError, match=r"bad.jsonl: row 2 has no field 'prompt'"):
        SelfPlay("dpo", bad, str(data_dir / "sft_model"), config, judge=shorter).run()


def test_an_empty_response_is_a_pair_member_it_is_eos_alone(data_dir):
    from alignment.models import load_tokenizer
    from alignment.trainers import DPOConfig

    tokenizer = load_tokenizer(str(data_dir / "sft_model"))
    pair = {"prompt": [{"role": "user", "content": "Play rock, paper or scissors."}],
            "chosen": [{"role": "assistant", "content": "Paper!"}],
            "rejected": [{"role": "assistant", "content": ""}]}  # fmt: skip
    config = DPOConfig(output_dir="unused", use_cpu=True, max_length=64)
    rows = selfplay.tokenize_pairs([pair, pair], tokenizer, config)
    assert rows[0]["rejected_ids"] == [tokenizer.eos_token_id] and rows[0]["chosen_ids"][-1] == tokenizer.eos_token_id
    assert len(rows) == 2 and rows[0]["prompt_ids"][0] == tokenizer.bos_token_id
    config.max_length = 8  # longer prompts than that are dropped (keep_start), as the trainers do
    assert len(selfplay.tokenize_pairs([pair], tokenizer, config)) == 0


def test_with_peft_each_iteration_saves_the_merged_policy(data_dir, tmp_path):
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM

    loop, config = loop_and_config(tmp_path)
    loop.iterations = 3
    config.learning_rate = 1e-2
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    rows = SelfPlay("inpo", loop, str(data_dir / "sft_model"), config, peft_config=lora).run()
    assert [r["iteration"] for r in rows] == [0, 1, 2, 3]
    weights = []
    for t in (1, 2, 3):
        folder = tmp_path / "run" / f"iteration-{t}" / "model"
        # a plain model (no adapter files): iteration t + 1 starts from all of pi_t, not from its last adapter
        assert (folder / "model.safetensors").exists() and not (folder / "adapter_config.json").exists()
        model = AutoModelForCausalLM.from_pretrained(str(folder))
        weights.append(model.model.layers[0].self_attn.q_proj.weight.detach().clone())
    start = AutoModelForCausalLM.from_pretrained(str(data_dir / "sft_model")).model.layers[0].self_attn.q_proj.weight
    # each iteration's LoRA update lands on top of the previous ones
    assert not torch.equal(weights[0], start) and not torch.equal(weights[1], weights[0])
    assert not torch.equal(weights[2], weights[1])
