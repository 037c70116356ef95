"""Online DPO with ``use_vllm: true`` on this CPU: trl's VLLMGeneration drives a stand-in of vLLM's ``LLM`` (the
same calls trl makes: ``LLM(model=path, ...)``, ``llm_engine.model_executor.driver_worker.model_runner.model.
load_weights``, ``generate(prompts, sampling_params=...)``, ``reset_prefix_cache``) whose engine is a transformers
model loaded from the checkpoint and sampling greedily. It shows what our side must get right: the engine holds
the policy's current weights (merged LoRA included) at every sample, and the completions it returns are the ones
trained on, in the trainer's order, with the trainer's sampling settings and stop tokens. vLLM itself is tested
on a GPU (``tests/test_vllm_backend.py``, marked gpu)."""

import copy
from types import SimpleNamespace
from typing import ClassVar

import pytest
import torch
from datasets import Dataset

import alignment.trainers.builtin.online_dpo as online_dpo
from alignment.errors import UnavailableError, one_line
from alignment.trainers.builtin.online_dpo import OnlineDPOConfig, OnlineDPOTrainer
from tests.helpers import tiny_llama


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.__dict__.update(kwargs)


class FakeLLM:
    """vLLM's LLM as trl's VLLMGeneration uses it; the engine: the checkpoint's transformers model, greedy."""

    made: ClassVar[list["FakeLLM"]] = []

    def __init__(self, model, **kwargs):
        from transformers import AutoModelForCausalLM

        self.kwargs, self.loads, self.calls = kwargs, 0, []
        self.model = AutoModelForCausalLM.from_pretrained(model).eval()
        runner = SimpleNamespace(model=SimpleNamespace(load_weights=self.load_weights))
        self.llm_engine = SimpleNamespace(model_executor=SimpleNamespace(driver_worker=SimpleNamespace(
            model_runner=runner)))  # fmt: skip
        FakeLLM.made.append(self)

    def load_weights(self, weights):
        params = dict(self.model.named_parameters())
        for name, tensor in weights:
            params[name].data.copy_(tensor)  # a name vLLM would not know is a KeyError
            self.loads += 1

    def reset_prefix_cache(self):
        pass

    @torch.no_grad()
    def generate(self, prompts, sampling_params, use_tqdm=False):
        self.calls.append(sampling_params)
        outputs = []
        for p in prompts:
            ids = torch.tensor([p["prompt_token_ids"]])
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0,
                                      max_new_tokens=sampling_params.max_tokens,
                                      eos_token_id=sampling_params.stop_token_ids)  # fmt: skip
            completion = SimpleNamespace(token_ids=out[0, ids.shape[1] :].tolist(), logprobs=None)
            outputs.append(SimpleNamespace(prompt_token_ids=p["prompt_token_ids"], outputs=[completion]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    import trl.generation.vllm_generation as vg

    FakeLLM.made.clear()
    monkeypatch.setattr(vg, "is_vllm_available", lambda *a, **k: True)
    monkeypatch.setattr(vg, "LLM", FakeLLM, raising=False)
    monkeypatch.setattr(vg, "SamplingParams", FakeSamplingParams, raising=False)
    monkeypatch.setattr(online_dpo, "check_vllm_available", lambda: None)
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):  # colocate mode sets them
        monkeypatch.setenv(key, "0" if "RANK" in key else "1" if key == "WORLD_SIZE" else "")
        monkeypatch.delenv(key)
    return FakeLLM


def digits(prompts, completions, **kwargs):
    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    return [0.1 * len(t) + sum(ch.isdigit() for ch in t) for t in texts]


def run(tmp_path, tokenizer, peft_config=None, steps=3, **options):
    folder = tmp_path / "policy"
    base = tiny_llama(len(tokenizer))
    with torch.no_grad():
        base.lm_head.weight.mul_(4.0)
    base.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    args = OnlineDPOConfig(output_dir=str(tmp_path / "out"), use_cpu=True, bf16=False, report_to=[], max_steps=steps,
                           learning_rate=0.5 if peft_config is None else 2.0, optim="sgd", logging_steps=1,
                           save_strategy="no", per_device_train_batch_size=2, max_new_tokens=6, max_length=48,
                           use_vllm=True, diagnostics=False, **options)  # fmt: skip
    rows = [{"prompt": f"What is {a} + {b}?"} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1)]]
    trainer = OnlineDPOTrainer(str(folder), reward_funcs=[digits], args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=tokenizer, peft_config=peft_config)  # fmt: skip
    seen = []
    sample = trainer.vllm.__call__

    def checked(prompt_ids):
        completions = sample(prompt_ids)
        policy = trainer.accelerator.unwrap_model(trainer.model)
        merged = copy.deepcopy(policy).merge_and_unload() if peft_config is not None else policy
        engine = FakeLLM.made[-1].model
        theirs, ours = engine.state_dict(), merged.state_dict()
        same = theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
        greedy = []
        for ids in prompt_ids:  # what the policy itself generates greedily from each prompt
            x = torch.tensor([ids])
            out = merged.generate(x, attention_mask=torch.ones_like(x), do_sample=False, pad_token_id=0,
                                  max_new_tokens=trainer.args.max_new_tokens, eos_token_id=trainer.eos_ids)  # fmt: skip
            greedy.append(out[0, x.shape[1] :].tolist())
        seen.append({"step": trainer.state.global_step, "same_weights": same, "completions": completions,
                     "greedy": greedy, "policy": {k: v.clone() for k, v in merged.state_dict().items()}})  # fmt: skip
        return completions

    trainer.vllm = checked
    trained = []
    pairs = trainer.pairs

    def recorded(inputs):
        rows, stats = pairs(inputs)
        trained.append(rows)
        return rows, stats

    trainer.pairs = recorded
    trainer.train()
    return trainer, seen, trained


