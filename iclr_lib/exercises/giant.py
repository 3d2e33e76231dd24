"""Self-check for the coding exercise of chapter 02 (GIANT-XRT).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp

from ._compare import assert_matches


def check_pifa(fn: Callable[[sp.csr_matrix, sp.csr_matrix], object], trials: int = 3) -> bool:
    """Exercise ex-02-3: ``fn(Y, X)`` must return PIFA label embeddings ``(L, V)``.

    ``Y`` is an ``(n, L)`` sparse 0/1 label matrix and ``X`` an ``(n, V)`` sparse feature matrix; the
    answer (dense or sparse) must equal :func:`iclr_lib.giant.pifa_label_embeddings`: rows of ``Y``
    L2-normalised, ``Y^T X``, then rows L2-normalised. A label no instance has stays a zero row.
    """
    from ..giant import pifa_label_embeddings

    rng = np.random.default_rng(2022)
    for trial in range(trials):
        n, L, V = (int(v) for v in rng.integers(8, 20, 3))
        Y = sp.csr_matrix((rng.random((n, L)) < 0.2).astype(np.float32))
        X = sp.csr_matrix((rng.random((n, V)) * (rng.random((n, V)) < 0.3)).astype(np.float32))
        got = fn(Y, X)
        got = got.toarray() if sp.issparse(got) else np.asarray(got, dtype=np.float64)
        assert_matches(got, pifa_label_embeddings(Y, X).toarray(), trial=trial, layout="(labels, features)",
                       atol=1e-5, hint="normalise the rows of Y first, then the rows of Y^T X")
    return True
