"""Per-row ``chat_template_kwargs`` and ``tools`` columns, and assistant messages with tool calls, reach the
chat template (as in TRL's DPOTrainer)."""

import pytest
from datasets import Dataset

from alignment.data import tokenize_preference_dataset, validate_dataset
from alignment.data.errors import DataFormatError

TEMPLATE = (
    "{% if tools %}TOOLS:{% for t in tools %}{{ t['function']['name'] }};{% endfor %}\n{% endif %}"
    "{% if enable_thinking %}THINK\n{% endif %}"
    "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
    "{% if m.get('tool_calls') %}CALL:{{ m['tool_calls'][0]['function']['name'] }}{% endif %}{{ eos_token }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}


def rows():
    prompt = [{"role": "user", "content": "2+2?"}]
    return [
        {"prompt": prompt, "chosen": [{"role": "assistant", "content": "4"}],
         "rejected": [{"role": "assistant", "content": "5"}]},
        {"prompt": prompt, "tools": [WEATHER], "chat_template_kwargs": {"enable_thinking": True},
         "chosen": [{"role": "assistant", "content": None,
                     "tool_calls": [{"type": "function", "function": {"name": "weather", "arguments": {}}}]}],
         "rejected": [{"role": "assistant", "content": "5"}]},
    ]  # fmt: skip


def tokenized(tokenizer, data):
    clean, _ = validate_dataset(data, "rows")
    out, _ = tokenize_preference_dataset(clean, tokenizer, None, "keep_start", TEMPLATE, None, "train")
    return out


def test_tools_kwargs_and_tool_calls_reach_the_template(tokenizer):
    out = tokenized(tokenizer, rows())
    plain, with_tools = (tokenizer.decode(out[i]["prompt_ids"]) for i in (0, 1))
    assert "TOOLS:weather;" in with_tools and "THINK" in with_tools
    assert "TOOLS" not in plain and "THINK" not in plain  # only the row that asks for them
    assert "CALL:weather" in tokenizer.decode(out[1]["chosen_ids"])
    assert set(out.column_names) == {"prompt_ids", "chosen_ids", "rejected_ids"}


def test_a_tool_call_without_content_is_valid(tokenizer):
    """An assistant message with tool_calls and no "content" key (as TRL's tests write them) is valid; a message
    with neither is named."""
    data = rows()
    del data[1]["chosen"][0]["content"]
    out = tokenized(tokenizer, data)
    assert "CALL:weather" in tokenizer.decode(out[1]["chosen_ids"])
    del data[1]["chosen"][0]["tool_calls"]
    with pytest.raises(DataFormatError, match=r"message has no 'content' \(nor 'tool_calls'\)"):
        tokenized(tokenizer, data)


def test_json_text_columns_are_accepted(tokenizer):
    import json

    data = rows()
    data[1]["tools"] = json.dumps(data[1]["tools"])
    data[1]["chat_template_kwargs"] = json.dumps(data[1]["chat_template_kwargs"])
    data[0].update(tools=None, chat_template_kwargs=None)  # a Dataset's columns come from its first row
    out = tokenized(tokenizer, Dataset.from_list(data))
    assert "TOOLS:weather;" in tokenizer.decode(out[1]["prompt_ids"])


@pytest.mark.parametrize(
    "column, value, field",
    [
        ("tools", "{not json", "tools"),
        ("tools", {"a": 1}, "tools"),
        ("chat_template_kwargs", [1], "chat_template_kwargs"),
    ],
)
def test_bad_columns_name_the_row_and_field(column, value, field):
    data = rows()
    data[1][column] = value
    with pytest.raises(DataFormatError) as err:
        validate_dataset(data, "rows")
    assert err.value.field == field and err.value.row is not None
