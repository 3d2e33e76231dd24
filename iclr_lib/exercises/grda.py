"""Self-check for the coding exercise of chapter 03 (GRDA).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable

import numpy as np


def check_graph_discriminator_loss(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-03-4: ``fn(z_hat, domains, A)`` must return GRDA's balanced graph-discriminator loss.

    ``z_hat`` is ``(N, B, d_out)``, ``domains`` a sequence of distinct domain ids, ``A`` an ``(N, N)`` 0/1
    array; the answer must be the scalar tensor :func:`iclr_lib.grda.graph_discriminator_loss` returns
    (connected and unconnected pairs averaged separately, then their mean, times ``N``).
    """
    import torch

    from ..grda import graph_discriminator_loss

    rng = np.random.default_rng(2022)
    for trial in range(trials):
        N, B = 6 + 2 * trial, 4
        upper = np.triu(rng.random((N, N)) < 0.25, 1)            # sparse: balancing matters
        upper[0, 1] = True
        A = (upper | upper.T).astype(int)
        z_hat = torch.as_tensor(rng.normal(size=(N, B, 2)), dtype=torch.float64)
        domains = rng.choice(N, N - 1, replace=False)
        got = fn(z_hat, domains, A)
        want = graph_discriminator_loss(z_hat, domains, A)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"trial {trial}: expected a scalar tensor, got {type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(want.dtype), want, atol=1e-8, rtol=1e-6):
            raise AssertionError(f"trial {trial}: loss {float(got):.6f}, expected {float(want):.6f} "
                                 "(average connected and unconnected pairs separately, then multiply by N)")
    return True
