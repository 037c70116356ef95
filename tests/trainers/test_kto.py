"""KTO as a trainer: unpaired rows validated with errors naming the row and field, the KL completions rotated
as TRL forms them, paired rows unpaired, the config's checks, LoRA (reference = adapter off), padding-free
batches equal to padded ones, no probes (KTO rows have no pairs)."""

import copy

import pytest
from datasets import Dataset

from alignment.data.errors import DataFormatError
from alignment.trainers import KTOConfig, KTOTrainer
from tests.helpers import changed, tiny_llama
from tests.helpers import preference_rows as rows
from tests.helpers import train_args as args


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return tiny_llama(len(tokenizer))


def unpaired(n=8):
    return [{"prompt": f"What is {i} + {i}?", "completion": f"{2 * i + (i % 2)}", "label": i % 2 == 0}
            for i in range(n)]  # fmt: skip


def test_rows_and_kl_completions(tiny, tokenizer, tmp_path):
    trainer = KTOTrainer(copy.deepcopy(tiny), args=args(KTOConfig, tmp_path, per_device_train_batch_size=4),
                         train_dataset=Dataset.from_list(unpaired()), processing_class=tokenizer)  # fmt: skip
    data = trainer.train_dataset
    assert data["label"] == [True, False] * 4
    chosen, kl = data["chosen_ids"], data["rejected_ids"]
    for block in (0, 4):  # each block of the batch size: row i's KL completion is row i-1's (the first: the last)
        assert kl[block : block + 4] == [chosen[block + 3], *chosen[block : block + 3]]
    assert trainer.active_summary()["diagnostics"].startswith("softmax collapse every step; probes off")
    trainer.train()
    assert trainer.state.log_history[0]["kl"] >= 0


def test_apo_zero_has_no_kl_completions_and_paired_rows_are_unpaired(tiny, tokenizer, data_dir, tmp_path):
    trainer = KTOTrainer(copy.deepcopy(tiny), args=args(KTOConfig, tmp_path, loss_type="apo_zero_unpaired"),
                         train_dataset=rows(data_dir, n=4), processing_class=tokenizer)  # fmt: skip
    data = trainer.train_dataset
    assert data["label"] == [True] * 4 + [False] * 4  # TRL's unpair_preference_dataset order
    assert all(ids == [] for ids in data["rejected_ids"])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"label": "yes"}, r"train dataset, row 3, field 'label': label must be true or false"),
        ({"label": None}, r"row 3, field 'label': missing column"),
        ({"completion": None}, r"row 3, field 'completion': missing column"),
    ],
)
def test_bad_unpaired_rows_name_the_row_and_field(tiny, tokenizer, tmp_path, change, message):
    data = unpaired()
    data[2].update(change)
    with pytest.raises(DataFormatError, match=message):
        KTOTrainer(copy.deepcopy(tiny), args=args(KTOConfig, tmp_path), train_dataset=data, processing_class=tokenizer)


def test_config_checks(tmp_path):
    with pytest.raises(ValueError, match="train_sampling_strategy 'sequential'"):
        KTOConfig(output_dir=str(tmp_path), train_sampling_strategy="random")
    with pytest.raises(ValueError, match="per_device_train_batch_size > 1"):
        KTOConfig(output_dir=str(tmp_path), per_device_train_batch_size=1)
    KTOConfig(output_dir=str(tmp_path), loss_type="apo_zero_unpaired", per_device_train_batch_size=1)  # no KL: fine
    with pytest.raises(ValueError, match="loss_type"):
        KTOConfig(output_dir=str(tmp_path), loss_type="bco")


def test_lora_reference_is_the_adapter_off(tiny, tokenizer, tmp_path):
    from peft import LoraConfig

    peft = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    trainer = KTOTrainer(copy.deepcopy(tiny), args=args(KTOConfig, tmp_path), train_dataset=unpaired(),
                         processing_class=tokenizer, peft_config=peft)  # fmt: skip
    assert trainer.ref_mode == "adapter"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    moved = changed(before, trainer.model)
    assert moved and all("lora_" in n for n in moved)


def test_packed_equals_padded(tokenizer, tmp_path):
    from tests.trainers.test_packing import assert_packed_equals_padded, tiny

    model, ref = tiny("llama", len(tokenizer)), tiny("llama", len(tokenizer), seed=1)
    config = KTOConfig(output_dir=str(tmp_path), padding_free=True, per_device_train_batch_size=6, use_cpu=True,
                       report_to=[], diagnostics=False, save_strategy="no")  # fmt: skip
    data = [{**row, "prompt": " ".join([row["prompt"]] * (1 + i % 3)), "completion": row["completion"] + " ok" * i}
            for i, row in enumerate(unpaired(6))]  # fmt: skip
    trainer = KTOTrainer(model, ref_model=ref, args=config, train_dataset=data, processing_class=tokenizer)
    assert_packed_equals_padded(trainer)
