"""Non-finite values never reach the weights: NaN/inf in precomputed columns and in numeric options are one-line
errors naming the file, row and field (or the field); a step with a non-finite loss or gradient stops the run
before the optimizer step, naming the step and the last good checkpoint; a model with NaN weights is never
saved; the report names a diverged run instead of printing "rose by nan nats"."""

import json
import math

import pytest
import torch

from alignment.cli import main
from alignment.diagnostics.report import findings
from alignment.diagnostics.runs import Run
from alignment.errors import NonFiniteError
from alignment.trainers import DPOConfig, DPOTrainer
from tests.conftest import DATA, ROOT
from tests.helpers import preference_rows, train_args

RECIPE = str(ROOT / "recipes" / "quickstart" / "dpo.yaml")
FAST = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_task", "null", "--report", "false",
        "--diagnostics", "false", "--eval_dataset", "null"]  # fmt: skip


def _cli(capsys, *args) -> tuple[int, str]:
    code = main(["train", RECIPE, *args])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if code else err  # the error is the last line (after progress bars)


def _rows_with_logps(tmp_path, bad_row: int, value) -> str:
    rows = [json.loads(line) for line in (DATA / "tasks/arithmetic/pref_train_standard.jsonl").open()][:12]
    for i, row in enumerate(rows):
        row["ref_chosen_logps"], row["ref_rejected_logps"] = -3.0 - i, -4.0 - i
    rows[bad_row]["ref_rejected_logps"] = value
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_precomputed_logp_is_one_line_naming_file_row_field(tmp_path, capsys, value):
    path = _rows_with_logps(tmp_path, 4, value)
    code, err = _cli(capsys, *FAST, "--dataset_mixture", f"[{path}]", "--output_dir", str(tmp_path / "out"))
    assert code == 2 and "\n" not in err
    assert err.startswith(f"error: {path}, row 5, field 'ref_rejected_logps': expected a finite number"), err
    assert not (tmp_path / "out" / "model.safetensors").exists()


BAD_OPTIONS = [("beta", "inf"), ("beta", "nan"), ("learning_rate", "nan"), ("learning_rate", "inf"), ("z_loss", "inf"),
               ("max_grad_norm", "nan")]  # fmt: skip


@pytest.mark.parametrize(("field", "value"), BAD_OPTIONS)
def test_non_finite_options_are_one_line_naming_the_field(tmp_path, capsys, field, value):
    code, err = _cli(capsys, *FAST, f"--{field}", value, "--output_dir", str(tmp_path / "out"))
    assert code == 2 and "\n" not in err and field in err and RECIPE in err, err
    assert not (tmp_path / "out").exists()


class _PoisonAt:
    """A forward hook that turns the backbone's output into NaN on its ``step``-th training call."""

    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, module, args, output):
        if not module.training:
            return output
        self.calls += 1
        if self.calls == self.step:
            output.last_hidden_state.mul_(float("nan"))
        return output


def test_a_nan_loss_stops_before_the_optimizer_step_naming_step_and_checkpoint(tmp_path):
    args = train_args(DPOConfig, tmp_path, max_steps=4, save_steps=1, per_device_train_batch_size=4,
                      diagnostics=False)  # fmt: skip
    trainer = DPOTrainer(str(DATA / "sft_model"), args=args, train_dataset=preference_rows(DATA, n=16))
    trainer.model.model.register_forward_hook(_PoisonAt(3))  # the 3rd step's loss and gradients are NaN
    with pytest.raises(NonFiniteError) as info:
        trainer.train()
    message = str(info.value)
    assert "\n" not in message and message.startswith("step 3: the loss or a gradient is NaN or infinite")
    assert f"the last good checkpoint is {tmp_path / 'out' / 'checkpoint-2'}" in message
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
    assert trainer.state.global_step == 2


def test_a_model_with_nan_weights_is_never_saved(tmp_path):
    args = train_args(DPOConfig, tmp_path, diagnostics=False)
    trainer = DPOTrainer(str(DATA / "sft_model"), args=args, train_dataset=preference_rows(DATA, n=8))
    with torch.no_grad():
        next(trainer.model.parameters())[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="parameters hold NaN or infinity"):
        trainer.save_model(str(tmp_path / "saved"))
    assert not (tmp_path / "saved" / "model.safetensors").exists()


def test_the_report_names_a_diverged_run_and_prints_no_nan_nats(tmp_path):
    run = Run("r", tmp_path, "dpo", log_history=[{"loss": 0.69, "step": 1}, {"loss": math.nan, "step": 2}])
    run.probes = [{"step": 0, "summary": {"chosen_delta": math.nan, "rejected_delta": math.nan,
                                          "chosen_fell_share": 0.0, "entangled_share": 0.0, "cosine_mean": math.nan},
                   "pairs": {"logp_w": [0.0]}}]  # fmt: skip
    text = " ".join(findings([run]))
    assert "nan nats" not in text and "rose by" not in text
    assert "the training loss is nan from step 2: the run diverged" in text
