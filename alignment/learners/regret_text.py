"""The text-mode no-regret learner (docs/regret.md; Park et al. 2024, arXiv 2403.16843): an ordinary
causal language model reads the loss history written as text and plays the distribution of its next token
restricted to the d action tokens.

The history of n sequences [n, T, d] is written, for the model's tokenizer, as

    <header>
    <marker>  l_1,1 l_1,2 ... l_1,d          (losses as integers 0..10^p - 1, p = ``precision``)
    <marker>  l_2,1 ...
    ...
    <marker>                                 (round T: no losses yet)

and the policy of round t is read at the last token of the t-th marker, which sees only the losses of
rounds < t:

    logp_a = log softmax(W h_t)[action token a]     (the shared fused kernel: no [n, T, V] logits)
    pi_t   = softmax over the d actions of logp_a   [n, T, d]

Each piece is tokenized on its own and the ids are concatenated, so the positions are exact for any
tokenizer. The losses are rounded for the text; the regret is always measured on the exact losses.

Example::

    learner = TextRegretLearner(model, tokenizer, LossText.default(tokenizer, actions=3))
    policies = learner.policies(losses)        # [n, T, 3]
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from alignment.heads import hidden_states, lm_head, run_with_head, through_wrapper
from alignment.ops import token_logps

logger = logging.getLogger("alignment")

_CANDIDATE_NAMES = ([f" {c}" for c in "ABCDEFGHIJ"], [f" {c}" for c in "abcdefghij"])


@dataclass
class LossText:
    """How a loss history is written: the action tokens' text, the losses' precision, header and marker."""

    action_names: list[str]
    precision: int = 1
    header: str = ""
    marker: str = "\n>"
    value_prefix: str = " "

    @classmethod
    def default(cls, tokenizer, actions: int, precision: int = 1, names: list[str] | None = None) -> LossText:
        """Action names that are one token each for this tokenizer (" A", " B", ... else " a", " b", ...)."""
        if names is None:
            names = next((c[:actions] for c in _CANDIDATE_NAMES if all(_single(tokenizer, n) for n in c[:actions])),
                         _CANDIDATE_NAMES[0][:actions])  # fmt: skip
        top = 10**precision - 1
        prefix = " " if all(_single(tokenizer, f" {v}") for v in range(min(top + 1, 10))) else ""
        header = f"Each round pick one of{''.join(names)}; then each action's loss (0 best, {top} worst) shows."
        return cls(list(names), precision, header, value_prefix=prefix)

    def to_dict(self) -> dict:
        return asdict(self)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _single(tokenizer, text: str) -> bool:
    return len(_ids(tokenizer, text)) == 1


class LossTextEncoder:
    """Loss sequences [n, T, d] -> token ids [n, L], attention mask [n, L] and the read positions [n, T]."""

    def __init__(self, tokenizer, text: LossText):
        self.text = text
        self.action_ids = []
        for name in text.action_names:
            ids = _ids(tokenizer, name)
            if len(ids) != 1:
                raise ValueError(f"action name {name!r} is {len(ids)} tokens for this tokenizer; each action must be "
                                 f"one token: set action_names to single-token strings (e.g. ' A', ' B')")  # fmt: skip
            self.action_ids.append(ids[0])
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        self.header = bos + _ids(tokenizer, text.header)
        self.marker = _ids(tokenizer, text.marker)
        if not self.marker:
            raise ValueError("the marker must be at least one token")
        self.scale = 10**text.precision  # x in [0, 1] -> floor(x * scale), the top bin closed: 0..scale - 1
        self.values = [_ids(tokenizer, f"{text.value_prefix}{v}") for v in range(self.scale)]
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    @property
    def actions(self) -> int:
        return len(self.action_ids)

    def _row(self, losses: torch.Tensor) -> tuple[list[int], list[int]]:
        """One sequence [T, d] -> (ids, positions)."""
        ids, positions = list(self.header), []
        values = (losses.clamp(0, 1) * self.scale).floor().long().clamp_max(self.scale - 1).tolist()
        for t, row in enumerate(values):
            ids += self.marker
            positions.append(len(ids) - 1)
            if t + 1 < len(values):
                for v in row:
                    ids += self.values[v]
        return ids, positions

    def encode(self, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if losses.dim() != 3 or losses.shape[-1] != self.actions:
            raise ValueError(f"losses must be [n, T, {self.actions}], got {tuple(losses.shape)}")
        rows = [self._row(seq) for seq in losses.cpu()]
        width = max(len(ids) for ids, _ in rows)
        input_ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, _) in enumerate(rows):
            input_ids[i, : len(ids)] = torch.tensor(ids)
            mask[i, : len(ids)] = 1
        positions = torch.tensor([p for _, p in rows], dtype=torch.long)
        return input_ids, mask, positions


def action_logps(model, input_ids, attention_mask, positions, action_ids: torch.Tensor, **op_kwargs) -> torch.Tensor:
    """log p(action token a | text up to the read position t) for every t and a: [n, T, d], through the
    shared fused kernel (the full-vocabulary normalizer, never the [n, T, V] logits); works through the
    DDP and ZeRO-3 wrappers like the other methods' forward."""

    def run(input_ids, attention_mask, positions):
        hidden = hidden_states(model, input_ids, attention_mask)
        at = hidden.gather(1, positions[..., None].expand(-1, -1, hidden.shape[-1]))  # [n, T, H]
        n, steps, d = at.shape[0], at.shape[1], action_ids.numel()
        h = at.unsqueeze(2).expand(n, steps, d, at.shape[-1])
        y = action_ids.to(at.device).view(1, 1, d).expand(n, steps, d)
        head = lm_head(model)
        kwargs = {"softcap": head.softcap, "logit_scale": head.logit_scale, **op_kwargs}
        return run_with_head(head, lambda w, b, h, y: token_logps(h, w, y, bias=b, **kwargs), h, y)

    return through_wrapper(model, run, input_ids, attention_mask, positions).logps


