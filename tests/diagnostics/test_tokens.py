"""The token-level view: per-token gradient cosines of one pair, from the CLI, against an independent
computation with the model's full logits."""

import json

import pytest
import torch

from alignment.cli import main
from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
from alignment.diagnostics.tokens import token_cosines
from tests.helpers import tiny_llama


def flat_grad(value, params):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(value, params, retain_graph=True)])


def test_cosines_equal_a_full_logits_computation(tokenizer, data_dir):
    model = tiny_llama(len(tokenizer), seed=3).double()
    data = str(data_dir / "tasks" / "arithmetic" / "pref_eval_conversational.jsonl")
    dataset, _ = load_preference_dataset(data)
    tokens, _ = tokenize_preference_dataset(dataset.select([2]), tokenizer, 64)
    batch = PreferenceCollator(tokenizer.pad_token_id)([tokens[0]])
    result = token_cosines(model, batch, tokenizer)
    n_w = len(tokens[0]["chosen_ids"])
    n_l = len(tokens[0]["rejected_ids"])
    assert result.cosine.shape == (n_w, n_l)
    assert "".join(result.chosen_tokens).startswith(dataset[2]["chosen"][0]["content"])
    # independent: log_softmax of the full logits, one gradient per token
    params = [p for p in model.parameters() if p.requires_grad]
    logits = model(input_ids=batch["input_ids"]).logits[:, :-1]
    logp = torch.log_softmax(logits, dim=-1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    start = len(tokens[0]["prompt_ids"]) - 1
    for i, j in [(0, 0), (n_w - 1, n_l - 1), (0, n_l - 1)]:
        g = flat_grad(logp[0, start + i], params)
        h = flat_grad(logp[1, start + j], params)
        expected = torch.dot(g, h) / (g.norm() * h.norm())
        assert result.cosine[i, j].item() == pytest.approx(expected.item(), abs=1e-5)
        assert result.chosen_logps[i] == pytest.approx(logp[0, start + i].item(), abs=1e-8)


def test_cli_writes_heatmap_and_json(tokenizer, data_dir, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_llama(len(tokenizer)).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    data = str(data_dir / "tasks" / "arithmetic" / "pref_eval_standard.jsonl")
    out = tmp_path / "tokens.png"
    assert main(["token-entanglement", str(model_dir), data, "--row", "1", "-o", str(out)]) == 0
    assert "chosen x" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 5000
    twin = json.loads(out.with_suffix(".json").read_text())
    cos = torch.tensor(twin["cosine"])
    assert cos.shape == (len(twin["chosen_tokens"]), len(twin["rejected_tokens"]))
    assert (cos.abs() <= 1 + 1e-5).all()
    assert main(["token-entanglement", str(model_dir), data, "--row", "9999", "-o", str(out)]) == 2
    assert "--row 9999 is out of range" in capsys.readouterr().err
    args = ["token-entanglement", str(model_dir), data, "--params", "nope", "-o", str(out)]
    assert main(args) == 2
    assert "no trainable parameter matches" in capsys.readouterr().err
