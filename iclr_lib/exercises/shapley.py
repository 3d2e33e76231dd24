"""Self-check for the coding exercise of chapter 11 (You mostly walk alone).

``check_*`` takes the reader's function, compares it with a reference on small random inputs and
returns ``True`` or raises ``AssertionError`` saying what is wrong.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from ._compare import assert_matches


def check_exact_shapley(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-11-3: ``fn(value, n_players)`` must return the exact Shapley values, ``(n_players,)``.

    ``value`` maps a boolean coalition mask ``(n_players,)`` to a float.
    """
    from ..shapley import exact_shapley

    rng = np.random.default_rng(1953)
    for trial in range(trials):
        n = 3 + trial
        table = rng.normal(size=2 ** n)

        def value(mask, table=table, n=n):
            return float(table[int((np.asarray(mask, dtype=bool) * (1 << np.arange(n))).sum())])

        assert_matches(fn(value, n), exact_shapley(value, n), trial=trial, layout="(n_players,)", atol=1e-9,
                       hint="the Shapley values: check the weights |S|! (n - |S| - 1)! / n!")
    return True
