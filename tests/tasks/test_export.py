import json

from alignment.tasks import get_task
from alignment.tasks.export import SIZES, build, check


def test_shipped_data_is_regenerated_byte_for_byte(data_dir, tmp_path):
    assert check(data_dir) == []  # every shipped file equals a fresh rebuild
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in build(tmp_path / "a")}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in build(tmp_path / "b")}
    assert first == second


def test_a_changed_file_is_reported(data_dir, tmp_path):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data_dir / "tasks", copy / "tasks")
    shutil.copytree(data_dir / "tokenizer", copy / "tokenizer")
    target = copy / "tasks" / "rps" / "pref_eval_standard.jsonl"
    target.write_bytes(target.read_bytes() + b"\n")
    assert check(copy) == ["tasks/rps/pref_eval_standard.jsonl"]


def test_data_folder_is_small(data_dir):
    total = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file())
    assert total < 20 * 2**20


def test_shipped_datasets_match_their_tasks(data_dir):
    for name in ("arithmetic", "sentiment", "rps"):
        task = get_task(name)
        for split in ("train", "eval"):
            path = data_dir / "tasks" / name / f"pref_{split}_standard.jsonl"
            rows = [json.loads(line) for line in path.read_text().splitlines()]
            assert len(rows) >= 0.95 * SIZES[("pref", split)]
            pool = set(task.prompt_pool(split))
            for row in rows[:200]:
                assert row["prompt"] in pool
                assert task.preference(row["prompt"], row["chosen"], row["rejected"]) > 0.5
            conv = data_dir / "tasks" / name / f"pref_{split}_conversational.jsonl"
            first = json.loads(conv.read_text().splitlines()[0])
            assert first["prompt"] == [{"role": "user", "content": rows[0]["prompt"]}]
            assert first["chosen"] == [{"role": "assistant", "content": rows[0]["chosen"][1:]}]


def test_tokenizer_has_special_tokens_and_chat_template(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    ids = tokenizer("What is 37 + 58? 95").input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.decode(ids, skip_special_tokens=True) == "What is 37 + 58? 95"
    digits = tokenizer.convert_ids_to_tokens(tokenizer("12345", add_special_tokens=False).input_ids)
    assert digits == ["1", "2", "3", "4", "5"]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "rock"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == "<|bos|><|user|>\nHi<|eos|><|assistant|>\nrock<|eos|>"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=True, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(messages, tokenize=True)
    prompt, full = list(getattr(prompt, "input_ids", prompt)), list(getattr(full, "input_ids", full))
    assert full[: len(prompt)] == prompt and full.count(tokenizer.bos_token_id) == 1
    assert 500 <= len(tokenizer) <= 4096
