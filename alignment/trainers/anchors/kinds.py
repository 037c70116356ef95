"""The kinds of anchor, their log-probabilities, and building a method's anchors from what was passed (the
package docstring lists the kinds)."""

from __future__ import annotations

import copy
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from alignment.heads import ReferenceStates
from alignment.models import load_model, unwrap
from alignment.trainers.anchors.fingerprints import model_fingerprint, tensors_fingerprint
from alignment.trainers.anchors.peft import _detached, adapter_disabled, adapter_snapshot, adapter_swapped, is_peft

KINDS = ("model", "copy", "adapter", "adapter state", "columns")


@dataclass
class AnchorLogps:
    """An anchor's log-probabilities for B pairs: sums chosen [B], rejected [B]; per-token [2B, T-1] (the
    collator's [chosen; rejected] rows, 0 off the completion) when asked for."""

    chosen: torch.Tensor
    rejected: torch.Tensor
    tokens: torch.Tensor | None = None
    states: ReferenceStates | None = None  # hidden states and head, for methods that need them (SparsePO)


@dataclass
class Anchor:
    """One named anchor (see the module docstring for the kinds)."""

    name: str
    kind: str
    model: nn.Module | None = None
    adapter_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    precomputed: bool = False
    freed: bool = False  # a ``copy`` released after its values were precomputed
    label: str | None = None  # what the banner says beside the kind (the starting adapter of a PeftModel)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"anchor {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")

    @property
    def columns(self) -> tuple[str, str]:
        return f"{self.name}_chosen_logps", f"{self.name}_rejected_logps"

    @property
    def token_columns(self) -> tuple[str, str]:
        return f"{self.name}_chosen_token_logps", f"{self.name}_rejected_token_logps"

    def describe(self) -> str:
        kind = f"{self.kind}: {self.label}" if self.label else self.kind
        return f"precomputed ({kind})" if self.precomputed else kind

    def policy(self, trainer_model: nn.Module):
        """A context giving the module whose forward is this anchor (the trainer's model for the adapter
        kinds, with the adapters off or the saved state swapped in)."""
        if self.kind == "adapter":
            return _yielding(trainer_model, adapter_disabled(trainer_model))
        if self.kind == "adapter state":
            return _yielding(trainer_model, adapter_swapped(trainer_model, self.adapter_state))
        return _yielding(self.model, nullcontext())

    def fingerprint(self, trainer_model: nn.Module) -> str:
        model = self.model if self.model is not None else trainer_model
        parts = [model_fingerprint(model), self.kind]
        if self.adapter_state is not None:
            parts.append(tensors_fingerprint(self.adapter_state))
        return "-".join(parts)


@contextmanager
def _yielding(module, context):
    with context:
        yield module


def build_anchors(
    names: tuple[str, ...],
    model: nn.Module,
    sources: dict,
    load_kwargs: dict,
    columns: set[str],
    starting_adapter: bool = False,
) -> dict[str, Anchor]:
    """The anchors a method declares, from explicit ``sources`` (a model, a path, an adapter state dict),
    the dataset's precomputed ``columns``, or the defaults (module docstring). ``starting_adapter``: the model
    came as a PeftModel whose adapter may be trained already (an SFT LoRA): the reference is a frozen copy of
    that adapter, as trl 1.16 makes its ``ref`` adapter, not the base model."""
    unknown = set(sources) - set(names)
    if unknown:
        raise ValueError(f"anchors {sorted(unknown)} are not used by this method (it uses {list(names) or 'none'})")
    anchors, shared_copy = {}, None
    for name in names:
        source = sources.get(name)
        if source is None and {f"{name}_chosen_logps", f"{name}_rejected_logps"} <= columns:
            anchors[name] = Anchor(name, "columns", precomputed=True)
        elif isinstance(source, dict):
            anchors[name] = Anchor(name, "adapter state", adapter_state=_detached(source))
        elif source is not None:
            anchors[name] = Anchor(name, "model", model=frozen_copy(load_model(source, **load_kwargs)))
        elif is_peft(model):
            if name == "ref" and starting_adapter:
                anchors[name] = Anchor(name, "adapter state", adapter_state=adapter_snapshot(model),
                                       label="a frozen copy of the model's starting adapter")  # fmt: skip
            elif name == "ref":
                anchors[name] = Anchor(name, "adapter")
            else:
                anchors[name] = Anchor(name, "adapter state", adapter_state=adapter_snapshot(model))
        else:
            shared_copy = shared_copy if shared_copy is not None else frozen_copy(model)
            anchors[name] = Anchor(name, "copy", model=shared_copy)
    return anchors


def frozen_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(unwrap(model))
    ref.eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref
