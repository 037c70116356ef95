"""Every surface refuses bad input in one line (``error: ...``, status 2, no traceback) before any model loads, and
an internal bug still shows its traceback.

The field table walks every field of every method's recipe with values its type cannot take (a seeded sample in
the default suite, all of them in the slow one); training is replaced by a sentinel, so a value that got through
fails the test instead of starting a run. The plan options get the same, with the simulation replaced.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import random
import subprocess
import sys
from unittest import mock

import pytest
import torch

from alignment.cli import main
from alignment.configs import TRAINING_BOUNDS, ModelArguments, ScriptArguments
from alignment.errors import RecipeError
from alignment.recipes import _field_types, _fields, _kinds
from alignment.trainers.registry import methods
from tests.conftest import ROOT

#: values a field of each kind cannot take (as the command line writes them: YAML scalars, lists, mappings)
BAD = {"int": ["abc", "2.5", "[1]", "{a: 1}"], "float": ["abc", "[1]", "{a: 1}", ".nan"], "bool": ["abc", "3", "[1]"],
       "str": ["[1]", "{a: 1}"], "list": ["{a: 1}"], "dict": ["[1]", "3", "not-json"]}  # fmt: skip
ENUM_MODULES = ("transformers.trainer_utils", "transformers.training_args")  # HF's enums: a made-up name is bad


class Reached(Exception):
    """Training (or the simulation) was reached: the value got through every check."""


def _accepts(kinds: set[str], type_name: str, text: str) -> bool:
    """Whether a field of ``kinds`` could take ``text`` (so it is no bad value for it)."""
    structured = text.startswith(("[", "{"))
    number = text in ("3", "2.5")
    return (
        ("str" in kinds and not structured and "dict" not in kinds)
        or ("list" in kinds and text.startswith("["))
        or ("dict" in kinds and text.startswith("{"))
        or ("int" in kinds and text == "3")
        or ("float" in kinds and number)
        or (type_name.replace("typing.", "").startswith(("list[float]", "list[int]")) and number)
    )


def bad_values(type_name: str) -> list[str]:
    kinds = _kinds(type_name) - {"none"}
    if not kinds:
        return ["not-a-choice-xyz"] if any(m in type_name for m in ENUM_MODULES) else []
    if "class" in kinds:
        return ["abc"]
    return [v for v in sorted({v for k in kinds for v in BAD.get(k, [])}) if not _accepts(kinds, type_name, v)]


def field_cases() -> list[tuple[str, str, str]]:
    cases = []
    for _, method in sorted(methods().items()):
        if not method.recipe:
            continue
        recipe = str(ROOT / "recipes" / method.recipe)
        types = _field_types(ScriptArguments, ModelArguments, method.config)
        for field in sorted(_fields(ScriptArguments, ModelArguments, method.config)):
            cases += [(recipe, field, value) for value in bad_values(types.get(field, ""))]
    return cases


CASES = field_cases()
SAMPLE = random.Random(0).sample(CASES, 80)


def one_line(argv: list[str], patches=()) -> str:
    """The command's one error line (asserting status 2, one line, no traceback; reaching training fails)."""
    err = io.StringIO()
    with contextlib.ExitStack() as stack:
        stack.enter_context(contextlib.redirect_stderr(err))
        stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
        for target in ("alignment.run._train", "alignment.run.self_play", *patches):
            stack.enter_context(mock.patch(target, side_effect=Reached(target)))
        try:
            code = main(argv)
        except SystemExit as e:  # argparse's refusal of an option's value
            code = e.code
        except Reached as e:
            pytest.fail(f"{argv}: got through to {e}")
    lines = [line for line in err.getvalue().strip().splitlines() if not line.startswith("recipe field ")]  # legacy
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), (argv, code, lines)
    return lines[0]


def _train_argv(recipe: str, field: str, value: str, tmp_path) -> list[str]:
    return ["train", recipe, "--output_dir", str(tmp_path / "out"), f"--{field}", value]


def test_the_table_covers_every_method_and_kind():
    recipes = {str(ROOT / "recipes" / m.recipe) for m in methods().values() if m.recipe}
    assert recipes == {recipe for recipe, _, _ in CASES}
    assert len(CASES) > 3000 and {"beta", "learning_rate", "max_length", "use_peft"} <= {c[1] for c in CASES}


@pytest.mark.parametrize(
    ("recipe", "field", "value"), SAMPLE, ids=[f"{r.split('/')[-1]}:{f}={v}" for r, f, v in SAMPLE]
)
def test_a_bad_field_value_is_one_line(recipe, field, value, tmp_path):
    line = one_line(_train_argv(recipe, field, value, tmp_path))
    assert field in line or "recipe" in line or field.replace("_", " ") in line, line


@pytest.mark.slow
def test_every_field_of_every_method(tmp_path):
    for recipe, field, value in CASES:
        one_line(_train_argv(recipe, field, value, tmp_path))


