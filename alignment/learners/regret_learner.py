"""The numeric-mode no-regret learner (docs/regret.md; Park et al. 2024, arXiv 2403.16843, section 5):
a transformers causal LM built from a config reads the loss history as ``inputs_embeds`` and plays a
softmax over the d actions at every round.

    position 0:      a learned start vector (no history yet)        -> pi_1
    position t >= 1: W_in l_t + b (the loss vector of round t)      -> pi_{t+1}
    pi = softmax(W_out h_last)                                       [n, T, d]

Causal attention makes row t of the output depend on l_1..l_{t-1} only, as a learner's policy must. Any
decoder-only architecture of transformers works (``AutoModel.from_config``); the default is a small Llama.

Example::

    learner = NumericRegretLearner(actions=3)
    policies = learner(losses)            # losses [n, T, 3] -> policies [n, T, 3]
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def small_llama_config(hidden: int = 64, layers: int = 2, heads: int = 4, max_positions: int = 512):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=2, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=heads, max_position_embeddings=max_positions,
        tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None,
    )  # fmt: skip


class NumericRegretLearner(nn.Module):
    """Loss vectors in, a distribution over the ``actions`` out, at every round."""

    def __init__(self, actions: int, config=None):
        from transformers import AutoModel

        super().__init__()
        if actions < 2:
            raise ValueError(f"a learner needs at least 2 actions, got {actions}")
        self.actions = actions
        self.backbone = AutoModel.from_config(config or small_llama_config())
        hidden = self.backbone.config.hidden_size
        self.embed = nn.Linear(actions, hidden)
        self.start = nn.Parameter(torch.zeros(hidden))
        self.head = nn.Linear(hidden, actions)
        nn.init.zeros_(self.head.weight)  # the untrained learner plays uniform
        nn.init.zeros_(self.head.bias)

    def scores(self, losses: torch.Tensor) -> torch.Tensor:
        """Action scores before the softmax: [n, T, d] from losses [n, T, d]."""
        if losses.dim() != 3 or losses.shape[-1] != self.actions:
            raise ValueError(f"losses must be [n, T, {self.actions}], got {tuple(losses.shape)}")
        n = losses.shape[0]
        inputs = torch.cat([self.start.expand(n, 1, -1), self.embed(losses[:, :-1])], dim=1)
        hidden = self.backbone(inputs_embeds=inputs).last_hidden_state
        return self.head(hidden)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.scores(losses).float(), dim=-1)

    @torch.no_grad()
    def policies(self, losses: torch.Tensor) -> torch.Tensor:
        """Play the learner on any loss sequences [n, T, d] -> policies [n, T, d] (no gradient)."""
        was = self.training
        self.eval()
        try:
            return self(losses.to(next(self.parameters()).device, torch.float32)).cpu()
        finally:
            self.train(was)

    def save_config(self, folder) -> None:
        """``regret_learner.json``: what :meth:`from_pretrained` needs beside ``model.safetensors``."""
        path = Path(folder) / "regret_learner.json"
        path.write_text(json.dumps({"mode": "numeric", "actions": self.actions,
                                    "backbone": self.backbone.config.to_dict()}, indent=1))  # fmt: skip

    @classmethod
    def from_pretrained(cls, folder) -> NumericRegretLearner:
        """A learner saved by the regret-loss trainer (``regret_learner.json`` + ``model.safetensors``)."""
        from safetensors.torch import load_file
        from transformers import AutoConfig

        folder = Path(folder)
        if not (folder / "regret_learner.json").exists():
            raise FileNotFoundError(f"{folder}: no regret_learner.json (not a folder saved by the regret trainer)")
        meta = json.loads((folder / "regret_learner.json").read_text())
        backbone = dict(meta["backbone"])
        config = AutoConfig.for_model(backbone.pop("model_type"), **backbone)
        learner = cls(meta["actions"], config)
        learner.load_state_dict(load_file(str(folder / "model.safetensors")))
        return learner.eval()


class RegretLearner:
    """Load a learner saved by the regret-loss trainer, whichever its mode::

    learner = RegretLearner.from_pretrained("outputs/regret")
    policies = learner.policies(losses)     # [n, T, d] -> [n, T, d]
    """

    @staticmethod
    def from_pretrained(folder, **kwargs):
        folder = Path(folder)
        if not (folder / "regret_learner.json").exists():
            raise FileNotFoundError(f"{folder}: no regret_learner.json (not a folder saved by the regret trainer)")
        mode = json.loads((folder / "regret_learner.json").read_text()).get("mode", "numeric")
        if mode == "text":
            from alignment.learners.regret_text import TextRegretLearner

            return TextRegretLearner.from_pretrained(folder, **kwargs)
        return NumericRegretLearner.from_pretrained(folder)
