"""DiagnosticsCallback: gradient entanglement and likelihood displacement on a fixed probe set during training.

Every ``diagnostics_steps`` optimizer steps (and at the start and the end) the main process puts the model in
eval mode and, for each of the ``diagnostics_probe_pairs`` probe pairs (the first rows of the eval split, else
of the training split), computes logp_w, logp_l (summed and per token) and <g_w, g_l>, |g_w|^2, |g_l|^2 over the
trainable parameters (see probes.py), then:

- entanglement.py's statistics per pair, the share of entangled pairs, the predicted signs of the changes of
  logp_w and logp_l, and how often the signs predicted at the previous probe matched the observed changes;
- displacement.py's changes since the first probe (the share of pairs whose chosen log-probability fell);
- with ``diagnostics_first_order``: one step after each probe, the first-order prediction <delta theta, g_w>
  of the change of logp_w (and logp_l) next to the observed change (keeps 2 x pairs gradients and one copy of
  the probed parameters in memory).

Each probe appends one JSON line to ``<output_dir>/diagnostics.jsonl`` and its summary is logged under
``diagnostics/<name>`` with the next training log (the latest probe's values, not a mean over probes).
The softmax-collapse fractions come from the kernel on every step (AlignmentTrainer.collapse_metrics), no probe.
"""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path

import torch
from transformers import TrainerCallback

from alignment.diagnostics.displacement import displacement_stats
from alignment.diagnostics.entanglement import entanglement_stats, first_order_change, sign_agreement
from alignment.diagnostics.probes import PairProbe, probe_batches, probe_pair, trainable_parameters
from alignment.io import append_line
from alignment.models import unwrap

logger = logging.getLogger("alignment")
FILE_NAME = "diagnostics.jsonl"


def _column(probes: list[PairProbe], key: str) -> torch.Tensor:
    """One field of every probe pair as a float64 tensor [k]."""
    return torch.tensor([getattr(p, key) for p in probes], dtype=torch.float64)


