import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.data import DataFormatError, load_preference_dataset, validate_row
from tests.helpers import STANDARD_ROWS, conversational, write

U = {"role": "user", "content": "Play."}
A = {"role": "assistant", "content": "rock"}
S = {"role": "system", "content": "Be brief."}

# (description, bad row, expected field, words in the reason)
MALFORMED = [
    ("missing chosen column", {"prompt": "p", "rejected": " r"}, "chosen", "missing column"),
    ("missing rejected column", {"prompt": "p", "chosen": " c"}, "rejected", "missing column"),
    ("empty completion", {"prompt": "p", "chosen": "", "rejected": " r"}, "chosen", "empty"),
    ("blank completion", {"prompt": "p", "chosen": " c", "rejected": "   "}, "rejected", "empty"),
    ("non-string completion", {"prompt": "p", "chosen": 42, "rejected": " r"}, "chosen", "got int"),
    (
        "non-string rejected",
        {"prompt": "p", "chosen": " c", "rejected": 4.5},
        "rejected",
        "expected a string",
    ),
    ("non-string prompt", {"prompt": 7, "chosen": " c", "rejected": " r"}, "prompt", "expected a string"),
    ("non-list conversation", {"prompt": {"role": "user"}, "chosen": [A], "rejected": [A]}, "prompt", "list"),
    ("message not a dict", {"prompt": [U], "chosen": ["rock"], "rejected": [A]}, "chosen[0]", "dict"),
    (
        "message without content",
        {"prompt": [U], "chosen": [{"role": "assistant"}], "rejected": [A]},
        "chosen[0]",
        "content",
    ),
    (
        "unknown role",
        {"prompt": [{"role": "human", "content": "x"}], "chosen": [A], "rejected": [A]},
        "prompt[0].role",
        "unknown role",
    ),
    (
        "completion opens with user",
        {"prompt": [U], "chosen": [U], "rejected": [A]},
        "chosen[0].role",
        "assistant",
    ),
    (
        "prompt ends with assistant",
        {"prompt": [U, A], "chosen": [A], "rejected": [A]},
        "prompt[1].role",
        "end with a user",
    ),
    (
        "system not first",
        {"prompt": [U, A, S, U], "chosen": [A], "rejected": [A]},
        "prompt[2].role",
        "system",
    ),
    ("two user turns", {"prompt": [U, U], "chosen": [A], "rejected": [A]}, "prompt[1].role", "two user"),
    (
        "opens with assistant",
        {"prompt": [S, A, U], "chosen": [A], "rejected": [A]},
        "prompt[1].role",
        "open with a user",
    ),
    (
        "empty assistant content",
        {"prompt": [U], "chosen": [{"role": "assistant", "content": ""}], "rejected": [A]},
        "chosen[0].content",
        "empty",
    ),
    ("empty conversation", {"prompt": [], "chosen": [A], "rejected": [A]}, "prompt", "empty conversation"),
    (
        "mixed formats in a row",
        {"prompt": "p", "chosen": [A], "rejected": " r"},
        "rejected",
        "list of messages",
    ),
    ("identical implicit pair", {"chosen": "same text", "rejected": "same text"}, "chosen", "identical"),
    ("lone surrogate", {"prompt": "p", "chosen": " ok\ud800", "rejected": " r"}, "chosen", "undecodable"),
]


