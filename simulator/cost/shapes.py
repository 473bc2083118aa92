"""The shape of one micro-batch as the scheduler hands it to a pipeline stage.

A step is described by token counts only (prompt tokens computed, causal query-key pairs, decode
sequences and the context they read, rows sampled), so prefill, decode and mixed (chunked
prefill) steps are one type and ``a + b`` merges a prefill part and a decode part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

__all__ = ["BatchShape", "attn_pairs"]


def attn_pairs(new_tokens: int, past_tokens: int = 0) -> float:
    """Causal query-key pairs of a chunk of ``new_tokens`` after ``past_tokens`` of context."""
    # query i (1-based) of the chunk attends to past + i keys: sum = new*past + new(new+1)/2
    return new_tokens * (past_tokens + (new_tokens + 1) / 2)


@dataclass(slots=True)
class BatchShape:
    """One micro-batch as the scheduler hands it to a pipeline stage."""

    prefill_tokens: int = 0  # new prompt tokens computed this step (sum over prefill chunks)
    prefill_attn_pairs: float = 0.0  # sum over chunks of new*(past + (new+1)/2), see attn_pairs
    decode_seqs: int = 0  # sequences decoding one token
    decode_context_tokens: int = 0  # sum of their context lengths (KV tokens read)
    sampled_seqs: int = 0  # rows that go through the LM head (decodes + finishing prefills)
    # prefill sequences (chunks) in the step; 0 = unknown (estimated from tokens and pairs). Only
    # measured profiles use it (per-sequence attention calls), so it stays out of equality.
    prefill_seqs: int = field(default=0, compare=False)

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @classmethod
    def prefill(
        cls, new_tokens: Iterable[int], past_tokens: Iterable[int] | None = None,
        num_finishing: int | None = None,
    ) -> "BatchShape":
        """Prefill chunks of ``new_tokens`` after ``past_tokens``; default: whole prompts, all of
        which finish (sample their first token)."""
        new = list(new_tokens)
        past = [0] * len(new) if past_tokens is None else list(past_tokens)
        return cls(
            prefill_tokens=sum(new),
            prefill_attn_pairs=sum(attn_pairs(n, p) for n, p in zip(new, past)),
            sampled_seqs=len(new) if num_finishing is None else num_finishing,
            prefill_seqs=len(new),
        )

    @classmethod
    def decode(cls, context_tokens: Iterable[int]) -> "BatchShape":
        """One decode token for each sequence with these context lengths."""
        ctx = list(context_tokens)
        return cls(decode_seqs=len(ctx), decode_context_tokens=sum(ctx), sampled_seqs=len(ctx))

    def __add__(self, other: "BatchShape") -> "BatchShape":
        return BatchShape(
            self.prefill_tokens + other.prefill_tokens,
            self.prefill_attn_pairs + other.prefill_attn_pairs,
            self.decode_seqs + other.decode_seqs,
            self.decode_context_tokens + other.decode_context_tokens,
            self.sampled_seqs + other.sampled_seqs,
            self.prefill_seqs + other.prefill_seqs,
        )

