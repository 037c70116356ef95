"""The self-play loop's console: one line per iteration (pairs, the task's metrics greedy and sampled, seconds per
stage), and the trainers' banner once per run."""

import logging

from alignment.loops.selfplay import iteration_line
from alignment.trainers import banner


def test_iteration_line():
    row = {"iteration": 3, "pairs": 132, "greedy": {"tv_to_uniform": 0.6667, "exploitability": 0.5, "n": 1000.0},
           "sampled": {"accuracy": 0.546, "p_rock": 0.3}, "seconds": {"generate": 3.71, "train": 6.3}}  # fmt: skip
    assert iteration_line(row, 5) == (
        "iteration 3/5: 132 pairs  greedy tv_to_uniform 0.6667 exploitability 0.5  sampled accuracy 0.546  "
        "(generate 3.7 s, train 6.3 s)"
    )
    assert iteration_line({"iteration": 0}, 5) == "iteration 0/5: 0 pairs"


def test_the_banner_can_be_silenced(caplog):
    class Fake:
        class accelerator:
            is_main_process = True

        method = type("M", (), {"name": "dpo"})

        @staticmethod
        def active_summary():
            return {"method": "dpo"}

    with caplog.at_level(logging.WARNING, logger="alignment"):
        banner.log_banner(Fake)
        with banner.silenced():
            banner.log_banner(Fake)
    assert sum("active configuration" in r.getMessage() for r in caplog.records) == 1
