"""Format detection, implicit-prompt extraction and row validation for preference data.

Three formats are accepted (the same as TRL's):

- standard: ``prompt``, ``chosen``, ``rejected`` are strings;
- conversational: they are lists of ``{"role", "content"}`` messages;
- implicit prompt: no ``prompt`` column; ``chosen`` and ``rejected`` hold the whole text or conversation,
  and the prompt is their shared beginning (:func:`extract_prompt`).

:func:`validate_row` checks one row and returns it normalized to an explicit prompt, or raises
:class:`~alignment.data.errors.DataFormatError` naming the field. Role order rules for conversations:
roles are system, user, assistant or tool; a system message may only come first; the first other message
is a user message; two user messages never follow each other; the prompt ends with a user or tool
message; each completion starts with an assistant message.
"""

from __future__ import annotations

import json
import math
from typing import Any

from alignment.data.errors import DataFormatError

STANDARD, CONVERSATIONAL = "standard", "conversational"
ROLES = ("system", "user", "assistant", "tool")
PREFERENCE = ("chosen", "rejected")  # the completion columns of a preference row
SFT = ("completion",)  # the completion column of a supervised row
#: KTO's rows: unpaired (prompt, completion, label) or preference rows (then unpaired by the trainer); each
#: source is one or the other, decided by its first row
UNPAIRED = ("completion", "label")
#: rows of prompts alone (online DPO samples their completions)
PROMPTS: tuple[str, ...] = ()
COLUMNS = ("prompt", *PREFERENCE)
#: columns ending in this are precomputed anchor log-probabilities (``ref_chosen_logps``, ...): validation and
#: tokenization carry them with their rows
CARRIED_SUFFIX = "_logps"
#: other numeric columns carried with their rows: trl's reward ``margin`` (r_chosen - r_rejected must pass it)
CARRIED_COLUMNS = ("margin",)


def is_carried(key: Any) -> bool:
    """Whether validation and tokenization carry column ``key`` with its row (``*_logps``, ``margin``)."""
    return isinstance(key, str) and (key.endswith(CARRIED_SUFFIX) or key in CARRIED_COLUMNS)


#: the column holding a conversational row's extra apply_chat_template arguments (its ``tools`` and
#: ``chat_template_kwargs``) as JSON text
TEMPLATE_KWARGS = "template_kwargs"


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _number_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def carried_values(row: dict[str, Any]) -> dict[str, Any]:
    """The row's precomputed log-probability columns (``*_logps``) and ``margin``, checked: a sum column
    (``ref_chosen_logps``, ``margin``) holds one finite number, a per-token column (``ref_chosen_token_logps``) a
    list of finite numbers. A NaN, an infinity, a missing value or text is an error naming the column: it would
    reach the loss, and from there every weight."""
    out = {}
    for key, value in row.items():
        if not is_carried(key):
            continue
        if key.endswith("_token" + CARRIED_SUFFIX):
            if not (isinstance(value, list) and all(_finite_number(v) for v in value)):
                bad = value if not isinstance(value, list) else next(v for v in value if not _finite_number(v))
                raise DataFormatError(f"expected a list of finite numbers, got {bad!r}", field=key)
        else:
            value = _number_text(value)  # a csv file's cells are text
            if not _finite_number(value):
                what = "a reward margin" if key in CARRIED_COLUMNS else "a log-probability"
                raise DataFormatError(f"expected a finite number ({what}), got {value!r}", field=key)
        out[key] = value
    return out


