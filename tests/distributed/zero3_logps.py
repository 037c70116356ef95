"""Per-token log-probabilities and one SGD step through the fused op, single process or under ZeRO-3.

    python tests/distributed/zero3_logps.py OUT.pt                          # single process
    accelerate launch --config_file accelerate_configs/deepspeed_zero3.yaml tests/distributed/zero3_logps.py OUT.pt

Step 1 trains on -sum(token logps) (general path), step 2 on a sigmoid DPO loss (pair-fused path), each
process on its share of the rows. Rank 0 writes {"logps", "pair_loss", "params" (full tensors after both
steps), "before", "partitioned" (whether the LM head was really partitioned)}.
"""

import os
import sys

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs

from alignment.heads import causal_pair_loss, causal_token_logps
from alignment.losses import dpo_loss
from tests.helpers import full_parameters, tiny_llama


def main(out_path: str) -> None:
    # On CPU, DeepSpeed needs the gloo backend named explicitly, or accelerate sees a single process
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    handlers = [InitProcessGroupKwargs(backend="gloo")] if launched and not torch.cuda.is_available() else []
    accelerator = Accelerator(kwargs_handlers=handlers)
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:  # no dataloader is prepared: tell DeepSpeed the micro-batch size
        plugin.deepspeed_config["train_micro_batch_size_per_gpu"] = 4 // accelerator.num_processes
        plugin.deepspeed_config["gradient_clipping"] = 0.0  # the single-process run does not clip
    model = tiny_llama(97)
    gen = torch.Generator().manual_seed(1)
    input_ids = torch.randint(0, 97, (4, 10), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    completion_mask = attention_mask.clone()
    completion_mask[:, :3] = 0
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model, optimizer = accelerator.prepare(model, optimizer)
    head = model.module.lm_head if hasattr(model, "module") else model.lm_head
    partitioned = hasattr(head.weight, "ds_id") and head.weight.numel() < 97 * 32
    # each process takes its share of the rows; gradients are averaged over processes, hence the factor
    rank, world = accelerator.process_index, accelerator.num_processes
    rows = slice(rank * 4 // world, (rank + 1) * 4 // world)
    # step 1: the general path (token log-probabilities, an SFT-like loss)
    out = causal_token_logps(model, input_ids[rows], attention_mask[rows], completion_mask[rows])
    loss = -out.logps.sum() / completion_mask[:, 1:].sum() * world
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    logps = accelerator.gather(out.logps.detach())
    # step 2: the pair-fused path (sigmoid DPO); pairs (0, 2) and (1, 3) of the batch, one pair per process
    pair = [rank, rank + 2] if world == 2 else [0, 1, 2, 3]
    n_pairs = 2 // world

    def loss_fn(chunk):
        losses, metrics = dpo_loss(
            chunk.chosen_logps,
            chunk.rejected_logps,
            torch.zeros_like(chunk.chosen_logps),
            torch.zeros_like(chunk.rejected_logps),
            beta=0.5,
        )
        return losses.sum() / n_pairs, metrics

    fused = causal_pair_loss(model, input_ids[pair], attention_mask[pair], completion_mask[pair], loss_fn)
    accelerator.backward(fused.loss)
    optimizer.step()
    pair_losses = accelerator.gather(fused.loss.detach().reshape(1))
    params = full_parameters(model.module if hasattr(model, "module") else model)
    if accelerator.is_main_process:
        torch.save(
            {
                "logps": logps,
                "pair_loss": pair_losses.mean(),
                "params": params,
                "before": before,
                "partitioned": partitioned,
            },
            out_path,
        )
    accelerator.wait_for_everyone()
    # the results are written: leave without the interpreter's teardown, where gloo's / DeepSpeed's threads
    # sometimes abort a rank ("terminate called without an active exception") after the work is done
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
