"""Non-finite values never reach the weights: a training step whose loss or gradient holds a NaN or an infinity
stops the run before the optimizer step (one line naming the step and the last good checkpoint), and a model
with non-finite weights is never saved or pushed.

The loss of every micro-batch is checked where the Trainer already reads it (it filters NaN losses out of its
logs, which hid a diverged run until now); the gradients once per optimizer step, after clipping and before the
optimizer (``on_pre_optimizer_step``), with one fused norm over all of them - except under fp16 mixed precision,
whose loss scaler skips a step with infinite gradients by design. Under several processes the verdict is shared
(all-reduced), so every process stops at the same step.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

from alignment.checkpoints import latest_valid_checkpoint
from alignment.errors import NonFiniteError


def grads_finite(model: torch.nn.Module) -> torch.Tensor:
    """A 0-d bool tensor: every gradient is finite (True when there are none, as under DeepSpeed, which keeps
    them in its own buffers)."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.tensor(True)
    norms = torch._foreach_norm(grads)
    return torch.isfinite(torch.stack([n.float() for n in norms]).sum())


def nonfinite_weights(model: torch.nn.Module) -> list[str]:
    """The names of the parameters holding a NaN or an infinity (a ZeRO-3 process looks at its own partition)."""
    bad = []
    with torch.no_grad():
        for name, param in model.named_parameters():
            data = getattr(param, "ds_tensor", param)
            if data.numel() and not bool(torch.isfinite(data).all()):
                bad.append(name)
    return bad


def refuse_nonfinite_weights(model: torch.nn.Module, what: str) -> None:
    bad = nonfinite_weights(model)
    if bad:
        raise NonFiniteError(f"{what}: {len(bad)} parameters hold NaN or infinity (first: {bad[0]}); not saved")


class NonFiniteGuard(TrainerCallback):
    """Stops training before an optimizer step that would write a non-finite value into the weights."""

    def __init__(self, trainer):
        self.trainer = trainer
        self.loss_ok = True

    def record_loss(self, loss: torch.Tensor) -> None:
        self.loss_ok = self.loss_ok and bool(torch.isfinite(loss.detach()).all())

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        device = self.trainer.accelerator.device
        ok = torch.tensor(self.loss_ok, device=device)
        if not args.fp16:  # under fp16 an infinite gradient is the loss scaler's business: it skips that step
            ok = ok & grads_finite(self.trainer.model_wrapped).to(device)
        self.loss_ok = True
        if args.world_size > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                flag = (~ok).float().reshape(1)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                ok = flag[0] == 0
        if bool(ok):
            return
        last = latest_valid_checkpoint(args.output_dir)
        where = f"the last good checkpoint is {last}" if last else "no checkpoint was saved before it"
        raise NonFiniteError(
            f"step {state.global_step + 1}: the loss or a gradient is NaN or infinite; training stopped before the "
            f"optimizer step, so the weights stayed finite; {where} (check the data's precomputed *_logps "
            "columns, lower the learning rate, or try z_loss)"
        )
