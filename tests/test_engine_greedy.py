"""Greedy token choice (``seesaw.engine.sampling.greedy_tokens``) is ``argmax``'s: the first index
of each row's maximum, ties and NaN included, on every row length."""

from __future__ import annotations

import pytest
import torch

from seesaw.engine.sampling import greedy_tokens

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_greedy_tokens_are_argmax_with_ties_and_nan():
    g = torch.Generator().manual_seed(0)
    for vocab in (1, 7, 16, 17, 255, 4099, 49152):
        x = torch.randint(-3, 3, (9, vocab), generator=g).float()  # many ties
        assert torch.equal(greedy_tokens(x), x.argmax(-1)), vocab
    x = torch.zeros(3, 100)
    x[0, 50] = float("nan")
    x[1, 7] = x[1, 9] = float("nan")
    x[2, 3] = x[2, 60] = 1.0
    assert greedy_tokens(x).tolist() == x.argmax(-1).tolist() == [50, 7, 3]
