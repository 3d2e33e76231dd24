"""Shapley values of a cooperative game, exactly and by permutation sampling.

A *game* is a function ``value(mask)`` of a boolean coalition mask ``(n_players,)`` that returns a
number, or an array (one value per sample, e.g. the negative loss of each test case). The Shapley value
of player ``i`` is the average of its marginal contribution over all orders in which players join::

    phi_i = sum_{S subset N \\ {i}} |S|! (n - |S| - 1)! / n! * [v(S + i) - v(S)]

- :func:`exact_shapley` enumerates all ``2^n`` coalitions (fine up to ~12 players);
- :func:`permutation_shapley` averages marginal contributions over random orders, with standard errors;
  every single order is exactly efficient, so the estimate is too;
- :func:`uniform_coalition_values` is the *Banzhaf-type* estimator (coalitions drawn uniformly), which the
  paper's released code uses by mistake; it is here to show that it answers a different question.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

Game = Callable[[np.ndarray], "float | np.ndarray"]


def _check_players(n_players: int) -> None:
    if not isinstance(n_players, (int, np.integer)) or n_players < 1:
        raise ValueError(f"n_players must be a positive integer, got {n_players!r}")


def all_coalitions(n_players: int) -> np.ndarray:
    """Every coalition as a boolean mask, ``(2**n_players, n_players)``; row ``k`` is the binary digits of ``k``."""
    _check_players(n_players)
    codes = np.arange(2 ** n_players)[:, None]
    return (codes >> np.arange(n_players)) & 1 == 1


def exact_shapley(value: Game, n_players: int) -> np.ndarray:
    """Exact Shapley values by enumerating all coalitions: ``(n_players, *value_shape)``.

    ``value`` is called once per coalition (``2**n_players`` calls).
    """
    _check_players(n_players)
    if n_players > 16:
        raise ValueError(f"exact enumeration of {n_players} players needs 2^{n_players} games; use permutation_shapley")
    masks = all_coalitions(n_players)
    values = np.stack([np.asarray(value(mask), dtype=float) for mask in masks])   # (2^n, *shape)
    sizes = masks.sum(1)
    weight = coalition_weights(n_players)
    phi = np.zeros((n_players, *values.shape[1:]))
    for i in range(n_players):
        without = np.flatnonzero(~masks[:, i])                 # coalitions S without i
        with_i = without + (1 << i)                             # S + i has code k + 2^i
        w = weight[sizes[without]].reshape(-1, *([1] * (values.ndim - 1)))
        phi[i] = (w * (values[with_i] - values[without])).sum(0)
    return phi


def permutation_shapley(value: Game, n_players: int, n_permutations: int,
                        rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Monte Carlo Shapley values over random player orders: ``(phi, standard_error)``.

    Each order contributes the marginal contributions of every player as it joins; values of
    coalitions already seen are cached, so a game with few players is not re-evaluated.
    """
    _check_players(n_players)
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be >= 2 (for a standard error), got {n_permutations}")
    cache: dict[int, np.ndarray] = {}

    def v(code: int) -> np.ndarray:
        if code not in cache:
            cache[code] = np.asarray(value((code >> np.arange(n_players)) & 1 == 1), dtype=float)
        return cache[code]

    samples = []
    for _ in range(n_permutations):
        code, previous = 0, v(0)
        contribution = [None] * n_players
        for player in rng.permutation(n_players):
            code |= 1 << int(player)
            current = v(code)
            contribution[player] = current - previous
            previous = current
        samples.append(np.stack(contribution))
    samples = np.stack(samples)                                  # (n_permutations, n_players, *shape)
    return samples.mean(0), samples.std(0, ddof=1) / math.sqrt(n_permutations)


def uniform_coalition_values(value: Game, n_players: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """The Banzhaf-type estimate: mean of ``v(S + i) - v(S)`` over coalitions ``S`` drawn *uniformly*.

    This is not the Shapley value (it weights every coalition equally instead of every order) and is
    not efficient; the paper's released estimator does this. Returns ``(n_players, *value_shape)``.
    """
    _check_players(n_players)
    phi = []
    for i in range(n_players):
        total = 0.0
        for _ in range(n_samples):
            mask = rng.random(n_players) < 0.5
            mask[i] = False
            plus = mask.copy()
            plus[i] = True
            total = total + np.asarray(value(plus), dtype=float) - np.asarray(value(mask), dtype=float)
        phi.append(total / n_samples)
    return np.stack(phi)


def coalition_weights(n_players: int) -> np.ndarray:
    """The Shapley weight of each coalition size ``s`` for one player: ``s! (n - s - 1)! / n!``, ``(n,)``."""
    _check_players(n_players)
    return np.array([1.0 / (n_players * math.comb(n_players - 1, s)) for s in range(n_players)])


__all__ = ["all_coalitions", "coalition_weights", "exact_shapley", "permutation_shapley",
           "uniform_coalition_values"]