def outside(bound: str) -> str:
    """A value outside a TRAINING_BOUNDS bound (">= 1", "> 0", "[0, 1)", "[0, 4294967295]")."""
    bound = bound.strip()
    if bound[0] in "[(":
        _, high = (float(x) for x in bound[1:-1].split(","))
        return repr(int(high) + 1) if high > 1 else repr(high + 0.5)
    op, _, number = bound.partition(" ")
    limit = float(number)
    below = limit - 1 if op in (">=", ">") else limit + 1
    return repr(int(below)) if float(below).is_integer() else repr(below)


@pytest.mark.parametrize(("field", "bound"), sorted(TRAINING_BOUNDS.items()))
def test_a_value_outside_its_range_is_one_line(field, bound, tmp_path):
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    line = one_line(_train_argv(recipe, field, outside(bound), tmp_path))
    assert field in line, line


PLAN_BAD = {
    "--devices": ["0", "-1", "abc", "2.5", "100000"],
    "--batch": ["0", "-3", "abc", "1e9"],
    "--max_length": ["0", "1", "abc", "100000000000", "-64"],
    "--device_memory": ["80", "0GB", "-1GB", "1e30GB", "abc", "GB"],
    "--device": ["h300", "", "80GB"],
    "--prompt_tokens": ["-1", "abc"],
    "--completion_tokens": ["1,2,3", "abc", "0", "-5,3"],
    "--host_memory": ["64", "abc", "0TB"],
    "--devices_per_node": ["0", "abc"],
    "--trainer": ["vllm", "3"],
    "--target": ["tpu", "1"],
    "--tiled_mlp_shards": ["0", "-3", "abc"],
    "--beta": ["abc", "[1]"],
}


def plan_cases(seed: int, n: int) -> list[tuple[str, str]]:
    pool = [(option, value) for option, values in PLAN_BAD.items() for value in values]
    return random.Random(seed).sample(pool, min(n, len(pool)))


@pytest.mark.parametrize(("option", "value"), plan_cases(0, 24))
def test_a_bad_plan_option_is_one_line(option, value):
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    extra = ["--tiled_mlp", "true"] if option == "--tiled_mlp_shards" else []
    one_line(["plan", recipe, *extra, option, value], patches=("alignment.planning.plan._simulate",))


@pytest.mark.slow
def test_every_bad_plan_option():
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    for option, value in plan_cases(1, 10**6):
        extra = ["--tiled_mlp", "true"] if option == "--tiled_mlp_shards" else []
        one_line(["plan", recipe, *extra, option, value], patches=("alignment.planning.plan._simulate",))


def test_a_user_error_is_one_line_and_an_internal_bug_keeps_its_traceback(tmp_path):
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    argv = ["train", recipe, "--output_dir", str(tmp_path / "out")]
    user = [RecipeError("bad value"), OSError(errno.EROFS, "Read-only file system", "/x"), MemoryError(),
            PermissionError(errno.EACCES, "Permission denied", "/y"), NotImplementedError("not yet"),
            RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory: you "
                         "tried to allocate 768000000000000 bytes"),
            torch.OutOfMemoryError("CUDA out of memory")]  # fmt: skip
    for error in user:
        with mock.patch("alignment.run.train", side_effect=error):
            assert one_line(argv)
    for bug in (ValueError("internal"), KeyError("x"), RuntimeError("oops"), AttributeError("a"),
                OSError(errno.EBADF, "Bad file descriptor")):  # fmt: skip
        with mock.patch("alignment.run.train", side_effect=bug), pytest.raises(type(bug)):
            main(argv)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--env", "[1, 2]"], "field 'env' must be a mapping"),
        (["--env", "{ALIGNMENT_KERNEL_BUDGET_MB: abc}"], "ALIGNMENT_KERNEL_BUDGET_MB 'abc'"),
        (["--env", "{ALIGNMENT_KERNEL_BACKEND: cuda}"], "ALIGNMENT_KERNEL_BACKEND 'cuda'"),
        (["--max_steps", "0"], "the run would take no step"),
        (["--num_train_epochs", "0"], "the run would take no step"),
        (["--tiled_mlp", "true", "--tiled_mlp_shards", "-3"], "tiled_mlp_shards must be >= 1"),
        (["--sequence_parallel_size", "4"], "attention heads must be divisible"),
        (["--sequence_parallel_size", "1000000000000"], "attention heads must be divisible"),  # it used to hang
        (["--seed", "-1"], "seed must be in"),
        (["--sequence_parallel_size", "2"], "runs under DeepSpeed"),
        (["--kernel_backend", "triton"], "triton"),
        (["--diagnostics_params", "(("], "not a valid regular expression"),
        (["--activation_checkpointing_kwargs", "nope"], "must be a mapping"),
        (["--deepspeed", "missing.json"], "no such file"),
        (["--parallelism_config", "x"], "set from Python"),
        (["--dataloader_num_workers", "1000000000000"], "dataloader_num_workers must be in"),  # it used to hang
        (["--use_peft", "true", "--lora_r", "1000000000000"], "above the model's hidden size"),  # an enforce-fail
    ],
)
def test_the_reported_cases_are_one_line(argv, words, tmp_path, monkeypatch):
    for name in ("ALIGNMENT_KERNEL_BUDGET_MB", "ALIGNMENT_KERNEL_BACKEND", "TRITON_INTERPRET"):
        monkeypatch.setenv(name, "")  # recorded, so that what the recipe's env: sets is undone after the test
        monkeypatch.delenv(name)
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    line = one_line(["train", recipe, "--output_dir", str(tmp_path / "out"), *argv])
    assert words in line, line


