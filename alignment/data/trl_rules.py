"""trl 1.16's tokenization where a trainer of it differs from ours (recipe field ``tokenization``, README
"Tokenization").

Our rule (``tokenization: shared``, alignment.data.tokenize) gives each pair one prompt: the completion starts where
the tokenized prompt and the tokenized prompt + completion first differ, for both completions. trl's DPOTrainer and
KTOTrainer do the same; two trl rules differ, and ``tokenization: trl`` reproduces them:

- **CPOTrainer and ORPOTrainer** (``trl.experimental``; :func:`cpo_row`): conversational rows are rendered to
  text by trl's own ``maybe_apply_chat_template``; the prompt and each prompt + completion text are tokenized
  without special tokens; each completion starts after the tokenized prompt, or one token earlier when a token
  merges across the boundary (so chosen and rejected can have prompts one token apart: each sequence masks its own
  prompt); ``bos`` is put before each prompt and ``eos`` after each completion when missing; truncation keeps
  every prompt whole and cuts each completion to ``max_length`` minus its own prompt, to nothing when the prompt
  fills ``max_length`` (trl keeps those rows, with no completion token: SimPO's and ORPO's length-averaged
  log-probabilities are then 0 / 0; trl warns, and so do we).
- **DPOTrainer with** ``truncation_mode: keep_end`` (:func:`keep_end_row`): prompt + chosen and prompt + rejected
  each keep their last ``max_length`` tokens, so the two completions may see different prompt starts (ours cuts
  one shared prompt instead).

Such rows carry each completion's own prompt as ``chosen_prompt_ids`` / ``rejected_prompt_ids`` next to
``prompt_ids`` (the shorter of the two: trl's prompt for generation); the collator builds every sequence from its
own prompt.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from alignment.data.formats import clean_messages

logger = logging.getLogger(__name__)
RULES = ("shared", "trl")
OWN_PROMPT = "{}_prompt_ids"  # chosen_prompt_ids, rejected_prompt_ids


def texts(row: dict[str, Any], keys: tuple[str, ...], tokenizer, chat_template: str | None) -> dict[str, str]:
    """The row's prompt and completions as text: as they are (standard rows) or rendered by trl's
    ``maybe_apply_chat_template`` (conversational rows, with the row's tools and template arguments)."""
    if not isinstance(row[keys[0]], list):
        return {k: row[k] for k in ("prompt", *keys)}
    from trl.data_utils import maybe_apply_chat_template

    kwargs = json.loads(row.get("template_kwargs") or "{}")
    tools = kwargs.pop("tools", None)
    if chat_template is not None:
        kwargs["chat_template"] = chat_template
    example = {k: clean_messages(row[k]) for k in ("prompt", *keys)}
    return maybe_apply_chat_template(example, tokenizer, tools=tools, **kwargs)


def _plain_ids(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def cpo_row(row: dict[str, Any], keys: tuple[str, ...], tokenizer, chat_template: str | None,
            max_length: int | None) -> tuple[dict[str, list[int]], bool, bool]:  # fmt: skip
    """trl 1.16 CPOTrainer.tokenize_row / ORPOTrainer.tokenize_row (decoder-only), in our columns (module
    docstring): (ids, whether a completion was cut, whether a prompt alone fills ``max_length``)."""
    text = texts(row, keys, tokenizer, chat_template)
    prompt = _plain_ids(tokenizer, text["prompt"])
    parts = {}
    for key in keys:
        full = _plain_ids(tokenizer, text["prompt"] + text[key])
        start = len(prompt) if full[: len(prompt)] == prompt else len(prompt) - 1  # a merge across the boundary
        parts[key] = [full[:start], full[start:]]
    shared = prompt[: min(len(p) for p, _ in parts.values())]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    if bos is not None:
        shared = shared if shared[:1] == [bos] else [bos, *shared]
        for part in parts.values():
            part[0] = part[0] if part[0][:1] == [bos] else [bos, *part[0]]
    for part in parts.values():
        if not part[1] or part[1][-1] != eos:
            part[1] = [*part[1], eos]
    cut = full_prompt = False
    if max_length is not None:
        for part in parts.values():
            if len(part[0]) + len(part[1]) > max_length:
                part[1], cut = part[1][: max(0, max_length - len(part[0]))], True
            full_prompt = full_prompt or not part[1]
    if full_prompt:
        logger.warning("a prompt alone fills max_length (%s): trl's rule keeps the row with no completion token "
                       "(tokenization: trl)", max_length)  # fmt: skip
    ids = {"prompt_ids": shared}
    for key, (own, answer) in parts.items():
        ids[OWN_PROMPT.format(key)], ids[f"{key}_ids"] = own, answer
    return ids, cut, full_prompt


def keep_end_row(ids: dict[str, list[int]], keys: tuple[str, ...], max_length: int | None) -> tuple[dict, bool]:
    """trl 1.16 DPOTrainer's ``keep_end``: each prompt + completion keeps its last ``max_length`` tokens (its own
    prompt's end and the completion's end); ``prompt_ids`` becomes the shorter own prompt."""
    p = ids["prompt_ids"]
    out, cut = {}, False
    for key in keys:
        c = ids[f"{key}_ids"]
        if max_length is None or len(p) + len(c) <= max_length:
            out[OWN_PROMPT.format(key)], out[f"{key}_ids"] = p, c
            continue
        cut = True
        room = max(0, max_length - len(c))
        out[OWN_PROMPT.format(key)], out[f"{key}_ids"] = (p[len(p) - room :] if room else []), c[-max_length:]
    out["prompt_ids"] = min((out[OWN_PROMPT.format(k)] for k in keys), key=len)
    return out, cut
