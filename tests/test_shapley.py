"""Shapley values: the axioms on toy games by exact enumeration, the permutation estimator against the
exact values, and the Banzhaf-type estimator of the paper's released code that answers differently."""
from __future__ import annotations

import math

import numpy as np
import pytest

from iclr_lib import shapley as sh


def additive(weights):
    weights = np.asarray(weights, dtype=float)
    return lambda mask: float(weights @ mask)


def test_coalitions_and_weights():
    masks = sh.all_coalitions(3)
    assert masks.shape == (8, 3) and len({tuple(m) for m in masks}) == 8
    assert np.array_equal(masks[5], [True, False, True])                  # 5 = 0b101
    for n in range(1, 7):
        # for one player, the weights of all coalitions of the others sum to 1
        sizes = np.arange(n)
        assert np.isclose(sum(sh.coalition_weights(n)[s] * math.comb(n - 1, s) for s in sizes), 1.0)


def test_additive_game_gives_each_player_its_weight():
    assert np.allclose(sh.exact_shapley(additive([1.0, -2.0, 0.5, 3.0]), 4), [1.0, -2.0, 0.5, 3.0], atol=1e-12)


def test_unanimity_game_splits_equally_and_ignores_dummies():
    unanimity = lambda mask: float(mask[0] and mask[2])                  # noqa: E731
    assert np.allclose(sh.exact_shapley(unanimity, 4), [0.5, 0.0, 0.5, 0.0], atol=1e-12)


def test_efficiency_symmetry_dummy_and_linearity_on_a_random_game():
    rng = np.random.default_rng(0)
    n = 5
    table = rng.normal(size=2 ** n)
    table[0] = 0.0

    def game(mask):       # player 4 is a dummy, players 0 and 1 are symmetric
        m = mask.copy()
        m[4] = False
        a, b = m[0], m[1]
        m[0], m[1] = a or b, a and b                                        # symmetric in (0, 1)
        return table[int((m * (1 << np.arange(n))).sum())]

    phi = sh.exact_shapley(game, n)
    full = np.ones(n, dtype=bool)
    assert abs(phi.sum() - (game(full) - game(np.zeros(n, dtype=bool)))) < 1e-9           # efficiency
    assert abs(phi[0] - phi[1]) < 1e-12                                                    # symmetry
    assert abs(phi[4]) < 1e-12                                                             # dummy
    other = additive(rng.normal(size=n))
    combined = sh.exact_shapley(lambda m: 2.0 * game(m) + 3.0 * other(m), n)
    assert np.allclose(combined, 2.0 * phi + 3.0 * sh.exact_shapley(other, n), atol=1e-12)   # linearity


def test_vector_valued_games_give_one_value_per_sample():
    weights = np.array([[1.0, 2.0], [3.0, -1.0], [0.0, 5.0]])            # 3 players, 2 samples
    phi = sh.exact_shapley(lambda mask: mask.astype(float) @ weights, 3)
    assert phi.shape == (3, 2) and np.allclose(phi, weights)


def test_permutation_estimate_is_efficient_and_within_three_standard_errors():
    rng = np.random.default_rng(1)
    n = 6
    table = rng.normal(size=2 ** n)
    game = lambda mask: table[int((mask * (1 << np.arange(n))).sum())]   # noqa: E731
    exact = sh.exact_shapley(game, n)
    estimate, se = sh.permutation_shapley(game, n, 2000, np.random.default_rng(2))
    assert np.all(np.abs(estimate - exact) <= 3 * se + 1e-12)
    assert abs(estimate.sum() - exact.sum()) < 1e-9                       # every order is efficient
    assert np.all(se > 0)


def test_uniform_coalitions_are_not_shapley():
    """On v(S) = |S|^3 the Banzhaf-type estimate differs from Shapley (9 each for 3 players) and is not
    efficient. (On v(S) = |S|^2, the game the issue suggests, the two coincide for symmetric players:
    E[2|S| + 1] = n, so that game cannot tell them apart.)"""
    cube = lambda mask: float(mask.sum()) ** 3                          # noqa: E731
    assert np.allclose(sh.exact_shapley(cube, 3), 9.0)
    banzhaf = sh.uniform_coalition_values(cube, 3, 4000, np.random.default_rng(3))
    assert np.all(np.abs(banzhaf - 8.5) < 0.25)                         # E[3k^2 + 3k + 1], k ~ Bin(2, 1/2)
    assert abs(banzhaf.sum() - 27.0) > 1.0
    square = lambda mask: float(mask.sum()) ** 2                        # noqa: E731
    assert np.allclose(sh.exact_shapley(square, 3), 3.0)


def test_bad_arguments():
    with pytest.raises(ValueError, match="n_players"):
        sh.exact_shapley(additive([1.0]), 0)
    with pytest.raises(ValueError, match="permutation_shapley"):
        sh.exact_shapley(additive(np.ones(17)), 17)
    with pytest.raises(ValueError, match="n_permutations"):
        sh.permutation_shapley(additive([1.0, 2.0]), 2, 1, np.random.default_rng(0))


def test_exercise_check_accepts_exact_shapley_and_rejects_banzhaf():
    from iclr_lib.exercises.shapley import check_exact_shapley

    assert check_exact_shapley(sh.exact_shapley)

    def banzhaf(value, n):                 # equal weight for every coalition: not Shapley
        masks = sh.all_coalitions(n)
        return np.array([np.mean([value(np.where(np.arange(n) == i, True, m)) - value(m)
                                  for m in masks if not m[i]]) for i in range(n)])

    with pytest.raises(AssertionError, match="weights"):
        check_exact_shapley(banzhaf)
