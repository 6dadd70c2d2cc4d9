"""Random streams (runner/engine/rng.py): a model's draws come from its own stream whether the
loop switches streams one by one or hands over from one model's stream to the next."""
from __future__ import annotations

import torch

from compare.engine.rng import RngStream, handover

CPU = torch.device("cpu")


def draws(streams: list[RngStream], rounds: int, chained: bool) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each stream draws in turn, `rounds` times; returns their draws and the caller's next draw."""
    torch.manual_seed(123)
    out = []
    for _ in range(rounds):
        with handover([CPU]) if chained else torch.random.fork_rng(devices=[]):
            for stream in streams:
                with stream.active():
                    out.append(torch.rand(3))
                    if stream.seed == 2:  # a nested stream inside one: saved and restored as usual
                        with RngStream(99, CPU).active():
                            torch.rand(5)
                        out.append(torch.rand(1))
    return out, torch.rand(2)


def test_handover_gives_every_stream_the_draws_it_gets_alone_and_restores_the_caller():
    chained, after_chained = draws([RngStream(s, CPU) for s in (1, 2, 3)], rounds=3, chained=True)
    plain, after_plain = draws([RngStream(s, CPU) for s in (1, 2, 3)], rounds=3, chained=False)
    assert all(torch.equal(a, b) for a, b in zip(chained, plain))
    torch.manual_seed(123)
    assert torch.equal(after_chained, torch.rand(2)) and torch.equal(after_plain, after_chained)
    alone, _ = draws([RngStream(2, CPU)], rounds=3, chained=True)
    assert all(torch.equal(a, b) for a, b in zip(alone, [d for i, d in enumerate(plain) if i % 4 in (1, 2)]))


def test_a_stream_outside_a_handover_restores_the_caller_at_once():
    torch.manual_seed(5)
    expected = torch.rand(4)
    torch.manual_seed(5)
    with RngStream(7, CPU).active():
        torch.rand(10)
    assert torch.equal(torch.rand(4), expected)
