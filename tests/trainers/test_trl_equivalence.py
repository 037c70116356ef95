"""Same tiny model, reference, tokenizer and rows through trl 1.16's DPOTrainer and ours: the same
first-step loss and rewards, and after one SGD step the same parameters."""

import copy

import pytest
import torch
from datasets import load_dataset

from alignment.trainers import DPOConfig, DPOTrainer, RPOConfig, RPOTrainer
from tests.helpers import rel_err, tiny_llama

COMMON = dict(
    use_cpu=True,
    bf16=False,
    report_to=[],
    per_device_train_batch_size=8,
    max_steps=1,
    learning_rate=0.5,
    optim="sgd",
    lr_scheduler_type="constant",
    warmup_steps=0,
    weight_decay=0.0,
    logging_steps=1,
    save_strategy="no",
    seed=0,
)


@pytest.fixture(scope="module")
def base_model(tokenizer):
    model = tiny_llama(len(tokenizer))
    with torch.no_grad():  # a reference that differs from the policy, so rewards are not all zero
        model.lm_head.weight.mul_(4.0)
    return model


def _rows(data_dir, fmt):
    path = data_dir / "tasks" / "arithmetic" / f"pref_train_{fmt}.jsonl"
    return load_dataset("json", data_files=str(path), split="train").select(range(8))


