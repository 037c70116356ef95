import pytest
import torch
from datasets import Dataset

from alignment.data import (
    DataError,
    PreferenceCollator,
    load_preference_dataset,
    tokenize_preference_dataset,
    tokenize_row,
    truncate_row,
)
from tests.helpers import STANDARD_ROWS, conversational

IDS = {"prompt_ids": [1, 2, 3, 4], "chosen_ids": [5, 6, 7], "rejected_ids": [8, 9]}


def test_truncate_keep_start():
    assert truncate_row(IDS, None, "keep_start") == (IDS, False)
    assert truncate_row(IDS, 7, "keep_start") == (IDS, False)
    row, cut = truncate_row(IDS, 6, "keep_start")
    assert cut and row == {"prompt_ids": [1, 2, 3, 4], "chosen_ids": [5, 6], "rejected_ids": [8, 9]}
    assert truncate_row(IDS, 4, "keep_start") == (None, True)  # the prompt alone fills max_length


def test_truncate_keep_end_shares_one_prompt():
    row, cut = truncate_row(IDS, 5, "keep_end")
    assert cut and row == {"prompt_ids": [3, 4], "chosen_ids": [5, 6, 7], "rejected_ids": [8, 9]}
    row, _ = truncate_row(IDS, 2, "keep_end")
    assert row == {"prompt_ids": [], "chosen_ids": [6, 7], "rejected_ids": [8, 9]}


def test_standard_row_gets_bos_and_eos(tokenizer):
    ids = tokenize_row(STANDARD_ROWS[0], tokenizer)
    assert ids["prompt_ids"][0] == tokenizer.bos_token_id
    assert ids["chosen_ids"][-1] == ids["rejected_ids"][-1] == tokenizer.eos_token_id
    full = tokenizer(STANDARD_ROWS[0]["prompt"] + STANDARD_ROWS[0]["chosen"] + tokenizer.eos_token).input_ids
    assert ids["prompt_ids"] + ids["chosen_ids"] == full
    # an eos already present is not doubled
    twice = tokenize_row({**STANDARD_ROWS[0], "chosen": " 3" + tokenizer.eos_token}, tokenizer)
    assert twice["chosen_ids"] == ids["chosen_ids"]


def test_conversational_row_uses_the_chat_template(tokenizer):
    row = conversational(STANDARD_ROWS)[0]
    ids = tokenize_row(row, tokenizer)
    text = tokenizer.decode(ids["prompt_ids"])
    assert text == "<|bos|><|user|>\nWhat is 1 + 2?<|eos|><|assistant|>\n"
    assert tokenizer.decode(ids["chosen_ids"]) == "3<|eos|>"
    custom = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + eos_token }}{% endfor %}"
    other = tokenize_row(row, tokenizer, chat_template=custom)
    assert (
        tokenizer.decode(other["prompt_ids"] + other["chosen_ids"]) == "user: What is 1 + 2?<|eos|>assistant: 3<|eos|>"
    )


def test_completion_starts_where_tokens_diverge(tokenizer):
    # "ab" + "c" may merge across the boundary; prompt_ids + chosen_ids must still be the full tokenization
    row = {"prompt": "the film was gre", "chosen": "at fun", "rejected": "y"}
    ids = tokenize_row(row, tokenizer)
    assert len(ids["prompt_ids"]) < len(tokenizer(row["prompt"]).input_ids)  # "gre" merged into "great"
    for key, completion in (("chosen_ids", "at fun"), ("rejected_ids", "y")):
        full = tokenizer(row["prompt"] + completion + tokenizer.eos_token).input_ids
        assert ids["prompt_ids"] + ids[key] == full


def test_dataset_report_counts_truncated_and_dropped(tokenizer, data_dir):
    ds, _ = load_preference_dataset(data_dir / "tasks/sentiment/pref_eval_standard.jsonl")
    lengths = [len(tokenizer(r["prompt"]).input_ids) for r in ds]
    out, report = tokenize_preference_dataset(ds, tokenizer, max_length=8)
    assert report.dropped == sum(n >= 8 for n in lengths)
    assert report.rows == len(out) == len(ds) - report.dropped
    assert report.truncated == report.rows  # every kept row is longer than 8 tokens
    assert report.longest == 8
    assert all(len(r["prompt_ids"]) + len(r["chosen_ids"]) <= 8 for r in out)
    assert "truncated" in str(report)
    full, report = tokenize_preference_dataset(ds, tokenizer, max_length=None)
    assert report.truncated == report.dropped == 0 and len(full) == len(ds)


