"""Training diagnostics (README, "Diagnostics and reports"): gradient entanglement, likelihood displacement, softmax
collapse, the token-level gradient view, and ``alignment report``."""

from alignment.diagnostics.callback import DiagnosticsCallback
from alignment.diagnostics.collapse import collapse_stats
from alignment.diagnostics.displacement import displacement_stats
from alignment.diagnostics.entanglement import entanglement_stats, first_order_change, grad_dot, sign_agreement
from alignment.diagnostics.probes import probe_pair, trainable_parameters

__all__ = [
    "DiagnosticsCallback",
    "collapse_stats",
    "displacement_stats",
    "entanglement_stats",
    "first_order_change",
    "grad_dot",
    "probe_pair",
    "sign_agreement",
    "trainable_parameters",
]
