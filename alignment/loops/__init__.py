"""Outer loops that repeat generate -> judge -> train: on-policy pair building (here now); INPO self-play
and iterative DPO build on the same pieces (alignment.generation, the tasks' oracles)."""