class DiagnosticsCallback(TrainerCallback):
    """Probe-set diagnostics for a pairwise trainer (constructed with the trainer; added by it when
    ``args.diagnostics`` is on and the engine allows per-parameter gradients).

    What it uses of the trainer, all declared by AlignmentTrainer: ``args``, ``model``, ``data_collator``,
    ``is_world_process_zero()``, ``probe_dataset()`` (the dataset whose first rows are the probe pairs) and
    ``queue_log(values)`` (adds the latest probe's summary to the next training log)."""

    def __init__(self, trainer):
        self.trainer = trainer
        args = trainer.args
        self.every = args.diagnostics_steps
        self.n_pairs = args.diagnostics_probe_pairs
        self.pattern = args.diagnostics_params
        self.first_order = args.diagnostics_first_order
        self.path = Path(args.output_dir) / FILE_NAME
        self.batches: list[dict] = []
        self.params: list[torch.nn.Parameter] = []  # the probed parameters, fixed at train begin
        self.start: tuple[torch.Tensor, torch.Tensor] | None = None  # logp_w, logp_l at the first probe
        self.last: list[PairProbe] | None = None
        self.last_stats: dict | None = None
        self.snapshot: list[torch.Tensor] | None = None
        self.last_step = -1
        self.records: list[dict] = []

    # ----- hooks ---------------------------------------------------------------------------------------
    def on_train_begin(self, args, state, control, **kwargs):
        if not self.trainer.is_world_process_zero():
            return
        dataset = self.trainer.probe_dataset()
        self.batches = probe_batches(dataset, self.trainer.data_collator, self.n_pairs, self.trainer.args.device)
        self.params = [p for _, p in trainable_parameters(self._model(), self.pattern)]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if state.global_step > 0 and self._continue(state):
            return  # resumed: the file and its step-0 baseline carry on
        self.path.write_text("")  # a new run starts a new file
        self.probe(state)

    def _continue(self, state) -> bool:
        """A resumed run: keep the records up to the checkpoint's step (a killed run may have probed past it),
        take the first probe as the baseline, probe now unless the file has this step. False: no usable file."""
        from alignment.diagnostics.runs import RunDirError, _read_lines

        step = state.global_step
        try:
            records = [r for _, r in _read_lines(self.path)] if self.path.exists() else []
        except RunDirError:
            records = []
        probes = [r for r in records if isinstance(r, dict) and r.get("kind", "probe") == "probe"]
        if not probes or probes[0].get("step") != 0:
            return False
        kept = [r for r in records if isinstance(r, dict) and r.get("step", 0) <= step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        first = probes[0]["pairs"]
        self.start = (torch.tensor(first["logp_w"]), torch.tensor(first["logp_l"]))
        self.records = kept
        self.last_step = max(r["step"] for r in kept)
        if self.last_step != step:
            self.probe(state)
        return True

    def on_step_end(self, args, state, control, **kwargs):
        if not self.batches:
            return
        if self.snapshot is not None and state.global_step == self.last_step + 1:
            self.check_first_order(state)
        if state.global_step % self.every == 0:
            self.probe(state)

    def on_train_end(self, args, state, control, **kwargs):
        if self.batches and self.last_step != state.global_step:
            self.probe(state)

    # ----- one probe -----------------------------------------------------------------------------------
    def _model(self):
        return unwrap(self.trainer.model)

    def _run(self, keep_grads: bool, with_grads: bool = True) -> list[PairProbe]:
        model = self._model()
        params = self.params if with_grads else None
        was_training = model.training
        model.eval()
        try:
            return [probe_pair(model, b, params, keep_grads) for b in self.batches]
        finally:
            model.train(was_training)

    def probe(self, state) -> dict:
        probes = self._run(keep_grads=self.first_order)
        if self.first_order:
            self.snapshot = [p.detach().clone() for p in self.params]
        stats = entanglement_stats(*(_column(probes, k) for k in ("inner", "sq_w", "sq_l")))
        logp_w, logp_l = _column(probes, "logp_w"), _column(probes, "logp_l")
        if self.start is None:
            self.start = (logp_w, logp_l)
        start_w, start_l = self.start
        summary = {
            "entangled_share": float(stats["entangled"].double().mean()),
            "chosen_down_predicted": float(stats["chosen_down"].double().mean()),
            "rejected_up_predicted": float(stats["rejected_up"].double().mean()),
            "cosine_mean": float(stats["cosine"].mean()),
            "rho_median": statistics.median(stats["rho"].tolist()),
            "grad_norm_chosen": float(stats["norm_w"].mean()),
            "grad_norm_rejected": float(stats["norm_l"].mean()),
            "logp_chosen": float(logp_w.mean()),
            "logp_rejected": float(logp_l.mean()),
            **displacement_stats(logp_w, logp_l, start_w, start_l),
        }
        if self.last is not None and self.last_stats is not None:
            observed_w = logp_w - _column(self.last, "logp_w")
            observed_l = logp_l - _column(self.last, "logp_l")
            summary["sign_agreement_chosen"] = sign_agreement(self.last_stats["predicted_dlogp_w"], observed_w)
            summary["sign_agreement_rejected"] = sign_agreement(self.last_stats["predicted_dlogp_l"], observed_l)
        pairs = {k: v.tolist() for k, v in stats.items()}
        pairs.update(
            logp_w=logp_w.tolist(),
            logp_l=logp_l.tolist(),
            tokens_w=[p.token_logps_w for p in probes],
            tokens_l=[p.token_logps_l for p in probes],
        )
        record = {"kind": "probe", "step": state.global_step, "epoch": state.epoch, "summary": summary, "pairs": pairs}
        self._emit(record)
        self.last, self.last_stats, self.last_step = probes, stats, state.global_step
        return record

    def check_first_order(self, state) -> dict:
        """Predicted <delta theta, g> against the observed change of logp_w and logp_l over the last step."""
        delta = [p.detach() - old for p, old in zip(self.params, self.snapshot)]
        now = self._run(keep_grads=False, with_grads=False)
        rows = {"predicted_dlogp_w": [], "observed_dlogp_w": [], "predicted_dlogp_l": [], "observed_dlogp_l": []}
        for before, after in zip(self.last, now):
            rows["predicted_dlogp_w"].append(float(first_order_change(delta, before.grad_w)))
            rows["predicted_dlogp_l"].append(float(first_order_change(delta, before.grad_l)))
            rows["observed_dlogp_w"].append(after.logp_w - before.logp_w)
            rows["observed_dlogp_l"].append(after.logp_l - before.logp_l)
        errors = [abs(p - o) / max(abs(o), 1e-12) for p, o in zip(rows["predicted_dlogp_w"], rows["observed_dlogp_w"])]
        summary = {"first_order_rel_error_chosen": statistics.median(errors)}
        self.snapshot = None
        for probe in self.last:
            probe.grad_w = probe.grad_l = None
        record = {"kind": "first_order", "step": state.global_step, "summary": summary, "pairs": rows}
        self._emit(record)
        return record

    def _emit(self, record: dict) -> None:
        self.records.append(record)
        append_line(self.path, json.dumps(record))
        self.trainer.queue_log({f"diagnostics/{key}": value for key, value in record["summary"].items()})
