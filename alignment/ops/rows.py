"""The per-row state of the fused op's tiles: running statistics (RowStats), upstream gradients (RowGrads),
and StableMax's s(x). Shared by the torch tiles (alignment.ops.tiles) and the Triton ones
(alignment.ops.triton), which both fold tiles into these rows."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def stablemax(x: torch.Tensor) -> torch.Tensor:
    """s(x) = x + 1 for x >= 0, 1 / (1 - x) for x < 0 (StableMax, arXiv 2501.04697): positive, increasing,
    linear growth (no overflow, no max shift needed)."""
    return torch.where(x >= 0, x + 1, 1 / (1 - x.clamp(max=0)))


@dataclass
class RowStats:
    """Per-row running statistics over vocabulary slices (all [n])."""

    m: torch.Tensor  # running max of z
    s: torch.Tensor  # sum exp(z - m)
    zy: torch.Tensor  # target logit (0 until the target's slice is seen)
    sz: torch.Tensor | None = None  # sum exp(z - m) * z            (entropy)
    mr: torch.Tensor | None = None  # running max of z_ref           (kl_ref)
    sr: torch.Tensor | None = None  # sum exp(z_ref - mr)
    szr: torch.Tensor | None = None  # sum exp(z_ref - mr) * z_ref
    szrz: torch.Tensor | None = None  # sum exp(z_ref - mr) * z
    stable: bool = False  # StableMax: s = sum s(z) (no shift: m is only the running max), zy = log s(z_y)
    triton: bool = False  # fold tiles with the Triton kernel (alignment.ops.triton)

    @classmethod
    def empty(cls, n: int, dtype, device, entropy: bool, kl: bool, stable: bool = False,
              triton: bool = False) -> RowStats:  # fmt: skip
        if stable and (entropy or kl):
            raise NotImplementedError("entropy and kl_ref under the StableMax normalizer are not implemented yet")

        def zeros():
            return torch.zeros(n, dtype=dtype, device=device)

        def ninf():
            return torch.full((n,), float("-inf"), dtype=dtype, device=device)

        return cls(
            m=ninf(),
            s=zeros(),
            zy=zeros(),
            sz=zeros() if entropy else None,
            mr=ninf() if kl else None,
            sr=zeros() if kl else None,
            szr=zeros() if kl else None,
            szrz=zeros() if kl else None,
            stable=stable,
            triton=triton,
        )

    # ----- derived outputs ----------------------------------------------------------------------------
    def lse(self) -> torch.Tensor:
        """log of the normalizer: logsumexp(z) (softmax) or log sum s(z) (StableMax)."""
        return torch.log(self.s) if self.stable else self.m + torch.log(self.s)

    def mean_z(self) -> torch.Tensor:
        """E_p[z] (needs sz)."""
        return self.sz / self.s

    def entropy(self) -> torch.Tensor:
        return self.lse() - self.mean_z()

    def lse_ref(self) -> torch.Tensor:
        return self.mr + torch.log(self.sr)

    def kl_ref(self) -> torch.Tensor:
        """sum q (z_ref - lse_ref) - sum q (z - lse) = E_q[z_ref] - lse_ref - E_q[z] + lse."""
        return (self.szr - self.szrz) / self.sr - self.lse_ref() + self.lse()

    def collapsed(self) -> torch.Tensor:
        """The largest probability rounds to 1 in float32 (StableMax: s(max z) / sum s(z) == 1)."""
        if self.stable:
            return (stablemax(self.m) / self.s).float() == 1.0
        return self.s.float() == 1.0


@dataclass
class RowGrads:
    """Upstream gradients per row ([n] or None) of the four differentiable outputs."""

    logp: torch.Tensor | None = None
    lse: torch.Tensor | None = None
    entropy: torch.Tensor | None = None
    kl: torch.Tensor | None = None

    def any(self) -> bool:
        return any(g is not None for g in (self.logp, self.lse, self.entropy, self.kl))
