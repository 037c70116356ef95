"""Work shared by the processes of ``accelerate launch`` (the self-play loop, the Bradley-Terry fit): every
process samples and judges its own share of the prompts, the main process gathers them and writes the stage's
files, and all processes train together.

With one process every helper is the identity (no collective call is made).
"""

from __future__ import annotations

from collections.abc import Sequence


class Processes:
    """Rank, world size and the few collective steps the loop needs (through accelerate's PartialState)."""

    def __init__(self, state=None):
        if state is None:
            from accelerate import PartialState

            state = PartialState()
        self.state = state
        self.rank, self.world = state.process_index, state.num_processes
        self.is_main = state.is_main_process

    @classmethod
    def single(cls) -> Processes:
        """One process, no collective call (outside ``accelerate launch``, or to opt out)."""
        from types import SimpleNamespace

        return cls(SimpleNamespace(process_index=0, num_processes=1, is_main_process=True))

    def shard(self, items: Sequence) -> list:
        """This process's items: every world-th one, starting at its rank."""
        return list(items[self.rank :: self.world])

    def gather(self, shard: list) -> list:
        """The shards of all processes put back in the original order (the inverse of :meth:`shard`)."""
        if self.world == 1:
            return list(shard)
        from accelerate.utils import gather_object

        tagged = gather_object([(self.rank + i * self.world, x) for i, x in enumerate(shard)])
        return [x for _, x in sorted(tagged, key=lambda pair: pair[0])]

    def seed(self, base: int) -> int:
        """This process's seed from a run's seed: different per process, unchanged with one process."""
        return base + 100_003 * self.rank

    def barrier(self) -> None:
        if self.world > 1:
            self.state.wait_for_everyone()