def test_tokenize_errors(tokenizer):
    ds = Dataset.from_list(STANDARD_ROWS)
    with pytest.raises(DataError, match="truncation_mode"):
        tokenize_preference_dataset(ds, tokenizer, truncation_mode="middle")
    with pytest.raises(DataError, match="every row was dropped"):
        tokenize_preference_dataset(ds, tokenizer, max_length=2)
    no_template = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    no_template.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        tokenize_preference_dataset(Dataset.from_list(conversational(STANDARD_ROWS)), no_template)


def test_collator_masks_are_exact_token_by_token():
    rows = [
        {"prompt_ids": [11, 12, 13], "chosen_ids": [21, 22], "rejected_ids": [31]},
        {"prompt_ids": [14], "chosen_ids": [23, 24, 25, 26], "rejected_ids": [32, 33]},
    ]
    batch = PreferenceCollator(pad_token_id=0)(rows)
    assert batch["input_ids"].tolist() == [
        [11, 12, 13, 21, 22],
        [14, 23, 24, 25, 26],
        [11, 12, 13, 31, 0],
        [14, 32, 33, 0, 0],
    ]
    assert batch["attention_mask"].tolist() == [
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 1],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 0, 0],
    ]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 0, 1, 1],
        [0, 1, 1, 1, 1],
        [0, 0, 0, 1, 0],
        [0, 1, 1, 0, 0],
    ]
    assert set(batch) == {"input_ids", "attention_mask", "completion_mask"}


def test_collator_pads_to_multiple_and_passes_reference_logps():
    rows = [
        {
            "prompt_ids": [1],
            "chosen_ids": [2],
            "rejected_ids": [3, 4],
            "ref_chosen_logps": -1.5,
            "ref_rejected_logps": -2.0,
        },
        {
            "prompt_ids": [1, 5],
            "chosen_ids": [6],
            "rejected_ids": [7],
            "ref_chosen_logps": -0.5,
            "ref_rejected_logps": -3.0,
        },
    ]
    batch = PreferenceCollator(pad_token_id=9, pad_to_multiple_of=8)(rows)
    assert batch["input_ids"].shape == (4, 8)
    assert batch["input_ids"][0].tolist() == [1, 2, 9, 9, 9, 9, 9, 9]
    assert batch["completion_mask"][2].tolist() == [0, 1, 1, 0, 0, 0, 0, 0]
    assert torch.equal(batch["ref_chosen_logps"], torch.tensor([-1.5, -0.5]))
    assert torch.equal(batch["ref_rejected_logps"], torch.tensor([-2.0, -3.0]))
    with pytest.raises(ValueError, match="empty batch"):
        PreferenceCollator(0)([])


def test_collator_random_batches_match_a_slow_twin():
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        b = int(torch.randint(1, 6, (1,), generator=gen))
        rows = []
        for _ in range(b):
            n = [int(x) for x in torch.randint(0, 7, (3,), generator=gen)]
            n[1], n[2] = max(n[1], 1), max(n[2], 1)
            rows.append(
                {
                    k: torch.randint(3, 99, (m,), generator=gen).tolist()
                    for k, m in zip(("prompt_ids", "chosen_ids", "rejected_ids"), n)
                }
            )
        batch = PreferenceCollator(pad_token_id=0)(rows)
        seqs = [r["prompt_ids"] + r["chosen_ids"] for r in rows] + [r["prompt_ids"] + r["rejected_ids"] for r in rows]
        assert batch["input_ids"].shape == (2 * b, max(map(len, seqs)))
        for i, r in enumerate(rows * 2):
            comp = r["chosen_ids"] if i < b else r["rejected_ids"]
            t = len(r["prompt_ids"]) + len(comp)
            assert batch["input_ids"][i, :t].tolist() == r["prompt_ids"] + comp
            assert batch["attention_mask"][i].sum() == t
            assert batch["completion_mask"][i].tolist() == [0] * len(r["prompt_ids"]) + [1] * len(comp) + [0] * (
                batch["input_ids"].shape[1] - t
            )
