"""Secrets stay secret: every command string, model card, run record, report and pickled config this library
writes goes through these functions, so a ``--hub_token hf_...`` (or a key in a recipe's ``env:``) never lands
in a file, on the Hub or in a log.

A name is secret when one of its words (split at ``_``, ``-``, ``.``) is token, secret, key, password, passwd,
apikey, credential(s) or auth - ``hub_token``, ``HF_TOKEN``, ``WANDB_API_KEY``, ``db_password`` - except the
tokenizer's vocabulary fields (``pad_token``, ``eos_token``, ...), which name a token of the vocabulary. A
value is secret by its shape too: Hugging Face (``hf_...``), OpenAI-style (``sk-...``) and GitHub tokens are
replaced wherever they appear. Imports nothing of ours.
"""

from __future__ import annotations

import re
from typing import Any

MASK = "<redacted>"
SECRET_WORDS = {"token", "secret", "key", "password", "passwd", "apikey", "credential", "credentials", "auth"}
#: fields whose name holds "token" but whose value is a vocabulary token, not a credential
VOCABULARY_FIELDS = {"pad_token", "bos_token", "eos_token", "unk_token", "sep_token", "cls_token", "mask_token"}
#: a quoted key and its quoted value inside text (a JSON or Python mapping printed in a command or a log line)
QUOTED_ENTRY = re.compile(r"""(["'])([\w.\-]+)\1(\s*[:=]\s*)(["'])((?:(?!\4).)*)\4""")
TOKEN_SHAPES = re.compile(r"\b(?:hf_[A-Za-z0-9]{8,}|sk-[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,})\b")


def is_secret_name(name: str) -> bool:
    lowered = str(name).lower().lstrip("-")
    if lowered in VOCABULARY_FIELDS:
        return False
    return any(word in SECRET_WORDS for word in re.split(r"[_\-.\s]+", lowered))


def redact_text(text: str) -> str:
    """``text`` with token-shaped values and the values of secret options (``--hub_token X``, ``--hub_token=X``,
    ``hub_token: X``, ``HF_TOKEN=X``) replaced by the mask; spacing is kept."""
    text = QUOTED_ENTRY.sub(_masked_entry, TOKEN_SHAPES.sub(MASK, str(text)))
    parts = re.split(r"(\s+)", text)
    return "".join(redact_argv(parts[0::2], spaced=parts[1::2]))


def _masked_entry(match: re.Match) -> str:
    quote, key, sep, value_quote, value = match.groups()
    shown = MASK if is_secret_name(key) and value else value
    return f"{quote}{key}{quote}{sep}{value_quote}{shown}{value_quote}"


def redact_argv(argv: list[str], spaced: list[str] | None = None) -> list[str]:
    """Command-line words with the value of every secret option masked: ``--hub_token X`` and ``hub_token: X``
    (the next word), ``--hub_token=X``, ``HF_TOKEN=X`` and ``hub_token:X`` (after the separator). With
    ``spaced`` (the whitespace between the words) the words come back joined by it, in one list."""
    out, hide_next = [], False
    for word in argv:
        if hide_next and word:
            word, hide_next = MASK, False
        else:
            name, sep, value = re.match(r"([^=:]*)([=:]?)(.*)", word).groups()
            structured = _redacted_mapping(word)
            if structured is not None:  # --model_init_kwargs '{"token": "..."}': the value's own secrets
                word = structured
            elif is_secret_name(name.lstrip("-")) and (name.startswith("-") or sep):
                hide_next = not value  # the value is the next word
                word = f"{name}{sep}{MASK}" if value else word
            else:
                word = TOKEN_SHAPES.sub(MASK, word)
        out.append(word)
    if spaced is None:
        return out
    joined = []
    for i, word in enumerate(out):
        joined += [word, spaced[i]] if i < len(spaced) else [word]
    return joined


def _redacted_mapping(word: str) -> str | None:
    """A word that is a JSON or YAML mapping or list (an option's structured value), as JSON with its secrets
    masked; None for any other word."""
    if not word.strip().startswith(("{", "[")):
        return None
    import json

    try:
        data = json.loads(word)
    except ValueError:
        try:
            import yaml

            data = yaml.safe_load(word)
        except Exception:  # not a mapping after all: the word is masked by its shapes only
            return None
    if not isinstance(data, (dict, list)):
        return None
    masked = redact(data)
    return word if masked == data else json.dumps(masked)


def redact(value: Any, name: str = "") -> Any:
    """A JSON-like value with every secret masked at any depth: text under a secret name (a key of any mapping,
    or in a list under one), and token-shaped text anywhere (:func:`redact_text`)."""
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v, name) for v in value]
    if isinstance(value, str):
        return MASK if is_secret_name(name) and value else redact_text(value)
    return value


def without_secrets(state: dict) -> dict:
    """An object's ``__dict__`` for pickling, with every secret at any depth gone: a secret-named entry holding text
    (a field, or a key of a mapping inside one: ``model_init_kwargs: {token: hf_...}``) is None, and a token-shaped
    value anywhere in text is masked. Containers are copied (the live object keeps its values); other objects are
    kept as they are."""
    return {k: _scrubbed(v, k) for k, v in state.items()}


def _scrubbed(value: Any, name: str = "") -> Any:
    if isinstance(value, str):
        return None if is_secret_name(name) and value else TOKEN_SHAPES.sub(MASK, value)
    if isinstance(value, dict):
        return {k: _scrubbed(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_scrubbed(v, name) for v in value)
    return value
