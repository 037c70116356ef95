"""Tokenize preference rows into ``{prompt_ids, chosen_ids, rejected_ids}`` exactly as trl 1.16 does.

Standard rows: ``eos`` is appended to each completion (unless already there) and the strings
``prompt``, ``prompt + chosen`` and ``prompt + rejected`` are tokenized with the tokenizer's special tokens
(e.g. a leading ``bos``). Conversational rows: ``apply_chat_template(prompt, add_generation_prompt=True)``
and ``apply_chat_template(prompt + completion)``. In both cases the completion starts where the tokenized
prompt and prompt + completion first differ (token merges across the boundary, templates that render a
lone prompt differently), so ``prompt_ids + chosen_ids`` is exactly the tokenized full sequence. These ids
equal trl 1.16 DPOTrainer's ``prompt_ids``/``chosen_ids``/``rejected_ids`` (tests/data/test_trl_parity.py).

Truncation to ``max_length`` happens here, once, instead of in every batch:

- ``keep_start``: a row whose prompt alone has ``max_length`` tokens or more is dropped (as TRL does);
  otherwise completions are cut to fit. The collated ``input_ids`` then equal TRL's token for token.
- ``keep_end``: the prompt loses tokens from its start until the longer completion fits (a completion
  longer than ``max_length`` keeps its last tokens and no prompt). **Departure from TRL**, which cuts
  ``prompt + chosen`` and ``prompt + rejected`` separately and so can condition the two completions on
  different prompts; DPO compares log pi(y_w | x) with log pi(y_l | x) for the same x, so we keep one
  shared (left-truncated) prompt per pair.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from alignment.data.errors import DataError, DataFormatError
from alignment.data.formats import TEMPLATE_KWARGS, clean_messages, common_prefix_length, is_carried

logger = logging.getLogger(__name__)
TRUNCATION_MODES = ("keep_start", "keep_end")


@dataclass
class TokenizeReport:
    rows: int
    truncated: int
    dropped: int
    max_length: int | None
    truncation_mode: str
    longest: int

    def __str__(self) -> str:
        return (
            f"tokenized {self.rows} rows: {self.truncated} truncated, {self.dropped} dropped "
            f"(max_length={self.max_length}, {self.truncation_mode}); longest sequence {self.longest} tokens"
        )


def _ids(out: Any) -> list[int]:
    ids = out["input_ids"] if isinstance(out, dict) or hasattr(out, "keys") else out
    return list(ids)


def _completion_keys(row: dict[str, Any]) -> tuple[str, ...]:
    """The completion columns of a validated row: chosen/rejected (preference) or completion (SFT)."""
    return tuple(k for k in ("chosen", "rejected", "completion") if k in row)


def tokenize_row(row: dict[str, Any], tokenizer, chat_template: str | None = None) -> dict[str, list[int]]:
    """Token ids of one validated row, no truncation: ``{prompt_ids, chosen_ids, rejected_ids}`` for a
    preference row, ``{prompt_ids, completion_ids}`` for a supervised one."""
    prompt, keys = row["prompt"], _completion_keys(row)
    if isinstance(row[keys[0]], list):
        kwargs = {"tokenize": True, "return_dict": True, **json.loads(row.get(TEMPLATE_KWARGS) or "{}")}
        if chat_template is not None:
            kwargs["chat_template"] = chat_template
        prompt = clean_messages(prompt)
        prompt_ids = _ids(tokenizer.apply_chat_template(prompt, add_generation_prompt=True, **kwargs))
        full = [_ids(tokenizer.apply_chat_template(prompt + clean_messages(row[k]), **kwargs)) for k in keys]
    else:
        eos = tokenizer.eos_token or ""
        texts = [row[k] if row[k].endswith(eos) else row[k] + eos for k in keys]
        prompt_ids = _ids(tokenizer(text=prompt))
        full = [_ids(tokenizer(text=prompt + t)) for t in texts]
    n = min(common_prefix_length(prompt_ids, f) for f in full)
    return {"prompt_ids": prompt_ids[:n], **{f"{k}_ids": f[n:] for k, f in zip(keys, full)}}


def truncate_row(ids: dict[str, list[int]], max_length: int | None, mode: str) -> tuple[dict | None, bool]:
    """Apply ``max_length`` (module docstring) to ``prompt_ids`` and every completion's ids (the other
    ``*_ids`` entries); return (row or None when dropped, whether it was cut)."""
    p = ids["prompt_ids"]
    completions = {k: v for k, v in ids.items() if k != "prompt_ids"}
    longest = max(len(v) for v in completions.values())
    if max_length is None or len(p) + longest <= max_length:
        return ids, False
    if mode == "keep_start":
        if len(p) >= max_length:
            return None, True
        room = max_length - len(p)
        return {"prompt_ids": p, **{k: v[:room] for k, v in completions.items()}}, True
    room = max_length - longest
    prompt = p[len(p) - room :] if room > 0 else []
    return {"prompt_ids": prompt, **{k: v[-max_length:] for k, v in completions.items()}}, True


def cut_parts(ids: dict[str, list[int]], max_prompt_length: int | None, max_completion_length: int | None) -> bool:
    """TRL's pre-0.29 limits, applied before ``max_length``: the prompt keeps its LAST ``max_prompt_length``
    tokens, each completion its FIRST ``max_completion_length``; in place; whether anything was cut."""
    cut = False
    if max_prompt_length is not None and len(ids["prompt_ids"]) > max_prompt_length:
        ids["prompt_ids"] = ids["prompt_ids"][len(ids["prompt_ids"]) - max_prompt_length :]
        cut = True
    if max_completion_length is not None:
        for key in [k for k in ids if k != "prompt_ids"]:
            if len(ids[key]) > max_completion_length:
                ids[key] = ids[key][:max_completion_length]
                cut = True
    return cut


TOKENIZE_RULES = ("shared", "trl_cpo", "trl_dpo")


def tokenize_pair(row, tokenizer, keys, max_length, truncation_mode, chat_template, max_prompt_length,
                  max_completion_length, rule: str = "shared") -> tuple[dict | None, bool]:  # fmt: skip
    """One validated row's ids under ``rule`` (alignment.data.trl_rules): ``shared`` (ours, one prompt per
    pair), ``trl_cpo`` (trl 1.16's CPOTrainer / ORPOTrainer) or ``trl_dpo`` (its DPOTrainer: ``keep_end`` cuts
    each sequence separately); (ids or None when dropped, whether it was cut)."""
    from alignment.data import trl_rules

    if rule == "trl_cpo":
        if max_prompt_length is not None or max_completion_length is not None:
            raise DataError("max_prompt_length / max_completion_length have no counterpart in trl 1.16's CPO and "
                            "ORPO trainers: with tokenization: trl leave them unset")  # fmt: skip
        ids, cut, _ = trl_rules.cpo_row(row, keys, tokenizer, chat_template, max_length)
        return ids, cut
    ids = tokenize_row(row, tokenizer, chat_template)
    parts_cut = cut_parts(ids, max_prompt_length, max_completion_length)
    if rule == "trl_dpo" and truncation_mode == "keep_end":
        ids, cut = trl_rules.keep_end_row(ids, keys, max_length)
        return ids, cut or parts_cut
    ids, cut = truncate_row(ids, max_length, truncation_mode)
    return ids, cut or parts_cut


def _empty(keys, rule: str, truncation_mode: str) -> dict:
    """The columns of a dropped row (every row of a dataset has the same columns)."""
    from alignment.data.trl_rules import OWN_PROMPT

    empty = {f"{k}_ids": [] for k in ("prompt", *keys)}
    if rule == "trl_cpo" or (rule == "trl_dpo" and truncation_mode == "keep_end"):
        empty.update({OWN_PROMPT.format(k): [] for k in keys})
    return empty


def _check_rule(rule: str) -> None:
    if rule not in TOKENIZE_RULES:
        raise DataError(f"tokenization rule must be one of {TOKENIZE_RULES}, got {rule!r}")


def _longest(ids: dict, keys) -> int:
    from alignment.data.trl_rules import OWN_PROMPT

    return max(len(ids.get(OWN_PROMPT.format(k), ids["prompt_ids"])) + len(ids[f"{k}_ids"]) for k in keys)


def tokenize_preference_dataset(
    dataset,
    tokenizer,
    max_length: int | None = 1024,
    truncation_mode: str = "keep_start",
    chat_template: str | None = None,
    num_proc: int | None = None,
    name: str = "train",
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    keep_columns: tuple[str, ...] = (),
    rule: str = "shared",
):
    """Tokenize and truncate a validated preference ``datasets.Dataset``; return (dataset, TokenizeReport).

    The result keeps the row order and has the columns ``prompt_ids``, ``chosen_ids``, ``rejected_ids``
    (supervised rows, validated with ``completions=formats.SFT``: ``prompt_ids``, ``completion_ids``) and
    any precomputed anchor columns (names ending in ``_logps``) and ``keep_columns``; other columns are removed.
    Conversational data needs a chat template: the tokenizer's or ``chat_template``. ``max_prompt_length`` and
    ``max_completion_length`` (TRL before 0.29) cut the parts first (:func:`cut_parts`). ``rule``: see
    :func:`tokenize_pair` (trl's rules add ``chosen_prompt_ids`` / ``rejected_prompt_ids``).
    """
    _check_rule(rule)
    if truncation_mode not in TRUNCATION_MODES:
        raise DataError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    if max_length is not None and max_length < 1:
        raise DataError(f"max_length must be a positive integer or None, got {max_length}")
    keys = _completion_keys(dataset[0]) if len(dataset) else ("chosen", "rejected")
    if len(dataset) and isinstance(dataset[0][keys[0]], list) and not (chat_template or tokenizer.chat_template):
        raise DataError(
            "the dataset is conversational but the tokenizer has no chat template; set `chat_template` "
            "(a Jinja string) in the recipe or use a tokenizer that has one"
        )

    def process(row):
        ids, cut = tokenize_pair(row, tokenizer, keys, max_length, truncation_mode, chat_template, max_prompt_length,
                                 max_completion_length, rule)  # fmt: skip
        keep = ids is not None
        ids = ids or _empty(keys, rule, truncation_mode)
        return {**ids, "_keep": keep, "_cut": cut and keep, "_len": _longest(ids, keys)}

    out = dataset.map(
        process,
        remove_columns=[c for c in dataset.column_names if not is_carried(c) and c not in keep_columns],
        num_proc=num_proc,
        desc=f"Tokenizing {name} dataset",
    )
    keep = out["_keep"]
    report = TokenizeReport(
        rows=sum(keep),
        truncated=sum(out["_cut"]),
        dropped=len(keep) - sum(keep),
        max_length=max_length,
        truncation_mode=truncation_mode,
        longest=max(out["_len"], default=0),
    )
    if report.dropped:
        out = out.select([i for i, k in enumerate(keep) if k])
    out = out.remove_columns(["_keep", "_cut", "_len"])
    logger.info("%s dataset: %s", name, report)
    if report.rows == 0:
        raise DataError(f"{name} dataset: every row was dropped by truncation ({report})")
    return out, report


# ----- streaming (IterableDataset) ------------------------------------------------------------------------------
def validated_stream(dataset, name: str, completions: tuple[str, ...], labeled: bool = False):
    """A streaming ``datasets.IterableDataset`` validated row by row as it streams (the format is the first
    row's; a bad row raises DataFormatError naming the dataset, row and field when it is reached)."""
    from alignment.data.formats import validate_row

    first = next(iter(dataset), None)
    if first is None:
        raise DataError(f"{name} dataset: the stream has no rows")
    source = f"{name} dataset"
    try:
        probe, fmt = validate_row(first, None, completions, labeled)
    except DataFormatError as e:
        raise e.located(source, 1) from None
    columns = sorted(probe)

    def check(row, index):
        try:
            clean, _ = validate_row(row, fmt, completions, labeled)
        except DataFormatError as e:
            raise e.located(source, index + 1) from None
        return {k: clean.get(k) for k in columns}

    return dataset.map(check, with_indices=True, remove_columns=list(first)), columns


def tokenize_stream(
    dataset,
    tokenizer,
    name: str,
    completions: tuple[str, ...],
    max_length: int | None,
    truncation_mode: str = "keep_start",
    chat_template: str | None = None,
    max_prompt_length: int | None = None,
    max_completion_length: int | None = None,
    labeled: bool = False,
    rule: str = "shared",
):
    """:func:`tokenize_preference_dataset` for a streaming dataset: each row validated, tokenized and truncated
    as it streams, in the same order, to the same ids as the map-style path (rows whose prompt fills
    ``max_length`` dropped); precomputed columns (``*_logps``) and, with ``labeled``, ``label`` kept."""
    if truncation_mode not in TRUNCATION_MODES:
        raise DataError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    _check_rule(rule)
    rows, columns = validated_stream(dataset, name, completions, labeled)
    keys = tuple(k for k in ("chosen", "rejected", "completion") if k in columns)

    def process(row):
        ids, _ = tokenize_pair(row, tokenizer, keys, max_length, truncation_mode, chat_template, max_prompt_length,
                               max_completion_length, rule)  # fmt: skip
        kept = {k: row[k] for k in row if is_carried(k) or (labeled and k == "label")}
        return {**(ids or _empty(keys, rule, truncation_mode)), **kept, "_keep": ids is not None}

    out = rows.map(process, remove_columns=columns)
    out = out.filter(lambda row: row["_keep"]).remove_columns(["_keep"])
    _check_some_row_kept(rows, out, name, max_length, truncation_mode, process)
    return out


def _check_some_row_kept(rows, out, name: str, max_length, truncation_mode: str, process) -> None:
    """A stream that keeps no row (each prompt fills max_length) is refused in one line naming the rows, as the
    map-style path names its dropped rows; found by reading up to the first kept row (the stream is read again
    by training, from its start)."""
    if next(iter(out), None) is not None:
        return
    numbers = [n for n, row in enumerate(rows, start=1) if not process(row)["_keep"]]
    if not numbers:
        raise DataError(f"{name} dataset (streaming): it holds no rows")
    shown = ", ".join(map(str, numbers[:5])) + (", ..." if len(numbers) > 5 else "")
    raise DataError(f"{name} dataset (streaming): every one of its {len(numbers)} rows was dropped (rows {shown}): "
                    f"each prompt fills max_length {max_length} ({truncation_mode}); raise max_length or set "
                    "max_prompt_length")  # fmt: skip
