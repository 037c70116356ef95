"""A causal LM as a pairwise judge: shown both responses, how likely does it name the first?"""

from __future__ import annotations

import torch

from alignment.judges.base import check_lengths

TEMPLATE = (
    "Which of the two responses to the instruction below is better?\n\n### Instruction:\n{prompt}\n\n"
    "### Response {first}:\n{a}\n\n### Response {second}:\n{b}\n\n"
    "Answer with the letter of the better response only: {first} or {second}."
)


class PairPreferenceJudge:
    """P(a > b) from a causal LM (a model or a local/Hub path) prompted with both responses.

    The prompt (``template``, fields prompt, a, b, first, second; wrapped as a user turn with the
    generation prompt when the tokenizer has a chat template, else followed by ``"\\nAnswer: "``) names the
    responses ``choices`` = ("A", "B"); the judge reads the next-token probabilities of the two names,
    q(a, b) = p(first) / (p(first) + p(second)), and returns the average over both orders,
    (q(a, b) + 1 - q(b, a)) / 2, which cancels a bias toward either position: P(a > b) + P(b > a) = 1 and
    P(a > a) = 0.5 exactly. Batched (``batch_size`` prompts per forward, left-padded); both orders of all
    items go through the model in one pass.
    """

    def __init__(self, model, tokenizer=None, template: str = TEMPLATE, choices=("A", "B"), batch_size: int = 8,
                 max_length: int = 2048, device=None):  # fmt: skip
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if isinstance(model, str):
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model)
        if tokenizer is None:
            raise ValueError("PairPreferenceJudge needs the judge model's tokenizer")
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.model = model.eval()
        if device is not None:
            self.model.to(device)
        self.tokenizer, self.template, self.choices = tokenizer, template, tuple(choices)
        self.batch_size, self.max_length = batch_size, max_length
        self.choice_ids = [self._single_token(c) for c in self.choices]

    def _single_token(self, choice: str) -> int:
        ids = self.tokenizer.encode(choice, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"choice {choice!r} is {len(ids)} tokens for this tokenizer; a judge choice must be one")
        return ids[0]

    def text(self, prompt: str, a: str, b: str) -> str:
        first, second = self.choices
        body = self.template.format(prompt=prompt, a=a, b=b, first=first, second=second)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
            )
        return body + "\nAnswer: "

    @torch.no_grad()
    def first_probability(self, prompts, responses_a, responses_b) -> list[float]:
        """q(a, b): the judge's probability of naming the first response, one order only."""
        texts = [self.text(p, a, b) for p, a, b in zip(prompts, responses_a, responses_b)]
        device = next(self.model.parameters()).device
        self.tokenizer.padding_side = "left"
        out: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            enc = self.tokenizer(
                texts[start : start + self.batch_size], return_tensors="pt", padding=True, truncation=True,
                max_length=self.max_length, add_special_tokens=not getattr(self.tokenizer, "chat_template", None),
            ).to(device)  # fmt: skip
            logits = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, -1]
            two = logits[:, self.choice_ids].float().log_softmax(dim=-1)
            out.extend(two[:, 0].exp().tolist())
        return out

    def __call__(self, prompts, responses_a, responses_b) -> list[float]:
        check_lengths(prompts, responses_a, responses_b)
        n = len(prompts)
        q = self.first_probability(list(prompts) * 2, list(responses_a) + list(responses_b),
                                   list(responses_b) + list(responses_a))  # fmt: skip
        return [(q[i] + 1.0 - q[n + i]) / 2 for i in range(n)]
