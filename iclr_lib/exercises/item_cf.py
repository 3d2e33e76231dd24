"""Self-check for the coding exercise of chapter 04 (item-to-item CF).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp


def _jaccard_reference(dense: np.ndarray) -> np.ndarray:
    binary = (dense > 0).astype(float)
    n_items = binary.shape[1]
    out = np.zeros((n_items, n_items))
    for a in range(n_items):
        for b in range(n_items):
            union = np.logical_or(binary[:, a], binary[:, b]).sum()
            if a != b and union:
                out[a, b] = np.logical_and(binary[:, a], binary[:, b]).sum() / union
    return out


def check_jaccard_similarity(fn: Callable[[sp.csr_matrix], np.ndarray], trials: int = 3) -> bool:
    """Exercise ex-04-3: ``fn(R)`` must return the item-item Jaccard similarity, zero diagonal.

    ``R`` is an ``(n_users, n_items)`` sparse 0/1 matrix; the answer an ``(n_items, n_items)`` array.
    """
    rng = np.random.default_rng(2003)
    for trial in range(trials):
        dense = (rng.random((rng.integers(5, 15), rng.integers(3, 9))) < 0.35).astype(float)
        dense[:, -1] = 0.0  # an item nobody bought must not divide by zero
        got = fn(sp.csr_matrix(dense))
        got = got.toarray() if sp.issparse(got) else np.asarray(got, dtype=float)
        want = _jaccard_reference(dense)
        if got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected shape {want.shape} (n_items, n_items), got {got.shape}")
        if not np.allclose(np.diag(got), 0.0):
            raise AssertionError("the diagonal must be 0: an item is not recommended because of itself")
        if not np.allclose(got, want, atol=1e-9):
            a, b = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
            raise AssertionError(f"trial {trial}: similarity of items {a} and {b} is {got[a, b]:.4f}, "
                                 f"expected |A n B| / |A u B| = {want[a, b]:.4f}")
    print("check_jaccard_similarity: correct")
    return True