@pytest.mark.parametrize(("what", "row", "field", "words"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_every_malformed_row_names_file_row_and_field(tmp_path, what, row, field, words):
    rows = [*STANDARD_ROWS, row] if isinstance(row.get("chosen"), str) or "chosen" not in row else [row]
    if isinstance(row.get("prompt"), (list, dict)) or isinstance(row.get("chosen"), list):
        rows = [*conversational(STANDARD_ROWS), row]
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(DataFormatError) as info:
        load_preference_dataset(path)
    err = info.value
    assert (err.source, err.row, err.field) == (str(path), len(rows), field)
    assert words in err.reason
    assert str(err).startswith(f"{path}, row {len(rows)}, field '{field}': ")


def test_undecodable_bytes_in_a_file_name_the_field(tmp_path):
    path = tmp_path / "bytes.jsonl"
    good = json.dumps(STANDARD_ROWS[0]).encode()
    bad = b'{"prompt": "What is 1 + 2?", "chosen": " 3\xff\xfe", "rejected": " 4"}'
    path.write_bytes(good + b"\n" + good + b"\n" + bad + b"\n")
    with pytest.raises(DataFormatError, match=r"row 3, field 'chosen': undecodable bytes"):
        load_preference_dataset(path)
    csv_path = tmp_path / "bytes.csv"
    csv_path.write_bytes(b"prompt,chosen,rejected\np, c, r\np2,\xc3\x28 bad, r\n")
    with pytest.raises(DataFormatError, match=r"row 2, field 'chosen': undecodable"):
        load_preference_dataset(csv_path)


def test_invalid_json_line_names_the_row(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(STANDARD_ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataFormatError, match=r"row 2: invalid JSON"):
        load_preference_dataset(path)


def test_a_row_in_the_other_format_is_named(tmp_path):
    rows = [*STANDARD_ROWS, *conversational(STANDARD_ROWS[:1])]
    path = write(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(DataFormatError, match=r"row 4, field 'chosen': this row is in the conversational format"):
        load_preference_dataset(path)


def test_drop_invalid_reports_how_many_and_why(tmp_path, caplog):
    rows = [
        *STANDARD_ROWS,
        {"prompt": "p", "chosen": "", "rejected": " r"},
        {"prompt": "p", "rejected": " r"},
    ]
    path = write(tmp_path / "some_bad.jsonl", rows)
    path.write_text(path.read_text() + "{broken\n")
    ds, report = load_preference_dataset(path, drop_invalid=True)
    assert len(ds) == 3 and report.kept == 3
    assert sum(report.dropped.values()) == 3
    assert report.dropped["chosen: empty text"] == 1 and report.dropped["chosen: missing column"] == 1
    assert "3 dropped" in str(report)
    warned = [r for r in caplog.records if r.levelname == "WARNING" and "dropped 3 invalid rows" in r.getMessage()]
    assert len(warned) == 1 and "kept 3" in warned[0].getMessage() and str(path) in warned[0].getMessage()


def test_the_file_is_not_modified_by_validation(tmp_path):
    path = write(tmp_path / "keep.jsonl", [*STANDARD_ROWS, {"prompt": "p", "chosen": ""}])
    before = path.read_bytes()
    with pytest.raises(DataFormatError):
        load_preference_dataset(path)
    assert path.read_bytes() == before


# ----- property test: random rows give our error or a valid row, never anything else --------------------
text = st.one_of(st.text(max_size=8), st.integers(), st.none(), st.floats(allow_nan=False), st.booleans())
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "tool", "bot"]), "content": text}),
    st.dictionaries(st.sampled_from(["role", "content", "name"]), text, max_size=3),
    text,
)
value = st.one_of(text, st.lists(message, max_size=4), st.dictionaries(st.text(max_size=3), text, max_size=2))
row = st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "extra"]), value, max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row)
def test_random_rows_give_our_error_or_success(candidate):
    try:
        clean, fmt = validate_row(candidate)
    except DataFormatError as e:
        assert e.reason and (e.field is None or isinstance(e.field, str))
        return
    assert fmt in ("standard", "conversational")
    assert set(clean) == {"prompt", "chosen", "rejected"}
    if fmt == "standard":
        assert all(isinstance(clean[k], str) for k in clean)
        assert clean["chosen"].strip() and clean["rejected"].strip()
    else:
        assert all(isinstance(clean[k], list) for k in clean)
        assert clean["chosen"][0]["role"] == "assistant"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(row, min_size=1, max_size=5), st.booleans())
def test_random_files_give_our_error_or_a_dataset(tmp_path_factory, rows, drop):
    from alignment.data import DataError

    path = tmp_path_factory.mktemp("h") / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    try:
        ds, report = load_preference_dataset(path, drop_invalid=drop)
    except DataError as e:
        assert str(e).startswith(str(path))
        return
    assert len(ds) == report.kept >= 1


def test_a_prompt_string_repeated_inside_the_conversations_is_implicit():
    """ultrafeedback_binarized's shape: the prompt column is the user's text, the conversations hold it too."""
    from alignment.data.formats import validate_row

    user = {"role": "user", "content": "2+2?"}
    row = {"prompt": "2+2?", "chosen": [user, {"role": "assistant", "content": "4"}],
           "rejected": [user, {"role": "assistant", "content": "5"}]}  # fmt: skip
    clean, fmt = validate_row(row)
    assert fmt == "conversational" and clean["prompt"] == [user]
    assert clean["chosen"] == [{"role": "assistant", "content": "4"}]
