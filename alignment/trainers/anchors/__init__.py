"""Named anchors: the frozen policies a preference loss compares against (DPO's reference ``ref``; INPO's
``ref`` and ``prev`` = pi_t).

Each anchor is one of

- ``model``: a separate frozen model (passed as ``ref_model=`` or ``anchors={"prev": model_or_path}``);
- ``copy``: a frozen copy of the starting policy (the default without PEFT; anchors that default to it
  share one copy);
- ``adapter``: the PEFT policy with its adapters disabled (the default ``ref`` under PEFT: the base model);
- ``adapter state``: the PEFT policy with saved adapter weights swapped in for the pass (the default for
  other anchors under PEFT: the starting adapter, e.g. pi_t; or ``anchors={"prev": state_dict}``);
- ``columns``: log-probabilities that come with the data: ``<name>_chosen_logps`` and
  ``<name>_rejected_logps`` (sums, [B]) and optionally ``<name>_chosen_token_logps`` /
  ``<name>_rejected_token_logps`` (one value per completion token).

With ``precompute_ref_logps`` every anchor that is not already ``columns`` is evaluated once before
training and added to the dataset as columns, through a disk cache. The cache key is a hash of the anchor's
policy (config and every parameter value, plus the swapped adapter state), the tokenized dataset's content and
every setting that can change the values (:func:`cache_settings`: tokenization, batching and packing, the op's
normalizer and options, dtypes, attention), so a stale cache is never read. With
several processes the main process computes and writes the file (atomically: temp file + rename) and the
others wait and read it; every process then holds the same columns.

Per-token values: a trainer with ``anchor_token_logps = True`` gets each anchor's per-token
log-probabilities as well as its sums (live: [2B, T-1] from the same no-grad pass; precomputed: the token
columns), passed to the loss as ``chunk.token_inputs["<name>_token_logps"]``.
"""

from alignment.trainers.anchors.cache import (
    NEUTRAL_FIELDS,
    VALUE_FIELDS,
    _cached,
    cache_key,
    cache_settings,
    precompute,
    refuse_freed,
)
from alignment.trainers.anchors.evaluation import anchor_logps, anchor_states, from_batch
from alignment.trainers.anchors.fingerprints import dataset_fingerprint, model_fingerprint, tensors_fingerprint
from alignment.trainers.anchors.kinds import KINDS, Anchor, AnchorLogps, build_anchors, frozen_copy
from alignment.trainers.anchors.peft import adapter_disabled, adapter_snapshot, adapter_swapped, is_peft, unwrap_peft

__all__ = [
    "KINDS",
    "NEUTRAL_FIELDS",
    "VALUE_FIELDS",
    "Anchor",
    "AnchorLogps",
    "_cached",
    "adapter_disabled",
    "adapter_snapshot",
    "adapter_swapped",
    "anchor_logps",
    "anchor_states",
    "build_anchors",
    "cache_key",
    "cache_settings",
    "dataset_fingerprint",
    "from_batch",
    "frozen_copy",
    "is_peft",
    "model_fingerprint",
    "precompute",
    "refuse_freed",
    "tensors_fingerprint",
    "unwrap_peft",
]  # fmt: skip
