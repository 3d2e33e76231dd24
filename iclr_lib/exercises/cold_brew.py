"""Self-check for the coding exercise of chapter 01 (Cold Brew).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable

from ._compare import assert_matches


def check_virtual_neighbours(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-01-4: ``fn(query, pool, k)`` must implement the paper's Eq. 4.

    ``query`` is ``[B, d]``, ``pool`` ``[P, d]`` (torch tensors); the answer ``[B, d]`` is the
    softmax-weighted average of the ``k`` pool rows with the largest dot products with each query.
    """
    import torch

    generator = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        b, p, d = (int(v) for v in torch.randint(3, 12, (3,), generator=generator))
        k = int(torch.randint(1, p, (1,), generator=generator))
        query, pool = torch.randn(b, d, generator=generator), torch.randn(p, d, generator=generator)
        scores = query @ pool.T
        top, idx = scores.topk(k, dim=1)
        want = torch.einsum("bk,bkd->bd", torch.softmax(top, dim=1), pool[idx])
        assert_matches(torch.as_tensor(fn(query, pool, k)), want, trial=trial, layout="[B, d]", atol=1e-5,
                       hint=f"softmax over the top-{k} scores: did you keep only the k best pool rows before the softmax?")
    return True
