"""The comparison every array-valued self-check makes: the reader's answer against the reference."""
from __future__ import annotations

import numpy as np


def assert_matches(got, want, *, trial: int, layout: str, atol: float, hint: str) -> None:
    """Raise ``AssertionError`` unless ``got`` has ``want``'s shape and values (numpy or torch arrays).

    ``layout`` names the expected axes (``"(n_players,)"``); ``hint`` says what to check when the
    values differ.
    """
    got = np.asarray(got.detach().cpu() if hasattr(got, "detach") else got, dtype=np.float64)
    want = np.asarray(want.detach().cpu() if hasattr(want, "detach") else want, dtype=np.float64)
    if got.shape != want.shape:
        raise AssertionError(f"trial {trial}: expected shape {want.shape} {layout}, got {got.shape}")
    if not np.allclose(got, want, atol=atol):
        raise AssertionError(f"trial {trial}: values differ by up to {np.abs(got - want).max():.2e} ({hint})")
