"""SparsePO's token masks (Christopoulou et al. 2024, arXiv 2410.05102; specs: the authors' public code).

All masks are computed from the REFERENCE model's hidden states of every layer (embeddings excluded), taken
from the same no-grad reference pass that gives the reference log-probabilities. Shapes: ``layers`` is a
sequence of L tensors [N, T, H]; ``valid`` [N, T] bool (the scored tokens); every mask is [N, T].

Which position's state a token's mask reads (``mask_inputs``): "prefix", the authors' choice, is the state
that PREDICTS the token (it has not read it: the mask can only use the context); "token" is the state at
the token itself (it has read it, in context). The second lets a mask single out particular words; the first
cannot when, as in our sentiment task, where such words fall is not predictable from the prefix
(:func:`mask_layers` slices either way). The spec excludes the embeddings; ``embeddings=True`` adds them,
for small models whose layer outputs do not expose which word a token is (the quickstart's 4-layer model:
a linear probe on its layer outputs cannot tell the sentiment words from the neutral ones, on its
embeddings it can).

- learned (:class:`TokenMaskNetwork`, the paper's "SparsePO"): one shared LayerNorm(H), then per layer
  Linear(H, 1) -> ReLU -> Dropout, concatenated to [N, T, L], then Linear(L, 1, bias=False) -> ReLU ->
  Dropout. Masks are >= 0 with exact zeros (the ReLU is the sparsity mechanism) and unbounded above.
  ``sharing="common"``: one network for the reward and the KL mask; ``"independent"``: two. Departure: the
  per-layer biases start at 1 and the mix near a mean of the layers, so that training starts from masks
  near 1 (TDPO) instead of PyTorch's default initialisation.
- activation (:func:`activation_mask`, the authors' "MaPO", parameter-free, any causal LM): mean over the
  hidden dimension -> z-normalize over the valid tokens of each sequence -> min-max rescale to [0, 1] per
  sequence -> average over layers -> detach. A sequence with one valid token or no spread gets 1 (the
  original computes these statistics in float16 and can produce NaN or inf; ours are float32 and guarded).
- constant (all 1: DPO/TDPO baselines) and random (uniform in [0, 1), an ablation).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

MASK_TYPES = ("learned", "activation", "constant", "random")
MASK_INPUTS = ("prefix", "token")
SHARINGS = ("common", "independent")
WEIGHTS_NAME = "token_mask.safetensors"
CONFIG_NAME = "token_mask.json"


class _MaskHead(nn.Module):
    """One learned mask: per-layer scores, then a non-negative mix of the layers."""

    def __init__(self, n_layers: int, hidden: int, dropout: float):
        super().__init__()
        self.layer_weight = nn.Parameter(torch.empty(n_layers, hidden))
        self.layer_bias = nn.Parameter(torch.zeros(n_layers))
        self.mix = nn.Linear(n_layers, 1, bias=False)
        self.dropout = nn.Dropout(dropout)
        nn.init.normal_(self.layer_weight, std=hidden**-0.5)
        nn.init.uniform_(self.mix.weight, 0.5 / n_layers, 1.5 / n_layers)  # starts near a mean of the layers

    def forward(self, normed) -> torch.Tensor:
        """L normalized layer states [N, T, H] -> mask [N, T]: Linear(H, 1) per layer, ReLU, Dropout, then
        Linear(L, 1), ReLU, Dropout. Layer by layer: no [N, T, L, H] copy is made."""
        scores = torch.stack([h @ w + b for h, w, b in zip(normed, self.layer_weight, self.layer_bias)], dim=-1)
        scores = self.dropout(torch.relu(scores))
        return self.dropout(torch.relu(self.mix(scores))).squeeze(-1)


class TokenMaskNetwork(nn.Module):
    """The learned reward and KL masks from the reference's per-layer hidden states (module docstring)."""

    def __init__(self, n_layers: int, hidden: int, sharing: str = "common", dropout: float = 0.01):
        super().__init__()
        if sharing not in SHARINGS:
            raise ValueError(f"mask_sharing must be one of {SHARINGS}, got {sharing!r}")
        self.config = {"n_layers": n_layers, "hidden": hidden, "sharing": sharing, "dropout": dropout}
        self.norm = nn.LayerNorm(hidden)
        self.reward = _MaskHead(n_layers, hidden, dropout)
        self.kl = _MaskHead(n_layers, hidden, dropout) if sharing == "independent" else None
        for head in filter(None, (self.reward, self.kl)):  # start with most tokens on (bias up): masks near 1
            nn.init.constant_(head.layer_bias, 1.0)
        # log of the multiplier on the L1 terms that holds a sparsity target (SparsePOConfig.mask_sparsity_target;
        # 0: the configured lambdas as they are); saved with the masks, so a resumed run continues from it
        self.register_buffer("l1_log_scale", torch.zeros(()))

    def forward(self, layers) -> tuple[torch.Tensor, torch.Tensor]:
        """(reward mask, KL mask), each [N, T]; the same tensor twice when the network is common."""
        dtype = self.norm.weight.dtype
        normed = [self.norm(h.detach().to(dtype)) for h in layers]  # no gradient to the reference
        reward = self.reward(normed)
        return reward, (self.kl(normed) if self.kl is not None else reward)

    def save(self, folder: str | Path, state: dict[str, torch.Tensor] | None = None) -> Path:
        """``token_mask.safetensors`` and ``token_mask.json`` in ``folder`` (beside the model); ``state``
        replaces this module's own state dict (a gathered one under ZeRO-3)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in (state or self.state_dict()).items()}
        save_file(state, str(folder / WEIGHTS_NAME))
        (folder / CONFIG_NAME).write_text(json.dumps(self.config, indent=1))
        return folder / WEIGHTS_NAME

    @classmethod
    def load(cls, folder: str | Path) -> TokenMaskNetwork:
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / WEIGHTS_NAME).exists():
            raise FileNotFoundError(f"{folder}: no {WEIGHTS_NAME} (a learned SparsePO mask) in this folder")
        net = cls(**json.loads((folder / CONFIG_NAME).read_text()))
        state = load_file(str(folder / WEIGHTS_NAME))
        state.setdefault("l1_log_scale", torch.zeros(()))  # saved before the sparsity target existed
        net.load_state_dict(state)
        return net


def activation_mask(layers, valid: torch.Tensor) -> torch.Tensor:
    """The parameter-free activation mask [N, T] in [0, 1] (module docstring), 0 off the valid tokens."""
    valid_f = valid.to(torch.float32)
    count = valid_f.sum(dim=1, keepdim=True)
    out = torch.zeros_like(valid_f)
    for h in layers:
        x = h.detach().to(torch.float32).mean(dim=-1)  # [N, T]
        mean = (x * valid_f).sum(dim=1, keepdim=True) / count.clamp(min=1)
        var = (((x - mean) * valid_f) ** 2).sum(dim=1, keepdim=True) / count.clamp(min=1)
        z = (x - mean) / var.sqrt().clamp(min=1e-12)
        big = torch.finfo(torch.float32).max
        low = torch.where(valid, z, torch.full_like(z, big)).amin(dim=1, keepdim=True)
        high = torch.where(valid, z, torch.full_like(z, -big)).amax(dim=1, keepdim=True)
        spread = high - low
        flat = (count <= 1) | (spread <= 1e-6) | (var <= 1e-12)
        scaled = torch.where(flat, torch.ones_like(z), (z - low) / spread.clamp(min=1e-12))
        out = out + scaled
    return (out / max(len(layers), 1) * valid_f).detach()


def fixed_mask(kind: str, valid: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """The constant (1) or random (uniform [0, 1)) mask [N, T], 0 off the valid tokens."""
    if kind == "constant":
        return valid.to(torch.float32)
    if kind == "random":
        noise = torch.rand(valid.shape, generator=generator, device=valid.device if generator is None else "cpu")
        return noise.to(valid.device) * valid
    raise ValueError(f"not a parameter-free mask type: {kind!r}")


def mask_layers(states, mask_inputs: str = "prefix", embeddings: bool = False):
    """The embeddings' and every layer's states [N, T, H] at every position (L + 1 tensors) -> the L states
    [N, T-1, H] each scored token's mask reads, aligned with the shifted targets: the predicting positions
    ("prefix") or the tokens' own ("token"); with ``embeddings`` the token embeddings too (L + 1)."""
    if states is None:
        return None
    if mask_inputs not in MASK_INPUTS:
        raise ValueError(f"mask_inputs must be one of {MASK_INPUTS}, got {mask_inputs!r}")
    chosen = states if embeddings else states[1:]
    return tuple(h[:, :-1] if mask_inputs == "prefix" else h[:, 1:] for h in chosen)


def compute_masks(
    kind: str, layers, valid: torch.Tensor, network: TokenMaskNetwork | None = None, independent: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The (reward, KL) masks [N, T] of one batch for a ``mask_type`` (0 off the valid tokens); ``layers``
    the reference's per-layer hidden states (learned and activation masks), ``network`` the learned one."""
    if kind == "learned":
        if network is None:
            raise ValueError("a learned mask needs its network")
        reward, kl = network(layers)
        return reward * valid, kl * valid
    if kind == "activation":
        mask = activation_mask(layers, valid)
        return mask, mask
    if kind == "random" and independent:
        return fixed_mask(kind, valid), fixed_mask(kind, valid)
    mask = fixed_mask(kind, valid)
    return mask, mask