class TextRegretLearner:
    """A causal LM + tokenizer playing online learning through :class:`LossText` prompts."""

    mode = "text"

    def __init__(self, model, tokenizer, text: LossText):
        self.model, self.tokenizer, self.text = model, tokenizer, text
        self.encoder = LossTextEncoder(tokenizer, text)
        self.actions = self.encoder.actions

    def action_logps(self, losses: torch.Tensor, model=None) -> torch.Tensor:
        """[n, T, d] log-probabilities of the action tokens (under the full vocabulary)."""
        model = model if model is not None else self.model
        device = next(model.parameters()).device
        ids, mask, positions = (t.to(device) for t in self.encoder.encode(losses))
        return action_logps(model, ids, mask, positions, torch.tensor(self.encoder.action_ids, device=device))

    def __call__(self, losses: torch.Tensor, model=None) -> torch.Tensor:
        return torch.softmax(self.action_logps(losses, model).float(), dim=-1)

    @torch.no_grad()
    def policies(self, losses: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
        """Play the learner on any loss sequences [n, T, d] -> policies [n, T, d] (no gradient)."""
        was = self.model.training
        self.model.eval()
        try:
            return torch.cat([self(chunk).cpu() for chunk in losses.float().split(batch_size)])
        finally:
            self.model.train(was)

    def save_config(self, folder) -> None:
        meta = {"mode": "text", "actions": self.actions, "text": self.text.to_dict()}
        (Path(folder) / "regret_learner.json").write_text(json.dumps(meta, indent=1))

    @classmethod
    def from_pretrained(cls, folder, dtype: str = "float32") -> TextRegretLearner:
        """A text-mode learner saved by the regret-loss trainer: the model (or a LoRA adapter, merged), its
        tokenizer and ``regret_learner.json``."""
        from alignment.models import load_model, load_tokenizer

        folder = Path(folder)
        meta = json.loads((folder / "regret_learner.json").read_text())
        if (folder / "adapter_config.json").exists():
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(str(folder)).merge_and_unload()
        else:
            model = load_model(str(folder), dtype)
        return cls(model.eval(), load_tokenizer(str(folder)), LossText(**meta["text"]))
