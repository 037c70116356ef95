"""Property tests: random recipe overrides and random malformed jsonl rows give a clean result or one line
naming the file (and row and field), never a traceback."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.cli import main
from alignment.recipes import RecipeError, load_recipe
from tests.conftest import ROOT

RECIPE = ROOT / "recipes" / "quickstart" / "dpo.yaml"
FIELDS = ["beta", "max_steps", "use_peft", "learning_rate", "dataset_mixture", "loss_type", "max_length", "lora_r",
          "logging_steps", "truncation_mode", "seed", "output_dir", "precompute_ref_logps", "warmup_steps",
          "lr_scheduler_type", "eval_task", "bettta", "lora_target_modules", "dtype",
          # fields from elsewhere (alignment.legacy) and TRL's options
          "warmup_ratio", "torch_dtype", "rpo_alpha", "max_prompt_length", "max_completion_length", "dataset_mixer",
          "dataset_splits", "dataset_name", "attn_implementation", "reference_free", "evaluation_strategy",
          "model_init_kwargs", "loss_weights", "f_divergence_type", "pad_to_multiple_of", "ld_alpha"]  # fmt: skip
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True), st.text(max_size=12))
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.text(max_size=4), SCALARS, max_size=2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(overrides=st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=3))
def test_random_overrides_parse_or_fail_in_one_line(overrides):
    try:
        load_recipe(RECIPE, {**overrides, "use_cpu": True})
    except RecipeError as e:
        message = str(e)
        assert message.startswith(str(RECIPE)) and "\n" not in message.strip(), message


ROW_VALUES = st.one_of(SCALARS, st.lists(st.dictionaries(st.sampled_from(["role", "content"]), SCALARS), max_size=2))
ROWS = st.lists(
    st.one_of(
        st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "x"]), ROW_VALUES, max_size=4),
        st.just("{broken"),
        st.just("[1, 2]"),
    ),
    min_size=1,
    max_size=5,
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(rows=ROWS, drop=st.booleans())
def test_random_malformed_rows_validate_or_fail_in_one_line(rows, drop, tmp_path, capsys):
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    code = main(["data", "validate", str(path), *(["--drop-invalid"] if drop else [])])
    err = capsys.readouterr().err.strip()
    assert code in (0, 2)
    if code == 2:
        last = err.splitlines()[-1]
        assert last.startswith(f"error: {path}") and "Traceback" not in err, err
