"""Self-check for the coding exercise of chapter 09 (DIVA).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable


def check_dual_ridge(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-09-3: ``fn(Z, Y, alpha, lam)`` must return the weighted ridge weights of equation (1).

    ``Z`` is ``(n, d)`` float64 with ``d > n``, ``Y`` is ``(n, k)``, ``alpha`` is ``(n,)`` with some zeros;
    the answer must be the ``(d, k)`` tensor that :func:`iclr_lib.diva.ridge_fit` returns.
    """
    import torch

    from ..diva import ridge_fit

    generator = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        n, d, k = 6 + 3 * trial, 20 + 5 * trial, 3
        Z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        Y = torch.randn(n, k, generator=generator, dtype=torch.float64)
        alpha = torch.rand(n, generator=generator, dtype=torch.float64) * 2
        alpha[0] = 0.0
        lam = 0.1 * (trial + 1)
        got = fn(Z, Y, alpha, lam)
        want = ridge_fit(Z, Y, alpha, lam)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected a {tuple(want.shape)} (d, k) tensor, got "
                                 f"{getattr(got, 'shape', type(got))}")
        if not torch.allclose(got, want, atol=1e-8, rtol=1e-6):
            raise AssertionError(f"trial {trial}: weights differ from ridge_fit by {(got - want).abs().max():.2e}")
    return True
