"""A reward model as a judge: P(a > b) = sigmoid(r(x, a) - r(x, b)) (the Bradley-Terry model)."""

from __future__ import annotations

import math

import torch

from alignment.judges.base import check_lengths


def is_adapter(path: str) -> bool:
    """A folder holding a PEFT adapter (a LoRA-trained reward model: ``method: reward`` with ``use_peft``)."""
    from pathlib import Path

    return (Path(path) / "adapter_config.json").is_file()


def load_reward_model(path: str):
    """A LoRA-trained reward model's folder: its base with a one-output head, the adapter (and the trained
    ``score`` head, saved as ``modules_to_save``) loaded and merged in."""
    from peft import PeftConfig, PeftModel

    from alignment.models import load_model

    base = load_model(PeftConfig.from_pretrained(path).base_model_name_or_path, head="reward")
    return PeftModel.from_pretrained(base, path).merge_and_unload()


class RewardModelJudge:
    """Any ``AutoModelForSequenceClassification`` with one output (a model or a local/Hub path).

    Each (prompt, response) is formatted with the tokenizer's chat template when it has one (user turn, then
    assistant turn), else as prompt + response, scored once per call (duplicates share a forward), in batches
    of ``batch_size``, right-padded, truncated to ``max_length`` tokens. Pointwise: ``scores`` gives r(x, y),
    which the rankings use for best and worst of K.
    """

    def __init__(self, model, tokenizer=None, batch_size: int = 16, max_length: int = 1024, device=None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = (
                load_reward_model(model)
                if is_adapter(model)
                else AutoModelForSequenceClassification.from_pretrained(model)
            )
        if tokenizer is None:
            raise ValueError("RewardModelJudge needs the reward model's tokenizer")
        if getattr(model.config, "num_labels", 1) != 1:
            raise ValueError(f"a reward model has one output; this one has num_labels={model.config.num_labels}")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.tokenizer, self.batch_size, self.max_length = tokenizer, batch_size, max_length

    def text(self, prompt: str, response: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False)
        return prompt + response

    @torch.no_grad()
    def scores(self, prompts, responses) -> list[float]:
        """r(x, y) per item."""
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        texts = [self.text(p, r) for p, r in zip(prompts, responses)]
        unique = list(dict.fromkeys(texts))
        device = next(self.model.parameters()).device
        value: dict[str, float] = {}
        self.tokenizer.padding_side = "right"
        for start in range(0, len(unique), self.batch_size):
            chunk = unique[start : start + self.batch_size]
            enc = self.tokenizer(
                chunk, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length,
                add_special_tokens=not getattr(self.tokenizer, "chat_template", None),
            ).to(device)  # fmt: skip
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
            value.update(zip(chunk, logits[:, 0].float().tolist()))
        return [value[t] for t in texts]

    def __call__(self, prompts, responses_a, responses_b) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        n = len(prompts)
        r = self.scores(list(prompts) * 2, list(responses_a) + list(responses_b))
        return [1.0 / (1.0 + math.exp(-(r[i] - r[n + i]))) for i in range(n)]
