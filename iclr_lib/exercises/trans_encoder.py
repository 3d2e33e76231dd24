"""Self-check for the coding exercise of chapter 08 (Trans-Encoder).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable


def check_soft_bce(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-08-3: ``fn(logits, targets)`` must return Trans-Encoder's soft-target BCE, stably.

    The answer must equal :func:`iclr_lib.trans_encoder.soft_bce`, the batch mean of
    ``-(y log s(x) + (1 - y) log(1 - s(x)))``, also for logits as large as +-60 (where computing
    ``sigmoid`` first and then its logarithm gives ``inf`` or ``nan``).
    """
    import torch

    from ..trans_encoder import soft_bce

    gen = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        B = 6 + 5 * trial
        scale = (1.0, 10.0, 60.0)[trial % 3]
        logits = scale * torch.randn(B, generator=gen, dtype=torch.float64)
        targets = torch.rand(B, generator=gen, dtype=torch.float64)
        got, want = fn(logits, targets), soft_bce(logits, targets)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"trial {trial}: expected a scalar tensor, got {type(got).__name__}")
        if not torch.isfinite(got):
            raise AssertionError(f"trial {trial}: the loss is {float(got)} for logits up to {scale:g}; "
                                 "use log s(x) = -softplus(-x) and log(1 - s(x)) = -softplus(x)")
        if not torch.allclose(got.reshape(()).to(want.dtype), want, atol=1e-8, rtol=1e-6):
            raise AssertionError(f"trial {trial}: loss {float(got):.6f}, expected {float(want):.6f} "
                                 "(average over the batch)")
    return True
