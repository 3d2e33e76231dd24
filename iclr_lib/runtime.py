"""Run-time helpers every chapter shares: seeding, device choice, quick mode and timing."""
from __future__ import annotations

import os
import random
import time
from typing import Callable

import numpy as np

QUICK_ENV = "ICLR_LIB_QUICK"


def quick_mode(default: bool = False) -> bool:
    """``True`` when ``$ICLR_LIB_QUICK`` is set to 1/true/yes (CI's short run), else ``default``.

    Quick mode only shrinks sizes (epochs, samples, grids); it never switches to another algorithm.
    """
    value = os.environ.get(QUICK_ENV)
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"${QUICK_ENV} must be 0/1/true/false, got {value!r}")


def seed_everything(seed: int) -> np.random.Generator:
    """Seed Python's ``random``, NumPy's global state and torch (when installed).

    Returns a fresh ``numpy.random.Generator`` seeded with ``seed`` for code that prefers explicit
    generators.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        import torch
    except ImportError:  # chapters without torch still get seeded
        pass
    else:
        torch.manual_seed(seed)
    return np.random.default_rng(seed)


def get_device(prefer: str | None = None):
    """The torch device to use: ``prefer`` if given, else CUDA when available (Colab), else CPU."""
    import torch

    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def median_seconds(fn: Callable[[], object], repeats: int = 3) -> float:
    """The median wall time of ``fn()`` in seconds over ``repeats`` calls (shared machines are noisy)."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))
