"""Local stand-ins for the Hub ids that trl's DPO test file loads (models and datasets of `trl-internal-testing`).

Nothing here can reach the Hub, so every id becomes a folder under ``trl-internal-testing/`` beside this script:
``from_pretrained("trl-internal-testing/tiny-Qwen2ForCausalLM-2.5")`` and ``load_dataset("trl-internal-testing/zen",
"standard_preference")`` then read them as local paths (the suite runs with this folder as its working directory).

Models: each architecture the test file names, built from a small config with random weights and the project's
shipped tokenizer (data/tokenizer) with a ChatML-like template that renders system, user, assistant, tool calls and
tools. ``tiny-RemoteForCausalLM`` ships its own Python code (``auto_map``), so loading it needs trust_remote_code.
Datasets: zen's preference configs (standard, conversational, implicit prompt, unpaired; 17 train and 2 test rows
drawn from the shipped sentiment pairs), a harmony-style conversational preference set with a system message, and a
tool-call preference set with a ``tools`` column.

    python build_standins.py          # writes trl-internal-testing/ (about 20 MB), once
"""

import json
import shutil
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

HERE = Path(__file__).resolve().parent
ROOT = HERE / "trl-internal-testing"
DATA = HERE.parents[1] / "data"

TEMPLATE = (
    "{%- if tools %}<|system|>\nTools: {{ tools | tojson }}{{ eos_token }}{%- endif %}"
    "{%- for m in messages %}<|{{ m['role'] }}|>\n"
    "{%- if m.get('content') %}{{ m['content'] }}{%- endif %}"
    "{%- if m.get('tool_calls') %}{{ m['tool_calls'] | tojson }}{%- endif %}{{ eos_token }}"
    "{%- endfor %}{%- if add_generation_prompt %}<|assistant|>\n{%- endif %}"
)

SMALL = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=1024,
    tie_word_embeddings=False,
)

ARCHS = {
    "tiny-Qwen2ForCausalLM-2.5": ("qwen2", {}),
    "tiny-Qwen3MoeForCausalLM": ("qwen3_moe", dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32)),
    "tiny-GptOssForCausalLM": (
        "gpt_oss",
        dict(
            num_local_experts=4,
            num_experts_per_tok=2,
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"],
        ),
    ),
    "tiny-Cohere2ForCausalLM": (
        "cohere2",
        dict(sliding_window=64, layer_types=["sliding_attention", "full_attention"]),
    ),
    "tiny-Glm4MoeForCausalLM": (
        "glm4_moe",
        dict(
            n_routed_experts=4,
            num_experts_per_tok=2,
            n_shared_experts=1,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            n_group=1,
            topk_group=1,
        ),
    ),
    "tiny-NemotronHForCausalLM-nano": (
        "nemotron_h",
        dict(
            hybrid_override_pattern="M*",
            mamba_num_heads=4,
            mamba_head_dim=16,
            ssm_state_size=16,
            n_groups=1,
            mamba_d_conv=4,
            layers_block_type=None,
        ),
    ),
    "tiny-Olmo3ForCausalLM": ("olmo3", dict(sliding_window=64, layer_types=["sliding_attention", "full_attention"])),
    "tiny-Lfm2ForCausalLM": ("lfm2", dict(layer_types=["conv", "full_attention"], block_ff_dim=128)),
    "tiny-Lfm2ForCausalLM-2.5": ("lfm2", dict(layer_types=["full_attention", "conv"], block_ff_dim=128)),
}

REMOTE_CONFIG = """from transformers import Qwen2Config


class RemoteConfig(Qwen2Config):
    model_type = "remote"
"""

REMOTE_MODEL = """from transformers import Qwen2ForCausalLM

from .configuration_remote import RemoteConfig


class RemoteForCausalLM(Qwen2ForCausalLM):
    config_class = RemoteConfig
"""


def tokenizer():
    """The shipped tokenizer without its BOS post-processor (Qwen's tokenizers add no BOS), with TEMPLATE."""
    tok = AutoTokenizer.from_pretrained(DATA / "tokenizer")
    tok.chat_template = TEMPLATE
    tok.backend_tokenizer.post_processor = None
    return tok


