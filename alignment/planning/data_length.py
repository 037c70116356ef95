"""The batch a recipe's training really reaches: the collator pads each batch to its longest sequence, not to
``max_length``, and the fused op's work follows each row's completion tokens, so the step that sets the peak is
the heaviest batch a shuffle can draw: the row with the training set's longest sequence (prompt + longer
completion, after truncation) and the B - 1 rows with the most tokens. ``alignment plan`` plans that batch, the
rows' own token ids, when it can read the rows (local files, or datasets already in the cache), and B rows of
``max_length`` tokens otherwise (Hub rows on a machine without the network, a method that makes its own data or
its own row layout); the plan says which (``Plan.length_source``).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def heaviest_batch(method_name: str, script, config, batch: int) -> tuple[list[dict] | None, int | None, str]:
    """(the heaviest batch's tokenized rows, or None when the rows cannot be read here; its longest sequence in
    tokens; a note saying which)."""
    from alignment.trainers import get_method

    method = get_method(method_name)
    limit = config.max_length
    if method.trainer.samples_completions:
        return None, None, f"max_length {limit} (prompts; both completions sampled to max_new_tokens)"
    if method.build is not None or not getattr(script, "dataset_mixture", None) or method_name == "kto":
        return None, None, f"max_length {limit} (the method's rows are not the recipe's pairs as they are)"
    try:
        dataset = _tokenized(method, script, config)
    except Exception as e:  # a Hub dataset offline, a tokenizer that cannot be loaded: plan the limit
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        logger.info("planning at max_length: the training rows could not be read (%s)", reason)
        return None, None, f"max_length {limit} (the training rows could not be read here: {reason})"
    rows = dataset.to_list()
    sizes = [_sizes(row) for row in rows]
    first = max(range(len(rows)), key=lambda i: sizes[i][0])
    rest = sorted((i for i in range(len(rows)) if i != first), key=lambda i: sizes[i][1], reverse=True)
    chosen = [first, *rest[: batch - 1]]
    while len(chosen) < batch:  # fewer rows than a batch: the loader repeats none, but the plan needs B rows
        chosen.append(first)
    longest = sizes[first][0]
    return (
        [rows[i] for i in chosen],
        longest,
        (
            f"the heaviest batch of the training rows: their longest sequence, {longest} tokens, and the {batch - 1} "
            f"rows with the most tokens (max_length {limit})"
        ),
    )


def _sizes(row: dict) -> tuple[int, int]:
    """(the row's longest sequence, its tokens over all its sequences) in tokens."""
    completions = [k[: -len("_ids")] for k in row if k.endswith("_ids") and not k.endswith("prompt_ids")]
    seqs = [len(row.get(f"{c}_prompt_ids", row["prompt_ids"])) + len(row[f"{c}_ids"]) for c in completions]
    return max(seqs), sum(seqs)


def _tokenized(method, script, config):
    from alignment.data import load_preference_data
    from alignment.data.tokenize import tokenize_preference_dataset
    from alignment.models import load_tokenizer

    common = {"seed": config.seed, "drop_invalid": script.drop_invalid_rows, "completions": method.trainer.completions}
    train = load_preference_data(script.dataset_mixture, script.dataset_split, script.test_split_size, **common)
    if script.test_split_size:  # as training splits it (alignment.run.load_datasets)
        train = train["train"]
    tokenizer = load_tokenizer(script.tokenizer_name_or_path or script.model_name_or_path, config.trust_remote_code)
    if config.pad_token and tokenizer.pad_token is None:
        tokenizer.pad_token = config.pad_token
    dataset, _ = tokenize_preference_dataset(
        train, tokenizer, config.max_length, config.truncation_mode, config.chat_template, config.dataset_num_proc,
        "train", config.max_prompt_length, config.max_completion_length, rule=method.trainer.tokenize_rule(config),
    )  # fmt: skip
    keep = [c for c in dataset.column_names if c.endswith("_ids")]
    return dataset.select_columns(keep)