def test_vllm_sampling_on_a_machine_without_it_is_one_line_before_any_work(tmp_path):
    recipe = str(ROOT / "recipes" / "quickstart" / "online_dpo.yaml")
    with mock.patch("alignment.evaluation.evaluate", side_effect=AssertionError("evaluated first")):
        line = one_line(["train", recipe, "--output_dir", str(tmp_path / "out"), "--use_vllm", "true"])
    assert "use_vllm: true needs" in line and not (tmp_path / "out").exists(), line


def test_an_output_dir_that_cannot_be_written_is_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    assert "is a file, not a folder" in one_line(["train", recipe, "--output_dir", str(blocker / "run")])
    assert blocker.read_text() == "x"  # nothing already written is lost


def test_commands_that_would_compare_one_sample_are_one_line(tmp_path):
    model = str(ROOT / "data" / "sft_model")
    assert "--samples" in one_line(["data", "pairs", model, "--task", "arithmetic", "--out", str(tmp_path / "p"),
                                    "--samples", "1"])  # fmt: skip
    assert not (tmp_path / "p").exists()
    assert "--samples" in one_line(["judges", "fit-bt", model, "--task", "arithmetic", "--out", str(tmp_path / "b"),
                                    "--samples", "1"])  # fmt: skip


def test_an_error_inside_the_fake_tensor_simulation_does_not_crash_the_process():
    """The frames of the error hold the fake model; cleared and collected before it goes on (else the interpreter's
    teardown freed them after torch's fake-tensor machinery and the heap was corrupted: a segmentation fault)."""
    code = (
        "from unittest import mock\n"
        "from alignment.planning.plan import plan_recipe\n"
        "def boom(*a, **k):\n"
        "    raise ValueError('raised inside the simulation')\n"
        "with mock.patch('alignment.trainers.base.tile_mlps', boom):\n"
        "    try:\n"
        "        plan_recipe('recipes/quickstart/dpo.yaml', {'tiled_mlp': True, 'precompute_ref_logps': False})\n"
        "    except ValueError as e:\n"
        "        print('caught:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert done.returncode == 0 and "caught: raised inside the simulation" in done.stdout, done.stderr[-2000:]
    assert "corrupted" not in done.stderr and "Fatal Python error" not in done.stderr


def test_more_held_out_rows_than_the_mixture_has_is_one_error():
    from alignment.data import load_preference_data
    from alignment.data.errors import DataLoadError

    path = str(ROOT / "data" / "tasks" / "arithmetic" / "pref_train_conversational.jsonl")
    with pytest.raises(DataLoadError, match=r"test_split_size 1e\+12: the mixture has 3000 rows"):
        load_preference_data([path], "train", 1e12, seed=0)


def test_tiling_a_model_without_an_mlp_module_is_one_line_before_it_loads(tmp_path):
    """OPT's decoder layer holds fc1 / fc2 itself (no *MLP module): found on the meta device, no weights."""
    config = tmp_path / "opt.json"
    opt = {"model_type": "opt", "vocab_size": 903, "hidden_size": 64, "ffn_dim": 128, "num_hidden_layers": 1,
           "num_attention_heads": 4, "word_embed_proj_dim": 64}  # fmt: skip
    config.write_text(json.dumps(opt))
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    line = one_line(["train", recipe, "--output_dir", str(tmp_path / "out"), "--tiled_mlp", "true",
                     "--init_from_config", str(config)])  # fmt: skip
    assert "OPTForCausalLM has no *MLP to tile" in line


def test_a_read_only_output_dir_is_one_line(tmp_path):
    """A read-only file system (root writes anywhere else, so the file system's refusal is simulated)."""
    recipe = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
    refused = OSError(errno.EROFS, "Read-only file system")
    with mock.patch("tempfile.mkstemp", side_effect=refused):
        line = one_line(["train", recipe, "--output_dir", str(tmp_path / "run")])
    assert "field 'output_dir'" in line and "Read-only file system" in line and "choose a writable folder" in line