def _check_text(value: Any, field: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataFormatError(f"expected a string, got {type(value).__name__}", field=field)
    if not allow_empty and not value.strip():
        raise DataFormatError("empty text", field=field)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise DataFormatError(
            f"undecodable bytes (not valid UTF-8) at character {e.start}, "
            f"after {value[max(0, e.start - 10) : e.start]!r}",
            field=field,
        ) from None
    return value


def _check_messages(value: Any, field: str) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise DataFormatError(
            f"expected a list of messages (conversational format), got {type(value).__name__}", field=field
        )
    if not value:
        raise DataFormatError("empty conversation", field=field)
    out = []
    for i, message in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(message, dict):
            raise DataFormatError(f"a message must be a dict, got {type(message).__name__}", field=where)
        if "role" not in message:
            raise DataFormatError("message has no 'role'", field=where)
        if "content" not in message and not message.get("tool_calls"):  # an assistant's tool call may stand alone
            raise DataFormatError("message has no 'content' (nor 'tool_calls')", field=where)
        message = {"content": None, **message}
        role = message["role"]
        if role not in ROLES:
            raise DataFormatError(f"unknown role {role!r}; expected one of {ROLES}", field=f"{where}.role")
        calls = _tool_calls(message, where)
        content = "" if message["content"] is None and calls else message["content"]
        _check_text(content, f"{where}.content", allow_empty=role != "assistant" or bool(calls))
        # role and content, plus extra string fields (e.g. "name"); other extras cannot share an Arrow schema
        # (tool calls travel as JSON text: alignment.data.tokenize decodes them for the chat template)
        clean = {k: v for k, v in message.items() if k in ("role", "content") or isinstance(v, str)}
        clean["content"] = content
        if calls:
            clean["tool_calls"] = json.dumps(calls)
        out.append(clean)
    return out


def _tool_calls(message: dict, where: str) -> list | None:
    """An assistant message's ``tool_calls`` (a list, or its JSON text), or None."""
    calls = message.get("tool_calls")
    if calls is None:
        return None
    if isinstance(calls, str):
        try:
            calls = json.loads(calls)
        except json.JSONDecodeError as e:
            raise DataFormatError(f"not valid JSON ({e.msg})", field=f"{where}.tool_calls") from None
    if not isinstance(calls, list) or not all(isinstance(c, dict) for c in calls):
        raise DataFormatError("expected a list of tool calls (objects)", field=f"{where}.tool_calls")
    return calls


def template_kwargs(row: dict[str, Any]) -> str | None:
    """The row's ``tools`` (a list of tool schemas or its JSON text) and ``chat_template_kwargs`` (a mapping or
    its JSON text) as one JSON object for apply_chat_template, or None when the row has neither."""
    out = {}
    tools = row.get("tools")
    if tools is not None:
        tools = _json_value(tools, "tools")
        if not isinstance(tools, list):
            raise DataFormatError(f"expected a list of tool schemas, got {type(tools).__name__}", field="tools")
        out["tools"] = tools
    extra = row.get("chat_template_kwargs")
    if extra is not None:
        extra = _json_value(extra, "chat_template_kwargs")
        if not isinstance(extra, dict):
            raise DataFormatError(f"expected a mapping, got {type(extra).__name__}", field="chat_template_kwargs")
        out.update(extra)
    return json.dumps(out) if out else None


def _json_value(value: Any, field: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise DataFormatError(f"not valid JSON ({e.msg})", field=field) from None


def check_role_order(prompt: list[dict], completion: list[dict], field: str) -> None:
    """Raise when the conversation prompt + completion breaks the role rules of the module docstring."""
    roles = [m["role"] for m in prompt + completion]
    if completion[0]["role"] != "assistant":
        raise DataFormatError(
            f"a completion must start with an assistant message, got {completion[0]['role']!r}",
            field=f"{field}[0].role",
        )
    if prompt and prompt[-1]["role"] not in ("user", "tool"):
        raise DataFormatError(
            f"the prompt must end with a user or tool message, got {prompt[-1]['role']!r}",
            field=f"prompt[{len(prompt) - 1}].role",
        )
    for i, role in enumerate(roles):
        part, j = ("prompt", i) if i < len(prompt) else (field, i - len(prompt))
        if role == "system" and i > 0:
            raise DataFormatError("a system message may only come first", field=f"{part}[{j}].role")
        previous = roles[i - 1] if i > 0 else None
        if role != "system" and previous in (None, "system") and role != "user":
            raise DataFormatError(
                f"the conversation must open with a user message, got {role!r}", field=f"{part}[{j}].role"
            )
        if role == "user" and previous == "user":
            raise DataFormatError("two user messages in a row", field=f"{part}[{j}].role")


def detect_format(row: dict[str, Any], column: str = "chosen") -> str:
    """ "standard" or "conversational", from the type of the first completion column (``chosen``)."""
    if column not in row:
        raise DataFormatError("missing column", field=column)
    value = row[column]
    if isinstance(value, str):
        return STANDARD
    if isinstance(value, list):
        return CONVERSATIONAL
    raise DataFormatError(
        f"expected a string (standard format) or a list of messages (conversational format), "
        f"got {type(value).__name__}",
        field=column,
    )


def common_prefix_length(a, b) -> int:
    """Number of leading items (tokens, characters or messages) that ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def extract_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """Split an implicit-prompt pair into (prompt, chosen, rejected).

    Conversations: the prompt is the longest common run of leading messages. Strings: the longest common
    prefix, moved back by one character when it ends on a space (so the space starts the completions, as
    TRL's ``extract_prompt`` does). Raises when the pair is identical or one side would be left empty.
    """
    n = common_prefix_length(chosen, rejected)
    if isinstance(chosen, str) and 0 < n < min(len(chosen), len(rejected)) and chosen[n - 1] == " ":
        n -= 1
    if n >= len(chosen) or n >= len(rejected):
        raise DataFormatError(
            "chosen and rejected are identical or one is a prefix of the other: no completion left after the "
            "shared prompt",
            field="chosen",
        )
    return chosen[:n], chosen[n:], rejected[n:]


def _prompt_repeated(row: dict[str, Any], fmt: str, completions: tuple[str, ...]) -> bool:
    """ultrafeedback_binarized's shape: a prompt STRING beside conversations that already hold it (they
    open with the user's turn); the prompt is then the conversations' shared start, as the handbook reads it."""
    first = row.get(completions[0])
    return (
        fmt == CONVERSATIONAL
        and len(completions) == 2
        and isinstance(row.get("prompt"), str)
        and isinstance(first, list)
        and bool(first)
        and isinstance(first[0], dict)
        and first[0].get("role") in ("user", "system")
    )


def _check_label(value: Any) -> bool:
    """An unpaired row's ``label`` (KTO): True / False (1 / 0 too) - whether the completion is desirable."""
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise DataFormatError(f"label must be true or false, got {value!r}", field="label")


def validate_row(
    row: dict[str, Any], expected_format: str | None = None, completions: tuple[str, ...] = PREFERENCE,
    labeled: bool = False,
) -> tuple[dict[str, Any], str]:  # fmt: skip
    """Check one row; return it normalized to ``{prompt, *completions}`` and its format.

    ``completions`` names the completion columns: ``("chosen", "rejected")`` for preference rows (the
    default; the prompt may be implicit), ``("completion",)`` for supervised rows (the prompt is required).
    ``expected_format`` (set from the first row of a dataset) makes a row in the other format an error.
    ``labeled``: the row also has a boolean ``label`` (KTO's unpaired rows), kept in the result.
    Raises :class:`DataFormatError` with ``field`` set (the caller adds the source and row number).
    """
    if not isinstance(row, dict):
        raise DataFormatError(f"a row must be an object with columns, got {type(row).__name__}")
    for key in completions:
        if key not in row or row[key] is None:
            raise DataFormatError("missing column", field=key)
    if not completions:  # prompts only (online DPO samples the completions)
        if row.get("prompt") is None:
            raise DataFormatError("missing column", field="prompt")
        fmt = detect_format(row, "prompt")
        if expected_format is not None and fmt != expected_format:
            raise DataFormatError(
                f"this row is in the {fmt} format but the rows before it are {expected_format}", field="prompt"
            )
        prompt = _check_text(row["prompt"], "prompt") if fmt == STANDARD else _check_messages(row["prompt"], "prompt")
        return {"prompt": prompt, **carried_values(row)}, fmt
    fmt = detect_format(row, completions[0])
    if expected_format is not None and fmt != expected_format:
        raise DataFormatError(
            f"this row is in the {fmt} format but the rows before it are {expected_format}", field=completions[0]
        )
    implicit = row.get("prompt") is None or _prompt_repeated(row, fmt, completions)
    if implicit and len(completions) != 2:
        raise DataFormatError("missing column", field="prompt")
    check = _check_text if fmt == STANDARD else _check_messages
    values = [check(row[key], key) for key in completions]
    if implicit:
        prompt, *values = extract_prompt(*values)
    elif fmt == STANDARD:
        prompt = _check_text(row["prompt"], "prompt", allow_empty=True)
    else:
        prompt = _check_messages(row["prompt"], "prompt")
    clean = {"prompt": prompt, **dict(zip(completions, values)), **carried_values(row)}
    if labeled:
        if row.get("label") is None:
            raise DataFormatError("missing column", field="label")
        clean["label"] = _check_label(row["label"])
    if fmt == CONVERSATIONAL:
        for key, value in zip(completions, values):
            check_role_order(prompt, value, key)
        kwargs = template_kwargs(row)
        if kwargs is not None:
            clean[TEMPLATE_KWARGS] = kwargs
    return clean, fmt


def clean_messages(messages: list[dict]) -> list[dict]:
    """Messages as a chat template expects them: tool calls decoded from their JSON text, and the keys a
    dataset's shared schema filled with None (a message without "name" or "tool_calls") left out."""
    out = []
    for message in messages:
        clean = {k: v for k, v in message.items() if v is not None}
        if isinstance(clean.get("tool_calls"), str):
            clean["tool_calls"] = json.loads(clean["tool_calls"])
        out.append(clean)
    return out
