"""z-loss (PaLM, arXiv 2204.02311) and the StableMax normalizer (arXiv 2501.04697) as config fields of the
trainers: the first step's loss grows by exactly coef * mean(lse^2) over the scored tokens (lse from the
model's full logits, computed here the plain way) and the term moves the parameters; under StableMax the
logged log-probabilities are the plain StableMax ones; a method that cannot use it says so."""

import pytest
import torch
from datasets import load_dataset

from alignment.cli import main
from alignment.losses.z_loss import z_loss
from alignment.trainers import DPOConfig, DPOTrainer, RegretConfig, RegretLossTrainer, SFTConfig, SFTTrainer
from tests.conftest import DATA, ROOT

MODEL = str(DATA / "sft_model")
COMMON = dict(use_cpu=True, bf16=False, report_to=[], max_steps=1, per_device_train_batch_size=8,
              learning_rate=1e-2, optim="sgd", lr_scheduler_type="constant", logging_steps=1, diagnostics=False,
              save_strategy="no")  # fmt: skip


def test_worked_example():
    assert z_loss(torch.tensor([1.0, -2.0, 3.0]), 1e-4, 3).item() == pytest.approx(4.6667e-4, rel=1e-4)
    masked = z_loss(torch.tensor([1.0, 5.0]), 1.0, 1, mask=torch.tensor([1.0, 0.0]))
    assert masked.item() == 1.0


def plain_z(trainer, coef):
    """coef * mean(lse^2) over the scored tokens of the (single) training batch, from the full logits."""
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        logits = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    mask = batch["completion_mask"][:, 1:].double()
    lse = torch.logsumexp(logits.double(), dim=-1)
    return coef * ((lse**2) * mask).sum().item() / mask.sum().item()


@pytest.mark.parametrize("kind", ["dpo", "sft"])
def test_the_step_loss_grows_by_the_plain_z_loss(tmp_path, kind):
    if kind == "dpo":
        rows = load_dataset("json", data_files=str(DATA / "tasks/arithmetic/pref_train_conversational.jsonl"),
                            split="train").select(range(8))  # fmt: skip
        trainer_cls, config_cls = DPOTrainer, DPOConfig
    else:
        rows = load_dataset("json", data_files=str(DATA / "tasks/arithmetic/sft_train_conversational.jsonl"),
                            split="train").select(range(8))  # fmt: skip
        trainer_cls, config_cls = SFTTrainer, SFTConfig

    def run(coef):
        torch.manual_seed(0)
        args = config_cls(output_dir=str(tmp_path / f"z{coef}"), z_loss=coef, **COMMON)
        trainer = trainer_cls(MODEL, args=args, train_dataset=rows)
        expected = plain_z(trainer, coef)
        trainer.train()
        return trainer.state.log_history[0], expected, next(trainer.model.parameters()).detach().clone()

    (base, _, p0), (with_z, expected, p1) = run(0.0), run(1e-3)
    assert expected > 0
    assert with_z["loss"] - base["loss"] == pytest.approx(expected, rel=1e-4)
    assert "z_loss/lse_squared" in with_z and not torch.equal(p0, p1)


def test_unsupported_settings_are_clear(tmp_path, capsys):
    with pytest.raises(ValueError, match="z_loss must be >= 0"):
        DPOConfig(output_dir="x", use_cpu=True, z_loss=-1.0)
    with pytest.raises(ValueError, match="z_loss is supported by the trainers with a vocabulary softmax"):
        RegretLossTrainer(args=RegretConfig(output_dir=str(tmp_path), use_cpu=True, max_steps=1, z_loss=0.1))
    recipe = str(ROOT / "recipes" / "quickstart" / "sparsepo.yaml")
    assert main(["train", recipe, "--normalizer", "stablemax", "--output_dir", str(tmp_path / "s")]) == 2
    assert "normalizer 'stablemax' is not implemented for sparsepo yet" in capsys.readouterr().err


def plain_stablemax_chosen_logps(trainer):
    """Mean over the batch's pairs of the chosen responses' summed StableMax log-probabilities, from the
    model's full logits."""
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        z = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1].double()
    s = torch.where(z >= 0, z + 1, 1 / (1 - z.clamp(max=0)))
    logp = torch.log(s.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1) / s.sum(-1))
    sums = (logp * batch["completion_mask"][:, 1:]).sum(-1)
    return sums[: sums.shape[0] // 2].mean().item()


def test_dpo_with_the_stablemax_normalizer_logs_its_log_probabilities(tmp_path):
    rows = load_dataset("json", data_files=str(DATA / "tasks/arithmetic/pref_train_conversational.jsonl"),
                        split="train").select(range(8))  # fmt: skip
    args = DPOConfig(output_dir=str(tmp_path), normalizer="stablemax", **COMMON)
    trainer = DPOTrainer(MODEL, args=args, train_dataset=rows)
    expected = plain_stablemax_chosen_logps(trainer)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["logps/chosen"] == pytest.approx(expected, rel=1e-5)
    assert trainer.probe_status.startswith("off: the probes measure softmax")
