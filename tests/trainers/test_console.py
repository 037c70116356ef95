"""The console: one compact line per log (step, loss, the method's key metrics, it/s), the full record in
output_dir/train_log.jsonl, and report_to: tensorboard writing event files that tensorboard reads back."""

import copy
import json

import pytest

from alignment.trainers import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer
from alignment.trainers.console import compact_line
from tests.helpers import preference_rows, tiny_llama
from tests.helpers import train_args as args


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


def test_compact_line():
    logs = {"loss": 0.51234, "rewards/margins": 0.4123, "grad_norm": 3.0, "rewards/accuracies": 0.78125}
    assert compact_line(logs, ("rewards/margins", "rewards/accuracies"), 40, 282, 5.21) == (
        "step 40/282  loss 0.5123  rewards/margins 0.4123  rewards/accuracies 0.7812  5.21 it/s"
    )
    assert compact_line({"eval_loss": 0.3, "eval_rewards/margins": 1.0, "eval_runtime": 2.0}, ("rewards/margins",),
                        10, 20, None) == "eval at step 10  eval_loss 0.3  eval_rewards/margins 1"  # fmt: skip
    assert compact_line({"train_runtime": 12.34, "train_loss": 0.5}, (), 20, 20, None) == (
        "done: 20 steps in 12.3 s  train loss 0.5"
    )


def test_one_line_per_log_and_the_full_record_in_the_run(tiny, tokenizer, data_dir, tmp_path, capsys):
    config = args(DPOConfig, tmp_path, max_steps=3, disable_tqdm=True, diagnostics=True, diagnostics_steps=1,
                  diagnostics_probe_pairs=2)  # fmt: skip
    trainer = DPOTrainer(copy.deepcopy(tiny), args=config, train_dataset=preference_rows(data_dir),
                         processing_class=tokenizer)  # fmt: skip
    capsys.readouterr()
    trainer.train()
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith(("step ", "done:"))]
    assert [line.split()[1] for line in printed[:3]] == ["1/3", "2/3", "3/3"] and printed[-1].startswith("done:")
    assert all(len(line) < 160 and "rewards/margins" in line for line in printed[:3])
    records = [json.loads(line) for line in (tmp_path / "out" / "train_log.jsonl").read_text().splitlines()]
    history = [dict(entry) for entry in trainer.state.log_history]
    assert len(records) == len(history) and len(json.dumps(records[0])) > 500  # every metric, not the line's few
    for record, entry in zip(records, history):
        assert {k: v for k, v in record.items() if k != "step"} == pytest.approx(
            {k: v for k, v in entry.items() if k not in ("step", "total_flos")}
        )


def test_each_method_names_its_key_metrics(tiny, tokenizer, data_dir, tmp_path, capsys):
    config = args(KTOConfig, tmp_path, max_steps=1, disable_tqdm=True, diagnostics=False)
    KTOTrainer(copy.deepcopy(tiny), args=config, train_dataset=preference_rows(data_dir),
               processing_class=tokenizer).train()  # fmt: skip
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("step "))
    assert " kl " in line and "rewards/chosen" in line


def test_report_to_tensorboard_writes_readable_events(tiny, tokenizer, data_dir, tmp_path):
    pytest.importorskip("tensorboard", reason="the test extra installs tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = args(DPOConfig, tmp_path, max_steps=2, report_to=["tensorboard"], diagnostics=False)
    trainer = DPOTrainer(copy.deepcopy(tiny), args=config, train_dataset=preference_rows(data_dir),
                         processing_class=tokenizer)  # fmt: skip
    trainer.train()
    events = list((tmp_path / "out").rglob("events.out.tfevents.*"))  # output_dir/runs/<time_host>/
    assert events
    accumulator = EventAccumulator(str(events[0].parent))
    accumulator.Reload()
    losses = [e.value for e in accumulator.Scalars("train/loss")]
    assert len(losses) == 2
    assert losses[0] == pytest.approx(trainer.state.log_history[0]["loss"], rel=1e-6)
    assert "train/rewards/margins" in accumulator.Tags()["scalars"]


def test_deepspeed_cpu_notice_is_dropped_on_a_cpu_run():
    import logging

    from alignment.trainers.console import CPU_NOTICE, _DropCpuNotice, quiet_deepspeed_cpu_notice

    ds_logger = logging.getLogger("DeepSpeed")
    before = list(ds_logger.filters)
    try:
        quiet_deepspeed_cpu_notice(use_cpu=True)
        quiet_deepspeed_cpu_notice(use_cpu=True)
        assert sum(isinstance(f, _DropCpuNotice) for f in ds_logger.filters) == 1  # idempotent

        def record(msg):
            return logging.LogRecord("DeepSpeed", logging.WARNING, __file__, 1, msg, None, None)

        assert not ds_logger.filter(record(CPU_NOTICE + ". If you have GPU, make sure it is visible"))
        assert ds_logger.filter(record("Setting ZeRO stage 2"))  # every other message still passes
    finally:
        ds_logger.filters[:] = before
