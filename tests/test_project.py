"""The README's commands and CI agree, and the CLI fails cleanly on user mistakes."""

import subprocess

from alignment.cli import main
from tests.conftest import ROOT


def _block(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"<!-- {marker} -->")
    end = text.index(f"<!-- /{marker} -->")
    lines = [line for line in text[start:end].splitlines()[1:] if not line.startswith("```")]
    return "\n".join(lines).strip()


def test_ci_runs_exactly_the_readme_test_command():
    command = _block("test-command")
    assert "pip install torch==2.13.0" in command
    assert command.index("torch==2.13.0") < command.index('pip install -e ".[test')
    assert "OMP_NUM_THREADS=1 python -m pytest" in command
    script = ROOT / ".ci" / "run"
    extracted = subprocess.run(
        [
            "bash",
            "-c",
            "sed -n '/<!-- test-command -->/,/<!-- \\/test-command -->/p' README.md | grep -v '^<!--' | grep -v '^```'",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert extracted == command
    assert "test-command" in script.read_text()


def test_readme_main_command_pins_torch():
    assert _block("main-command").startswith(
        "python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0"
    )


def test_cli_bad_file_is_one_line_error(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": " c", "rejected": ""}\n')
    assert main(["data", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {bad}, row 1, field 'rejected': empty text"
    assert main(["data", "validate", str(tmp_path / "missing.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_cli_validate_reports(tmp_path, capsys, data_dir):
    path = data_dir / "tasks" / "rps" / "pref_eval_standard.jsonl"
    assert main(["data", "validate", str(path), "--tokenizer", str(data_dir / "tokenizer"), "--max-length", "16"]) == 0
    out = capsys.readouterr().out
    assert "rows kept (standard format)" in out and "truncated" in out and "dropped" in out
