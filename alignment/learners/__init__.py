"""Small nn.Modules a method trains beside the policy (SparsePO's token-mask network)."""

from alignment.learners.token_mask import MASK_TYPES, SHARINGS, TokenMaskNetwork, activation_mask, fixed_mask

__all__ = ["MASK_TYPES", "SHARINGS", "TokenMaskNetwork", "activation_mask", "fixed_mask"]