def cut(ids, eos):
    return ids[: ids.index(eos) + 1] if eos in ids else ids


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_the_engine_samples_with_the_weights_of_every_step(lora, fake_vllm, tokenizer, tmp_path):
    from peft import LoraConfig

    peft_config = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]) if lora else None
    trainer, seen, trained = run(tmp_path, tokenizer, peft_config)
    assert [s["step"] for s in seen] == [0, 1, 2]
    assert all(s["same_weights"] for s in seen)  # the engine held the (merged) policy of that step
    changed = [k for k in seen[0]["policy"] if not torch.equal(seen[0]["policy"][k], seen[-1]["policy"][k])]
    assert changed  # the weights moved between steps, so a missing sync would show
    engine = fake_vllm.made[-1]
    assert len(fake_vllm.made) == 1 and engine.loads == 3 * len(dict(engine.model.named_parameters()))
    eos = tokenizer.eos_token_id
    for s, rows in zip(seen, trained):
        n = len(s["greedy"])
        assert s["completions"] == [cut(g, eos) for g in s["greedy"]] * 2  # both draws greedy here
        for i, row in enumerate(rows):  # the pairs trained on are the engine's completions
            assert {tuple(row["chosen_ids"]), tuple(row["rejected_ids"])} <= {
                tuple(s["completions"][i]),
                tuple(s["completions"][n + i]),
            }
    params = engine.calls[0]
    assert params.n == 1 and params.max_tokens == 6 and params.stop_token_ids == [eos]
    assert params.temperature == 0.9 and params.top_p == 1.0 and params.top_k == 0 and params.logprobs is None
    assert engine.kwargs["max_model_len"] == 48 + 6 and engine.kwargs["max_num_seqs"] == 4
    assert engine.kwargs["gpu_memory_utilization"] == 0.55
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_without_vllm_or_a_gpu_it_is_one_line_before_the_model_loads(tokenizer, tmp_path):
    args = OnlineDPOConfig(output_dir=str(tmp_path), use_cpu=True, use_vllm=True)
    with pytest.raises(UnavailableError, match="use_vllm: true needs") as caught:
        rows = Dataset.from_list([{"prompt": "1 + 1?"}])
        OnlineDPOTrainer(
            "no/such-model", reward_funcs=[digits], args=args, train_dataset=rows, processing_class=tokenizer
        )
    assert one_line(caught.value).startswith("error: use_vllm: true needs")


@pytest.mark.parametrize("field, value", [("vllm_mode", "remote"), ("vllm_gpu_memory_utilization", 1.5),
                                          ("vllm_tensor_parallel_size", 0), ("vllm_server_port", 70000),
                                          ("vllm_group_port", 0), ("vllm_server_timeout", -1.0)])  # fmt: skip
def test_bad_vllm_settings_are_refused(field, value, tmp_path):
    with pytest.raises(ValueError, match=field):
        OnlineDPOConfig(output_dir=str(tmp_path), use_cpu=True, use_vllm=True, **{field: value})
