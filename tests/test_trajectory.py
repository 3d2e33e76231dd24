"""Trajectory windows, the team simulator, the predictor and its Shapley attribution."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iclr_lib import trajectory as tj


def _tracks() -> np.ndarray:
    """Three pedestrians walking in straight lines for 25 steps; the third is far away and shows up late."""
    rows = []
    for step in range(25):
        frame = 10.0 * step
        rows.append((frame, 1.0, 0.4 * step, 0.0))
        rows.append((frame, 2.0, 0.4 * step, 1.0))
        if step >= 3:
            rows.append((frame, 3.0, 50.0, 0.3 * step))
    return np.array(rows)


def test_windows_cut_tracks_into_relative_observed_and_future_parts():
    w = tj.windows_from_tracks(_tracks(), scene_id=7, max_neighbours=2, radius=3.0)
    # agents 1 and 2: starts 0..5; agent 3 (from step 3): starts 3..5
    assert len(w) == 6 + 6 + 3 and w.n_slots == 2
    first = np.flatnonzero((w.position[:, 1] == 0.0))[0]
    assert np.allclose(w.past[first, -1], 0.0) and np.allclose(w.future[first, 0], [0.4, 0.0], atol=1e-6)
    assert np.allclose(w.past[first, 0], [-0.4 * 7, 0.0], atol=1e-5)
    assert w.neighbour_mask[first].tolist() == [True, False]                 # agent 2 near, agent 3 too far
    assert np.allclose(w.neighbours[first, 0, -1], [0.0, 1.0], atol=1e-6)
    lonely = np.flatnonzero(w.position[:, 0] == 50.0)
    assert len(lonely) == 3 and not w.neighbour_mask[lonely].any()
    assert np.all(w.scene == 7)


def test_random_neighbours_fill_exactly_the_occupied_slots_from_the_pool():
    w = tj.windows_from_tracks(_tracks(), scene_id=0, max_neighbours=2, radius=3.0)
    pool = tj.simulate_team_scenes(5, 0.0, np.random.default_rng(0))
    null = tj.with_random_neighbours(w, pool, np.random.default_rng(1))
    assert np.array_equal(null.neighbour_mask, w.neighbour_mask) and np.array_equal(null.past, w.past)
    assert null.neighbours.shape == w.neighbours.shape and null.neighbours.dtype == w.neighbours.dtype
    assert not null.neighbours[~w.neighbour_mask].any()
    donors = pool.neighbours[pool.neighbour_mask]                          # (M, OBS, 2)
    for track in null.neighbours[w.neighbour_mask]:
        assert np.abs(donors - track).reshape(len(donors), -1).max(1).min() == 0   # a pool neighbour, copied
    assert not np.allclose(null.neighbours[w.neighbour_mask], w.neighbours[w.neighbour_mask])
    with pytest.raises(ValueError, match="at least one neighbour"):
        tj.with_random_neighbours(w, w.subset(np.flatnonzero(~w.neighbour_mask.any(1))), np.random.default_rng(0))


def test_simulator_followers_copy_the_leader_only_when_coordinated():
    rng = np.random.default_rng(0)
    team = tj.simulate_team_scenes(50, 1.0, rng, noise=0.0)
    alone = tj.simulate_team_scenes(50, 0.0, rng, noise=0.0)
    assert len(team) == 100 and team.neighbour_type[0].tolist() == [tj.LEADER, tj.FOLLOWER, tj.WALKER]

    def speed_match(w):   # the follower's last observed step equals some earlier leader step
        follower_step = w.past[:, -1] - w.past[:, -2]
        leader_steps = np.diff(w.neighbours[:, 0], axis=1)
        return np.mean(np.min(np.linalg.norm(leader_steps - follower_step[:, None], axis=-1), axis=1) < 1e-5)

    assert speed_match(team) > 0.6 and speed_match(alone) < 0.1     # lag 7 copies the unobserved first step
    with pytest.raises(ValueError, match="alpha"):
        tj.simulate_team_scenes(1, 1.5, rng)


def test_gaussian_nll_and_errors():
    mean = torch.zeros(1, tj.PRED, 2)
    target = torch.ones(1, tj.PRED, 2) * torch.tensor([3.0, 4.0])
    ade, fde = tj.displacement_errors(mean, target)
    assert torch.allclose(ade, torch.tensor([5.0])) and torch.allclose(fde, torch.tensor([5.0]))
    nll = tj.gaussian_nll(mean, torch.zeros_like(mean), torch.zeros_like(mean))
    assert torch.allclose(nll, torch.tensor([tj.PRED * 2 * 0.5 * np.log(2 * np.pi)], dtype=torch.float32))


@pytest.fixture(scope="module")
def team_models():
    rng = np.random.default_rng(1)
    train, test = tj.simulate_team_scenes(1500, 1.0, rng), tj.simulate_team_scenes(60, 1.0, rng)
    pool = tj.simulate_team_scenes(20, 0.0, rng)
    with_n = tj.train_predictor(train, epochs=20, seed=0)
    without = tj.train_predictor(train, epochs=20, seed=0, use_neighbours=False)
    return train, test, pool, with_n, without


def test_predictor_learns_and_neighbours_help_in_team_play(team_models):
    _, test, _, with_n, without = team_models
    scores, scores_alone = tj.evaluate(with_n, test), tj.evaluate(without, test)
    assert scores["ADE"] < 0.9 * scores_alone["ADE"]
    assert scores["FDE"] > scores["ADE"]


def test_a_disabled_neighbour_branch_gets_exactly_zero_attribution(team_models):
    _, test, pool, with_n, without = team_models
    phi = tj.shapley_attribution(without, test, pool, rng=np.random.default_rng(0))
    assert phi.shape == (len(test), 2 + 3 + 1)
    assert np.all(phi[:, 2:] == 0.0)                        # neighbours and the random agent: exactly zero
    phi = tj.shapley_attribution(with_n, test, pool, removal="random", n_draws=2, rng=np.random.default_rng(0))
    assert np.isfinite(phi).all() and phi[:, 2].mean() > 0    # the leader matters in team play
    g = tj.global_attribution(phi, test.neighbour_mask)
    assert g["interaction"] >= phi[:, 2].mean() - 1e-9 and g["windows with neighbours"] == 1.0


def test_identical_neighbours_get_equal_attribution(team_models):
    _, test, pool, with_n, _ = team_models
    twin = test.subset(np.arange(10))
    twin.neighbours = twin.neighbours.copy()
    twin.neighbours[:, 1] = twin.neighbours[:, 0]
    twin.neighbour_type = twin.neighbour_type.copy()
    twin.neighbour_type[:, 1] = twin.neighbour_type[:, 0]
    phi = tj.shapley_attribution(with_n, twin, pool, removal="zero", rng=np.random.default_rng(0))
    assert np.allclose(phi[:, 2], phi[:, 3], atol=1e-4)


def test_attribution_rejects_bad_options(team_models):
    _, test, pool, with_n, _ = team_models
    with pytest.raises(ValueError, match="removal"):
        tj.shapley_attribution(with_n, test, pool, removal="mean", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="scene must be one of"):
        tj.load_eth_ucy("atlantis")
