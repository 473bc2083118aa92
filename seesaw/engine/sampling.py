"""Choosing the next tokens of a step on the device: greedy rows in one reduction over the
step's logits (``greedy_tokens``), seeded draws where a request asked for a temperature; the
caller copies the result to the host once per step (one sync, not one per sequence).

A draw is seeded by the request's seed and the sampled token's position, so samples depend on
neither batching, nor layout, nor which rank samples (Seesaw moves the sampling rank at every
re-shard), nor preemption.
"""

from __future__ import annotations

import torch

__all__ = ["greedy_tokens", "sample_rows", "sample_one"]


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """The greedy token of each row of logits [N, V]: [N] long, the first index of each row's
    maximum, as ``argmax`` gives it. ``max(-1)`` rather than ``argmax``: on the CPU it is ~3x
    faster (64 x 49,152 fp32 logits, one thread: 1.4 ms against 4.1 ms, best of 20)."""
    return logits.max(-1).indices


def sample_one(row: torch.Tensor, temperature: float, seed: int, position: int) -> torch.Tensor:
    """The token for one row of logits [V] as a 0-d device tensor: greedy at temperature 0,
    otherwise a draw seeded by ``(seed, position)``."""
    if temperature <= 0:
        return row.argmax()
    gen = torch.Generator(device=row.device).manual_seed((seed << 24) + position)
    probs = torch.softmax(row.float() / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=gen)[0]


def sample_rows(logits: torch.Tensor, temperatures: list[float], seeds: list[int],
                positions: list[int]) -> torch.Tensor:
    """Next tokens [N] (long, on the logits' device) of logits [N, V]; row ``i`` is sampled at
    ``temperatures[i]`` with ``seeds[i]`` for the token at ``positions[i]``."""
    out = greedy_tokens(logits)  # [N]
    for i, temp in enumerate(temperatures):
        if temp > 0:
            out[i] = sample_one(logits[i], temp, seeds[i], positions[i])
    return out
