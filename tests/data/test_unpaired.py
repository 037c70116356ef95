"""KTO's sources: unpaired (prompt, completion, label) rows or preference rows, decided per source by its first
row; bad rows name the file, row and field; paired and unpaired sources are not mixed."""

import json

import pytest

from alignment.data import UNPAIRED, load_preference_data
from alignment.data.errors import DataFormatError, DataLoadError


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


UNPAIRED_ROWS = [
    {"prompt": "1+1=", "completion": "2", "label": True},
    {"prompt": "1+2=", "completion": "4", "label": 0},
]
PAIRED_ROWS = [{"prompt": "1+1=", "chosen": "2", "rejected": "3"}]


def test_unpaired_and_paired_sources_load_with_their_columns(tmp_path):
    unpaired = load_preference_data(write(tmp_path / "u.jsonl", UNPAIRED_ROWS), completions=UNPAIRED)
    assert unpaired.column_names == ["prompt", "completion", "label"] and unpaired["label"] == [True, False]
    paired = load_preference_data(write(tmp_path / "p.jsonl", PAIRED_ROWS), completions=UNPAIRED)
    assert set(paired.column_names) == {"prompt", "chosen", "rejected"}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "a", "completion": "b", "label": "maybe"}, r"u.jsonl, row 2, field 'label': label must be true"),
        ({"prompt": "a", "completion": "b"}, r"u.jsonl, row 2, field 'label': missing column"),
        ({"prompt": "a", "label": True}, r"u.jsonl, row 2, field 'completion': missing column"),
    ],
)  # fmt: skip
def test_a_bad_unpaired_row_names_file_row_and_field(tmp_path, row, message):
    with pytest.raises(DataFormatError, match=message):
        load_preference_data(write(tmp_path / "u.jsonl", [UNPAIRED_ROWS[0], row]), completions=UNPAIRED)


def test_paired_and_unpaired_sources_do_not_mix(tmp_path):
    sources = [write(tmp_path / "u.jsonl", UNPAIRED_ROWS), write(tmp_path / "p.jsonl", PAIRED_ROWS)]
    with pytest.raises(DataLoadError, match="cannot mix paired and unpaired datasets"):
        load_preference_data(sources, completions=UNPAIRED)
