"""Self-check for the coding exercise of chapter 07 (Deep AutoAugment).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable


def check_policy_derivative(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-07-3: ``fn(G, g_val, probs)`` must return DeepAA's exact policy derivative.

    ``G (J, P)`` holds one gradient per entry, ``g_val (P,)`` the validation gradient, ``probs (J,)`` the
    layer's probabilities; the answer is ``d cos(g_val, probs @ G) / d probs``, shape ``(J,)``, i.e.
    ``G @ t / (|g_aug| |g_val|)`` with ``t = g_val - (g_val . g_aug / |g_aug|^2) g_aug``.
    """
    import torch

    gen = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        J, P = 5 + 4 * trial, 20 + 10 * trial
        G = torch.randn(J, P, generator=gen, dtype=torch.float64)
        g_val = torch.randn(P, generator=gen, dtype=torch.float64) + G.mean(0)
        probs = torch.softmax(torch.randn(J, generator=gen, dtype=torch.float64), 0)
        p = probs.clone().requires_grad_(True)
        g_aug = p @ G
        (want,) = torch.autograd.grad(torch.dot(g_val, g_aug) / (g_aug.norm() * g_val.norm()), p)
        got = fn(G, g_val, probs)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (J,):
            raise AssertionError(f"trial {trial}: expected a tensor of shape ({J},), got {getattr(got, 'shape', type(got))}")
        if not torch.allclose(got.to(want.dtype), want, atol=1e-8):
            raise AssertionError(f"trial {trial}: derivative differs by up to {(got - want).abs().max():.2e} "
                                 "(project g_val off g_aug to get t, then divide by both norms)")
    return True