def _run_trl(base, tokenizer, rows, tmp_path, loss_type, **extra):
    from trl import DPOConfig as TrlDPOConfig
    from trl import DPOTrainer as TrlDPOTrainer

    policy, ref = copy.deepcopy(base), copy.deepcopy(base)
    with torch.no_grad():
        ref.lm_head.weight.mul_(0.5)
    args = TrlDPOConfig(
        output_dir=str(tmp_path / "trl"),
        loss_type=loss_type,
        beta=0.2,
        gradient_checkpointing=False,
        max_length=None,
        **COMMON,
        **extra,
    )
    trainer = TrlDPOTrainer(model=policy, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    return trainer.state.log_history[0], dict(policy.named_parameters()), ref


def _run_ours(base, tokenizer, rows, tmp_path, trainer_cls, config_cls, **extra):
    policy, ref = copy.deepcopy(base), copy.deepcopy(base)
    with torch.no_grad():
        ref.lm_head.weight.mul_(0.5)
    args = config_cls(output_dir=str(tmp_path / "ours"), beta=0.2, max_length=None, **COMMON, **extra)
    trainer = trainer_cls(policy, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    return trainer.state.log_history[0], dict(policy.named_parameters()), trainer.ref_model


def _compare(theirs, ours, keys):
    (t_log, t_params, _), (o_log, o_params, _) = theirs, ours
    for key in keys:
        assert o_log[key] == pytest.approx(t_log[key], rel=1e-5, abs=1e-6), key
    moved = 0.0
    for name, value in t_params.items():
        assert rel_err(o_params[name].detach(), value.detach()) <= 1e-5, name
    return moved


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_dpo_sigmoid_equals_trl(tokenizer, base_model, data_dir, tmp_path, fmt):
    rows = _rows(data_dir, fmt)
    theirs = _run_trl(base_model, tokenizer, rows, tmp_path, ["sigmoid"])
    ours = _run_ours(base_model, tokenizer, rows, tmp_path, DPOTrainer, DPOConfig)
    assert theirs[0]["rewards/margins"] != 0  # a real comparison: the reference differs from the policy
    _compare(
        theirs,
        ours,
        ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"],
    )
    changed = any(not torch.equal(p.detach(), base_model.state_dict()[n]) for n, p in ours[1].items())
    assert changed


def test_rpo_token_mean_equals_trl_sigmoid_plus_sft(tokenizer, base_model, data_dir, tmp_path):
    rows = _rows(data_dir, "conversational")
    theirs = _run_trl(base_model, tokenizer, rows, tmp_path, ["sigmoid", "sft"])
    ours = _run_ours(
        base_model, tokenizer, rows, tmp_path, RPOTrainer, RPOConfig, eta=1.0, sft_normalization="token_mean"
    )
    _compare(theirs, ours, ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins"])


TRL_LOSSES = ["hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
              "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm"]  # fmt: skip
KEYS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]


@pytest.mark.parametrize("loss_type", TRL_LOSSES)
def test_every_trl_loss_type_equals_trl(tokenizer, base_model, data_dir, tmp_path, loss_type):
    """Each variant of the loss table against trl 1.16's own trainer: first-step loss, rewards, and the
    parameters after one SGD step (label smoothing where the variant reads it; exo_pair needs it > 0)."""
    rows = _rows(data_dir, "conversational")
    smoothing = {"label_smoothing": 0.1} if loss_type in ("exo_pair", "robust", "aot", "aot_unpaired") else {}
    theirs = _run_trl(base_model, tokenizer, rows, tmp_path, [loss_type], **smoothing)
    ours = _run_ours(base_model, tokenizer, rows, tmp_path, DPOTrainer, DPOConfig, loss_type=loss_type, **smoothing)
    _compare(theirs, ours, KEYS)


OPTIONS = {
    "mpo_weighted_list": dict(loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=[0.8, 0.2, 1.0]),
    "forward_kl": dict(loss_type=["sigmoid"], f_divergence_type="forward_kl"),
    "js_divergence": dict(loss_type=["hinge"], f_divergence_type="js_divergence"),
    "alpha_divergence": dict(loss_type=["sigmoid"], f_divergence_type="alpha_divergence", f_alpha_divergence_coef=0.3),
    "ld_alpha": dict(loss_type=["sigmoid"], ld_alpha=0.5),
    "use_weighting": dict(loss_type=["sigmoid"], use_weighting=True),
    "discopop_tau": dict(loss_type=["discopop"], discopop_tau=0.5),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_trl_options_equal_trl(tokenizer, base_model, data_dir, tmp_path, name):
    rows = _rows(data_dir, "conversational")
    options = dict(OPTIONS[name])
    theirs = _run_trl(base_model, tokenizer, rows, tmp_path, options.pop("loss_type"), **options)
    ours = _run_ours(base_model, tokenizer, rows, tmp_path, DPOTrainer, DPOConfig, loss_type=OPTIONS[name]["loss_type"],
                     **options)  # fmt: skip
    _compare(theirs, ours, KEYS)


def test_sync_ref_model_mixes_the_reference_as_trl_does(tokenizer, base_model, data_dir, tmp_path):
    rows = _rows(data_dir, "conversational")
    options = dict(sync_ref_model=True, ref_model_sync_steps=1, ref_model_mixup_alpha=0.3)
    theirs = _run_trl(base_model, tokenizer, rows, tmp_path, ["sigmoid"], **options)
    ours = _run_ours(base_model, tokenizer, rows, tmp_path, DPOTrainer, DPOConfig, **options)
    _compare(theirs, ours, KEYS)
    t_ref, o_ref = dict(theirs[2].named_parameters()), dict(ours[2].named_parameters())
    moved = 0
    for name, value in t_ref.items():
        assert rel_err(o_ref[name].detach(), value.detach()) <= 1e-5, name
        moved += not torch.equal(value.detach(), base_model.state_dict()[name])
    assert moved  # the reference really was updated


@pytest.mark.parametrize("coef", [None, 0.5])  # None: the model config's own coefficient (Mixtral: 0.001)
def test_moe_router_aux_loss_equals_trl(tokenizer, data_dir, tmp_path, coef):
    from transformers import MixtralConfig, MixtralForCausalLM

    torch.manual_seed(0)
    moe = MixtralForCausalLM(MixtralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                           num_local_experts=4, num_experts_per_tok=2, pad_token_id=0,
                                           bos_token_id=1, eos_token_id=2))  # fmt: skip
    rows = _rows(data_dir, "conversational")
    options = {"router_aux_loss_coef": coef} if coef is not None else {}
    theirs = _run_trl(moe, tokenizer, rows, tmp_path, ["sigmoid"], **options)
    ours = _run_ours(moe, tokenizer, rows, tmp_path, DPOTrainer, DPOConfig, **options)
    assert ours[0]["aux_loss"] > 0
    _compare(theirs, ours, [*KEYS, "aux_loss"])


# ----- reference-free methods: trl 1.16's experimental CPOTrainer and ORPOTrainer ---------------------------
REFERENCE_FREE_KEYS = [*KEYS, "rewards/accuracies", "nll_loss"]  # not logits/*: TRL's mean over [B, T, V] logits


def _run_reference_free(base, tokenizer, rows, tmp_path, trainer_cls, config_cls, name, **extra):
    policy = copy.deepcopy(base)
    args = config_cls(output_dir=str(tmp_path / name), beta=0.2, **COMMON, **extra)
    trainer = trainer_cls(model=policy, args=args, train_dataset=rows, processing_class=tokenizer)
    trainer.train()
    return trainer.state.log_history[0], dict(policy.named_parameters()), None


CPO_CASES = {
    "sigmoid": dict(loss_type="sigmoid"),
    "sigmoid_smoothed": dict(loss_type="sigmoid", label_smoothing=0.1),
    "hinge": dict(loss_type="hinge"),
    "ipo": dict(loss_type="ipo"),
    "simpo": dict(loss_type="simpo", cpo_alpha=0.0),  # SimPO as TRL spells it
    "simpo_with_nll": dict(loss_type="simpo", simpo_gamma=1.0),
    "alphapo": dict(loss_type="alphapo", alpha=0.5),
    "alpha_sigmoid": dict(loss_type="sigmoid", alpha=-0.3),
}


@pytest.mark.parametrize("case", list(CPO_CASES))
def test_cpo_equals_trl(tokenizer, base_model, data_dir, tmp_path, case):
    from trl.experimental.cpo import CPOConfig as TrlCPOConfig
    from trl.experimental.cpo import CPOTrainer as TrlCPOTrainer

    from alignment.trainers import CPOConfig, CPOTrainer

    rows = _rows(data_dir, "conversational")
    options = CPO_CASES[case]
    theirs = _run_reference_free(base_model, tokenizer, rows, tmp_path, TrlCPOTrainer, TrlCPOConfig, "trl",
                                 max_length=1024, **options)  # fmt: skip
    ours = _run_reference_free(base_model, tokenizer, rows, tmp_path, CPOTrainer, CPOConfig, "ours",
                               max_length=None, **options)  # fmt: skip
    assert theirs[0]["rewards/margins"] != 0
    _compare(theirs, ours, REFERENCE_FREE_KEYS)


@pytest.mark.parametrize("fmt", ["standard", "conversational"])
def test_orpo_equals_trl(tokenizer, base_model, data_dir, tmp_path, fmt):
    from trl.experimental.orpo import ORPOConfig as TrlORPOConfig
    from trl.experimental.orpo import ORPOTrainer as TrlORPOTrainer

    from alignment.trainers import ORPOConfig, ORPOTrainer

    rows = _rows(data_dir, fmt)
    theirs = _run_reference_free(base_model, tokenizer, rows, tmp_path, TrlORPOTrainer, TrlORPOConfig, "trl",
                                 max_length=1024)  # fmt: skip
    ours = _run_reference_free(base_model, tokenizer, rows, tmp_path, ORPOTrainer, ORPOConfig, "ours", max_length=None)
    _compare(theirs, ours, [*REFERENCE_FREE_KEYS, "log_odds_ratio", "log_odds_chosen"])


# ----- KTO: trl 1.16's KTOTrainer (unpaired rows; paired rows unpaired) ---------------------------------------
def _unpaired(data_dir, fmt, n=16):
    rows = _rows(data_dir, fmt).to_list() + _rows(data_dir, fmt).to_list()  # 16 rows from the 8 pairs
    from datasets import Dataset

    return Dataset.from_list([{"prompt": r["prompt"], "completion": r["chosen"] if i % 3 else r["rejected"],
                               "label": bool(i % 3)} for i, r in enumerate(rows[:n])])  # fmt: skip


KTO_CASES = {
    "kto": dict(),
    "kto_standard": dict(fmt="standard"),
    "kto_paired_rows": dict(paired=True),
    "kto_weights": dict(desirable_weight=1.5, undesirable_weight=0.7),
    "apo_zero_unpaired": dict(loss_type="apo_zero_unpaired"),
    "kto_precompute": dict(precompute_ref_log_probs=True),
}


@pytest.mark.parametrize("case", list(KTO_CASES))
def test_kto_equals_trl(tokenizer, base_model, data_dir, tmp_path, case):
    from trl import KTOConfig as TrlKTOConfig
    from trl import KTOTrainer as TrlKTOTrainer

    from alignment.trainers import KTOConfig, KTOTrainer

    options = dict(KTO_CASES[case])
    fmt, paired = options.pop("fmt", "conversational"), options.pop("paired", False)
    rows = _rows(data_dir, fmt) if paired else _unpaired(data_dir, fmt)
    results = []
    for name, trainer_cls, config_cls in (("trl", TrlKTOTrainer, TrlKTOConfig), ("ours", KTOTrainer, KTOConfig)):
        policy, ref = copy.deepcopy(base_model), copy.deepcopy(base_model)
        with torch.no_grad():  # a sharper reference: the KL reference point is > 0, so kto differs from apo_zero
            ref.lm_head.weight.mul_(2.0)
        args = config_cls(output_dir=str(tmp_path / name), beta=0.2, **COMMON, **options)
        trainer = trainer_cls(model=policy, ref_model=ref, args=args, train_dataset=rows, processing_class=tokenizer)
        trainer.train()
        results.append((trainer.state.log_history[0], dict(policy.named_parameters()), None))
    theirs = results[0][0]
    assert theirs["kl"] > 0 or options.get("loss_type") == "apo_zero_unpaired"
    keys = ["loss", "kl", *[k for k in KEYS if k != "loss" and k in theirs]]
    assert "rewards/chosen" in keys and ("rewards/margins" in keys or paired)
    _compare(results[0], results[1], keys)
