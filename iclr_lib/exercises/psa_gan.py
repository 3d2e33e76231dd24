"""Self-check for the coding exercise of chapter 06 (PSA-GAN).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable


def check_moment_loss(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-06-3: ``fn(fake, real)`` must return PSA-GAN's moment loss for ``(B, 1, L)`` batches.

    The answer must equal :func:`iclr_lib.psa_gan.moment_loss`: the batch mean of
    ``|std_t(fake_b) - std_t(real_b)| + |mean_t(fake_b) - mean_t(real_b)|`` (``torch.std``, unbiased).
    """
    import torch

    from ..psa_gan import moment_loss

    gen = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        B, L = 4 + 3 * trial, 16 * (trial + 1)
        fake = torch.rand(B, 1, L, generator=gen, dtype=torch.float64)
        real = 0.5 * torch.rand(B, 1, L, generator=gen, dtype=torch.float64) + 0.2
        got = fn(fake, real)
        want = moment_loss(fake, real)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"trial {trial}: expected a scalar tensor, got {type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(want.dtype), want, atol=1e-8):
            raise AssertionError(f"trial {trial}: loss {float(got):.6f}, expected {float(want):.6f} "
                                 "(pair window b of fake with window b of real; average the absolute gaps over the batch)")
    return True
