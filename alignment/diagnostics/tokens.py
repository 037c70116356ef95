"""The token-level view of gradient entanglement: cosines between per-token gradients of one pair.

For a pair (x, y_w, y_l), g_i = grad_theta log pi(y_w,i | x, y_w,<i) for each chosen token i and
h_j = grad_theta log pi(y_l,j | x, y_l,<j) for each rejected token j. The matrix C[i, j] = cos(g_i, h_j) shows
which tokens tie the two responses together: in arithmetic pairs that differ in one digit, the shared digits
and the end-of-sequence token carry nearly identical gradients (cosine near 1), the differing digit does not.

Cost: one forward and one backward per response token; the chosen tokens' gradients are kept ([T_w, D]
floats for D probed parameters), so narrow D with ``params`` (a regex on parameter names) for large models.

    alignment token-entanglement MODEL DATA --row 0 [--params REGEX] [-o tokens.png]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from alignment.diagnostics.probes import DiagnosticsError, pair_logps, trainable_parameters

MAX_BYTES = 4 * 2**30


@dataclass
class TokenCosines:
    """cosine [T_w, T_l]; the decoded chosen and rejected tokens; their log-probabilities."""

    cosine: torch.Tensor
    chosen_tokens: list[str]
    rejected_tokens: list[str]
    chosen_logps: list[float]
    rejected_logps: list[float]


def _flat_grad(value: torch.Tensor, params, retain: bool) -> torch.Tensor:
    grads = torch.autograd.grad(value, params, retain_graph=retain, allow_unused=True)
    parts = [(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)]
    return torch.cat([x.to(torch.promote_types(x.dtype, torch.float32)) for x in parts])


def token_cosines(model, batch: dict, tokenizer=None, params_pattern: str | None = None) -> TokenCosines:
    """Per-token gradient cosines of a one-pair batch ([chosen; rejected] rows, the collator's layout)."""
    params = [p for _, p in trainable_parameters(model, params_pattern)]
    size = sum(p.numel() for p in params)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logps, mask = pair_logps(model, batch)
            positions = [mask[r].nonzero().flatten().tolist() for r in range(2)]
            if len(positions[0]) * size * 4 > MAX_BYTES:
                raise DiagnosticsError(
                    f"{len(positions[0])} chosen tokens x {size:,} parameters do not fit in memory; "
                    "narrow the parameters with --params (a regex on their names, e.g. 'lm_head|layers\\.31\\.')"
                )
            last = (1, positions[1][-1]) if positions[1] else None
            chosen = torch.stack([_flat_grad(logps[0, t], params, True) for t in positions[0]])
            rejected = torch.stack([_flat_grad(logps[1, t], params, (1, t) != last) for t in positions[1]])
    finally:
        model.train(was_training)
    unit = torch.nn.functional.normalize
    cosine = unit(chosen, dim=1) @ unit(rejected, dim=1).T
    ids = batch["input_ids"][:, 1:]

    def words(row: int) -> list[str]:
        toks = [int(ids[row, t]) for t in positions[row]]
        return [tokenizer.decode([t]) if tokenizer is not None else str(t) for t in toks]

    flat = logps.detach()
    return TokenCosines(
        cosine.cpu(),
        words(0),
        words(1),
        [float(flat[0, t]) for t in positions[0]],
        [float(flat[1, t]) for t in positions[1]],
    )


def heatmap(result: TokenCosines, path: str | Path, title: str = "") -> Path:
    """Write the cosine matrix as a PNG heatmap (chosen tokens down, rejected tokens across)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, cols = result.cosine.shape
    fig, ax = plt.subplots(figsize=(max(5.5, 1.6 + 0.6 * cols), max(4.0, 1.4 + 0.5 * rows)), dpi=110)
    image = ax.imshow(result.cosine.numpy(), cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(cols), [repr(t) for t in result.rejected_tokens], rotation=60, ha="right")
    ax.set_yticks(range(rows), [repr(t) for t in result.chosen_tokens])
    ax.set_xlabel("rejected tokens")
    ax.set_ylabel("chosen tokens")
    for i in range(rows):
        for j in range(cols):
            value = float(result.cosine[i, j])
            ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=7, color="w" if abs(value) > 0.6 else "k")
    fig.colorbar(image, ax=ax, fraction=0.046, label="cosine of per-token gradients")
    ax.set_title(title or "token-level gradient entanglement", fontsize=8, wrap=True)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def token_command(model_path: str, data: str, row: int, params: str | None, output: str, max_length: int) -> dict:
    """``alignment token-entanglement``: load the model and one row, write the heatmap and a JSON twin."""
    from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
    from alignment.data.errors import DataError
    from alignment.models import load_model, load_tokenizer

    tokenizer = load_tokenizer(model_path)
    dataset, _ = load_preference_dataset(data)
    if not 0 <= row < len(dataset):
        raise DataError(f"{data}: --row {row} is out of range (the dataset has {len(dataset)} rows)")
    model = load_model(model_path)
    tokens, _ = tokenize_preference_dataset(dataset.select([row]), tokenizer, max_length, name=data)
    batch = PreferenceCollator(tokenizer.pad_token_id)([tokens[0]])
    result = token_cosines(model, batch, tokenizer, params)
    image = heatmap(result, output, f"{Path(data).name}, row {row}")
    twin = image.with_suffix(".json")
    twin.write_text(
        json.dumps(
            {
                "model": model_path,
                "data": data,
                "row": row,
                "chosen_tokens": result.chosen_tokens,
                "rejected_tokens": result.rejected_tokens,
                "chosen_logps": result.chosen_logps,
                "rejected_logps": result.rejected_logps,
                "cosine": result.cosine.tolist(),
            },
            indent=1,
        )
    )
    return {"heatmap": str(image), "json": str(twin), "shape": list(result.cosine.shape)}
