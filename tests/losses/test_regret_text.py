"""Text-mode regret learner: the loss history written as tokens with exact read positions, causality, the
action tokens' log-probabilities through the shared kernel equal to a plain log_softmax, save and reload."""

import pytest
import torch
from transformers import AutoTokenizer

from alignment.learners.regret_text import LossText, LossTextEncoder, TextRegretLearner
from alignment.tasks import online_learning as ol
from tests.conftest import ROOT
from tests.helpers import FRESH_SEED, tiny_llama


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(ROOT / "data" / "tokenizer")


def test_encoding_by_hand(tokenizer):
    text = LossText.default(tokenizer, actions=2)
    assert text.action_names == [" a", " b"]  # " A" is two tokens for this tokenizer: the lowercase letters
    assert text.value_prefix == ""  # " 3" is two tokens too: the digits are written without a space
    enc = LossTextEncoder(tokenizer, text)
    losses = torch.tensor([[[0.0, 1.0], [0.34, 0.95], [0.5, 0.5]]])
    ids, mask, positions = enc.encode(losses)
    decoded = tokenizer.decode(ids[0, len(enc.header) :])
    # rounds 1 and 2's losses as digits 0-9 (1.0 and 0.95 in the top bin), none for the last round
    assert decoded.replace(" ", "") == "\n>09\n>39\n>"
    assert mask.all() and positions.shape == (1, 3)
    assert [tokenizer.decode(ids[0, p]) for p in positions[0]] == [">"] * 3
    assert positions[0, 0] == len(enc.header) + len(enc.marker) - 1


def test_rows_of_different_lengths_are_padded(tokenizer):
    text = LossText(action_names=[" B", " C"], precision=2, header="h", marker="\n>", value_prefix=" ")
    enc = LossTextEncoder(tokenizer, text)
    ids, mask, positions = enc.encode(torch.tensor([[[0.05, 0.5], [0.0, 0.0]], [[0.99, 0.99], [0.0, 0.0]]]))
    lengths = mask.sum(dim=1)
    assert lengths[0] < lengths[1]  # "5" is shorter than "99"
    assert (ids[0, lengths[0] :] == tokenizer.pad_token_id).all()
    assert positions[0, 1] < positions[1, 1]


def test_kernel_equals_plain_log_softmax_and_policies_use_only_the_past(tokenizer):
    model = tiny_llama(len(tokenizer), seed=FRESH_SEED % 1000)
    learner = TextRegretLearner(model, tokenizer, LossText.default(tokenizer, actions=3))
    losses = ol.make_losses("uniform", 4, 6, 3, seed=FRESH_SEED)
    got = learner.action_logps(losses)
    ids, mask, positions = learner.encoder.encode(losses)
    logits = model(input_ids=ids, attention_mask=mask).logits.log_softmax(-1)
    want = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))[..., learner.encoder.action_ids]
    assert torch.allclose(got, want, atol=1e-5)
    pi = learner.policies(losses)
    assert torch.allclose(pi.sum(-1), torch.ones(4, 6))
    changed = losses.clone()
    changed[:, 3] = 1 - changed[:, 3]
    again = learner.policies(changed)
    assert torch.allclose(again[:, :4], pi[:, :4], atol=1e-6) and not torch.allclose(again[:, 4:], pi[:, 4:])


def test_gradient_reaches_the_model(tokenizer):
    model = tiny_llama(len(tokenizer), seed=1)
    learner = TextRegretLearner(model, tokenizer, LossText.default(tokenizer, actions=2))
    losses = ol.make_losses("gaussian", 3, 5, 2, seed=2)
    ol.regret(learner(losses), losses).sum().backward()
    assert model.lm_head.weight.grad.abs().sum() > 0 and model.model.layers[0].mlp.up_proj.weight.grad.abs().sum() > 0


def test_multi_token_action_names_are_refused(tokenizer):
    with pytest.raises(ValueError, match=r"action name 'rock paper' is .* tokens"):
        LossTextEncoder(tokenizer, LossText(action_names=[" B", "rock paper"]))
