"""SparsePO's per-token masks of one pair, as JSON and as a PNG strip (tokens coloured by their mask).

The masks are computed from the REFERENCE model's per-layer hidden states (the SparsePO run's starting
model, from ``alignment_run.json``, or ``--reference``) with the run's mask network
(``token_mask.safetensors``) or its parameter-free mask type.

    alignment masks RUN_DIR DATA --row N [-o masks.json]      (N is 0-based; a .png twin is written)
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from alignment.diagnostics.probes import DiagnosticsError


def run_mask_settings(run_dir: Path) -> dict:
    """mask_type, mask_sharing and the starting model of a SparsePO run directory."""
    settings = {"mask_type": None, "mask_sharing": "common", "mask_inputs": "prefix", "mask_embeddings": False}
    settings["base_model"] = None
    summary = run_dir / "alignment_run.json"
    if summary.exists():
        data = json.loads(summary.read_text())
        if data.get("method") not in (None, "sparsepo"):
            raise DiagnosticsError(f"{run_dir}: a {data['method']} run has no token masks (SparsePO runs have)")
        hyper = data.get("hyperparameters", {})
        settings.update(
            mask_type=hyper.get("mask_type"), mask_sharing=hyper.get("mask_sharing", "common"),
            mask_inputs=hyper.get("mask_inputs", "prefix"), mask_embeddings=hyper.get("mask_embeddings", False),
            base_model=data.get("base_model"),
        )  # fmt: skip
    if settings["mask_type"] is None:
        from alignment.learners.token_mask import WEIGHTS_NAME

        if not (run_dir / WEIGHTS_NAME).exists():
            raise DiagnosticsError(f"{run_dir}: neither alignment_run.json nor {WEIGHTS_NAME}: not a SparsePO run")
        settings["mask_type"] = "learned"
    return settings


def pair_masks(
    reference,
    batch: dict,
    kind: str,
    network=None,
    independent: bool = False,
    tokenizer=None,
    inputs: str = "prefix",
    embeddings: bool = False,
) -> dict:
    """{"chosen": [{"token", "mask_reward", "mask_kl"}, ...], "rejected": [...]} for a one-pair batch."""
    from alignment.heads import reference_states
    from alignment.learners.token_mask import compute_masks, mask_layers

    reference.eval()
    layers_needed = kind in ("learned", "activation")
    states = reference_states(
        reference, batch["input_ids"], batch["attention_mask"], batch["completion_mask"], layers_needed
    )
    valid = batch["completion_mask"][:, 1:].bool()
    with torch.no_grad():
        if network is not None:
            network.eval()
        layers = mask_layers(states.layers, inputs, embeddings)
        reward, kl = compute_masks(kind, layers, valid, network, independent)
    ids = batch["input_ids"][:, 1:]
    out = {}
    for row, side in enumerate(("chosen", "rejected")):
        positions = valid[row].nonzero().flatten().tolist()
        out[side] = [
            {
                "token": tokenizer.decode([int(ids[row, t])]) if tokenizer is not None else str(int(ids[row, t])),
                "mask_reward": float(reward[row, t]),
                "mask_kl": float(kl[row, t]),
            }
            for t in positions
        ]
    return out


def strip(masks: dict, path: str | Path, title: str = "") -> Path:
    """A PNG with one row of tokens per side (and per mask), each token's box coloured by its mask value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{side} / {key[5:]}", side, key) for side in ("chosen", "rejected") for key in ("mask_reward", "mask_kl")]
    top = max(
        [t[key] for side in ("chosen", "rejected") for t in masks[side] for key in ("mask_reward", "mask_kl")] or [1]
    )
    width = max(len(masks["chosen"]), len(masks["rejected"]), 1)
    fig, axes = plt.subplots(len(rows), 1, figsize=(max(6, 0.75 * width + 1.5), 0.8 * len(rows) + 1.0), dpi=110)
    cmap = plt.get_cmap("viridis")
    for ax, (label, side, key) in zip(axes, rows):
        tokens = masks[side]
        for j, token in enumerate(tokens):
            value = token[key] / top if top > 0 else 0.0
            ax.add_patch(plt.Rectangle((j, 0), 0.95, 1, color=cmap(value)))
            ax.text(j + 0.47, 0.5, token["token"].strip() or repr(token["token"]), ha="center", va="center",
                    fontsize=7, color="w" if value < 0.6 else "k")  # fmt: skip
        ax.set_xlim(0, width)
        ax.set_ylim(0, 1)
        ax.set_yticks([])
        ax.set_xticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    mappable = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, top))
    fig.colorbar(mappable, ax=axes, fraction=0.03, label="mask")
    fig.suptitle(title or "SparsePO token masks", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def masks_command(run_dir: str, data: str, row: int, output: str, reference: str | None, max_length: int) -> dict:
    """``alignment masks``: the masks of row ``row`` of ``data`` under a SparsePO run; JSON and PNG."""
    from alignment.data import PreferenceCollator, load_preference_dataset, tokenize_preference_dataset
    from alignment.data.errors import DataError
    from alignment.learners.token_mask import TokenMaskNetwork
    from alignment.models import load_model, load_tokenizer

    folder = Path(run_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{run_dir}: no such run directory")
    settings = run_mask_settings(folder)
    reference = reference or settings["base_model"]
    if reference is None:
        raise DiagnosticsError(f"{run_dir}: the run does not name its starting model; pass --reference MODEL")
    tokenizer = load_tokenizer(run_dir)
    dataset, _ = load_preference_dataset(data)
    if not 0 <= row < len(dataset):
        raise DataError(f"{data}: --row {row} is out of range (the dataset has {len(dataset)} rows)")
    tokens, _ = tokenize_preference_dataset(dataset.select([row]), tokenizer, max_length, name=data)
    batch = PreferenceCollator(tokenizer.pad_token_id)([tokens[0]])
    network = TokenMaskNetwork.load(folder) if settings["mask_type"] == "learned" else None
    independent = settings["mask_sharing"] == "independent"
    masks = pair_masks(
        load_model(reference),
        batch,
        settings["mask_type"],
        network,
        independent,
        tokenizer,
        settings["mask_inputs"],
        settings["mask_embeddings"],
    )
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(masks, indent=1))
    image = strip(
        masks, out.with_suffix(".png"), f"{folder.name}: {Path(data).name}, row {row} ({settings['mask_type']})"
    )
    return {"json": str(out), "png": str(image), "tokens": [len(masks["chosen"]), len(masks["rejected"])]}