def build_model(name, model_type, extra, seed):
    torch.manual_seed(seed)
    tok = tokenizer()
    fields = {
        **SMALL,
        **extra,
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    fields = {k: v for k, v in fields.items() if v is not None}
    config = AutoConfig.for_model(model_type, **fields)
    model = AutoModelForCausalLM.from_config(config)
    folder = ROOT / name
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_remote():
    folder = build_model("tiny-RemoteForCausalLM", "qwen2", {}, seed=99)
    (folder / "configuration_remote.py").write_text(REMOTE_CONFIG)
    (folder / "modeling_remote.py").write_text(REMOTE_MODEL)
    config = json.loads((folder / "config.json").read_text())
    config.update(
        model_type="remote",
        architectures=["RemoteForCausalLM"],
        auto_map={
            "AutoConfig": "configuration_remote.RemoteConfig",
            "AutoModelForCausalLM": "modeling_remote.RemoteForCausalLM",
        },
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def pairs(split, n):
    path = DATA / "tasks" / "sentiment" / f"pref_{split}_standard.jsonl"
    with open(path) as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


def conversational(row, system=None):
    prompt = [{"role": "user", "content": row["prompt"]}]
    if system:
        prompt = [{"role": "system", "content": system}, *prompt]
    answer = lambda text: [{"role": "assistant", "content": text.strip()}]  # noqa: E731
    return {"prompt": prompt, "chosen": answer(row["chosen"]), "rejected": answer(row["rejected"])}


FORMATS = {
    "standard_preference": lambda r: r,
    "conversational_preference": conversational,
    "standard_implicit_prompt_preference": lambda r: {
        "chosen": r["prompt"] + r["chosen"],
        "rejected": r["prompt"] + r["rejected"],
    },
    "conversational_implicit_prompt_preference": lambda r: {
        k: conversational(r)["prompt"] + conversational(r)[k] for k in ("chosen", "rejected")
    },
}


def unpaired(rows):
    out = []
    for r in rows:
        out += [
            {"prompt": r["prompt"], "completion": r["chosen"], "label": True},
            {"prompt": r["prompt"], "completion": r["rejected"], "label": False},
        ]
    return out[: len(rows)]


TOOL = {
    "type": "function",
    "function": {
        "name": "rate",
        "description": "Rate a film from 1 to 5.",
        "parameters": {"type": "object", "properties": {"title": {"type": "string"}}, "required": ["title"]},
    },
}


def toolcall(row):
    call = {"type": "function", "function": {"name": "rate", "arguments": {"title": row["prompt"][12:-1]}}}
    chosen = [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "name": "rate", "content": "4"},
        {"role": "assistant", "content": row["chosen"].strip()},
    ]
    return {
        "prompt": [{"role": "user", "content": row["prompt"]}],
        "chosen": chosen,
        "rejected": [{"role": "assistant", "content": row["rejected"].strip()}],
        "tools": json.dumps([TOOL]),
    }


def write_dataset(name, configs):
    folder = ROOT / name
    lines = ["---", "configs:"]
    for config, splits in configs.items():
        lines += [f"- config_name: {config}", "  data_files:"]
        for split, rows in splits.items():
            path = folder / config / f"{split}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
            lines += [f"  - split: {split}", f"    path: {config}/{split}.jsonl"]
    lines += ["---", f"Local stand-in for trl-internal-testing/{name} (see build_standins.py)."]
    (folder / "README.md").write_text("\n".join(lines) + "\n")


def build_datasets():
    train, test = pairs("train", 17), pairs("eval", 2)
    zen = {c: {"train": [f(r) for r in train], "test": [f(r) for r in test]} for c, f in FORMATS.items()}
    zen["standard_unpaired_preference"] = {"train": unpaired(train), "test": unpaired(test)}
    write_dataset("zen", zen)
    system = "You are a film critic. Reasoning: low."
    write_dataset(
        "harmony",
        {
            "preference": {
                "train": [conversational(r, system) for r in train],
                "test": [conversational(r, system) for r in test],
            }
        },
    )
    write_dataset(
        "toolcall", {"preference": {"train": [toolcall(r) for r in train], "test": [toolcall(r) for r in test]}}
    )


def main():
    shutil.rmtree(ROOT, ignore_errors=True)
    shutil.rmtree(HERE / "runs" / "hf_home", ignore_errors=True)  # the suite's datasets cache (conftest.py)
    for seed, (name, (model_type, extra)) in enumerate(ARCHS.items()):
        build_model(name, model_type, extra, seed)
        print("model", name)
    build_remote()
    build_datasets()
    print("stand-ins written to", ROOT)


if __name__ == "__main__":
    main()
