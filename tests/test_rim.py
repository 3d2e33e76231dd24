"""Unit tests of iclr_lib.rim: Hawkes MLE on simulated data, matching vs the assignment optimum, metrics."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import scipy.sparse as sp
import scipy.stats

from iclr_lib import rim


# ----------------------------------------------------------------------------- Hawkes
@pytest.fixture(scope="module")
def simulated():
    return rim.simulate_hawkes(baseline=0.5, alpha=0.6, decay=2.0, end=2000.0, seed=1)


def test_hawkes_mle_recovers_simulated_parameters(simulated):
    # a start event at 0 with no start channel: every simulated event is an outcome
    model = rim.fit_hawkes([np.r_[0.0, simulated]], np.array([2000.0]), decays=[2.0], penalty=0.0,
                           start_channel=False)
    assert model.baseline == pytest.approx(0.5, rel=0.15)
    assert model.excitation[0] == pytest.approx(0.6, rel=0.15)


def test_hawkes_gradient_matches_finite_differences(simulated):
    times = np.r_[0.0, simulated[:300]]
    design, compensator = rim._event_design([times], np.array([times[-1] + 1.0]), np.array([0.5, 2.0]))
    theta = np.array([0.2, 0.3, 0.1, 0.05, 0.4])
    value, grad = rim.hawkes_negative_log_likelihood(theta, design, compensator, penalty=0.1)
    numeric = scipy.optimize.approx_fprime(
        theta, lambda t: rim.hawkes_negative_log_likelihood(t, design, compensator, penalty=0.1)[0], 1e-6)
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-3)


def test_least_squares_design_matches_numerical_integration():
    """The closed-form contrast equals integral(lambda^2) - 2 sum lambda(t_i) computed on a fine grid, with a
    tie (tied events do not excite each other) and an event tied with the start event."""
    rng = np.random.default_rng(0)
    decays = np.array([0.5, 2.0, 10.0])
    sequences, ends = [], []
    for _ in range(3):
        t = np.sort(rng.uniform(0, 3, 7))
        sequences.append(np.r_[t[0], t[0], t[:3], t[2], t[3:]])       # ties: with the start, and inside
        ends.append(t[-1] + 0.7)
    theta = rng.uniform(0.1, 1.0, 2 * len(decays) + 1)
    gram, linear, n_jumps = rim.least_squares_design(sequences, np.array(ends), decays)
    assert n_jumps == sum(len(t) - 1 + 2 for t in sequences)

    def intensity(x, times):
        s = times[1:]
        dt = x[:, None] - s[None, :]
        excite = (decays[None, :, None] * np.exp(-decays[None, :, None] * np.clip(dt, 0, None)[:, None, :])
                  * (dt > 0)[:, None, :]).sum(2)
        d0 = x - times[0]
        start = decays[None, :] * np.exp(-decays[None, :] * np.clip(d0, 0, None)[:, None]) * (d0 > 0)[:, None]
        return np.c_[excite, start, np.ones(len(x))] @ theta

    want = 0.0
    for times, end in zip(sequences, ends):
        grid = np.linspace(times[0], end, 200001)
        want += scipy.integrate.trapezoid(intensity(grid, times) ** 2, grid) - 2 * intensity(times[1:], times).sum()
    assert theta @ gram @ theta - 2 * linear @ theta == pytest.approx(want, rel=1e-4)


def test_least_squares_fit_recovers_simulated_parameters(simulated):
    model = rim.fit_hawkes_least_squares([np.r_[0.0, simulated]], np.array([2000.0]), decays=[2.0], penalty=0.0)
    assert model.baseline == pytest.approx(0.5, rel=0.15)
    assert model.excitation[0] == pytest.approx(0.6, rel=0.15)
    assert model.start[0] == pytest.approx(0.0, abs=0.05)
    assert len(rim.OFFICIAL_DECAYS) == 50 and rim.OFFICIAL_DECAYS.min() == pytest.approx(0.1)
    with pytest.raises(ValueError, match="sorted"):
        rim.fit_hawkes_least_squares([np.array([0.0, 2.0, 1.0])], np.array([3.0]))
    with pytest.raises(ValueError, match="before the end"):
        rim.fit_hawkes_least_squares([np.array([0.0, 2.0])], np.array([1.0]))


def test_time_rescaled_gaps_are_exponential(simulated):
    """Time-rescaling theorem: the compensator increments between events are i.i.d. Exp(1)."""
    mu, alpha, b = 0.5, 0.6, 2.0
    times = simulated
    gaps, excitation, last = [], 0.0, 0.0
    for t in times:
        dt = t - last
        gaps.append(mu * dt + excitation * (1 - np.exp(-b * dt)) / b)
        excitation = excitation * np.exp(-b * dt) + alpha * b
        last = t
    assert scipy.stats.kstest(gaps, "expon").pvalue > 0.01
    shuffled = np.sort(np.random.default_rng(0).uniform(0, 2000, len(times)))  # a Poisson process
    fake_gaps = np.diff(np.r_[0.0, shuffled]) * (mu + alpha * b)                 # wrong model
    assert scipy.stats.kstest(fake_gaps, "expon").pvalue < 0.01


def test_hawkes_features_give_the_intensity_by_hand():
    decays = np.array([1.0, 3.0])
    times = np.array([0.0, 0.5, 1.2])
    f = rim.hawkes_features(times, 2.0, decays)
    want_excite = [sum(b * np.exp(-b * (2.0 - t)) for t in times[1:]) for b in decays]
    want_start = [b * np.exp(-b * 2.0) for b in decays]
    np.testing.assert_allclose(f, np.r_[want_excite, want_start, 1.0])
    np.testing.assert_allclose(rim.hawkes_features(np.array([]), 1.0, decays), [0, 0, 0, 0, 1])


def test_fit_hawkes_validates():
    with pytest.raises(ValueError, match="sorted"):
        rim.fit_hawkes([np.array([0.0, 2.0, 1.0])], np.array([3.0]))
    with pytest.raises(ValueError, match="decays"):
        rim.fit_hawkes([np.array([0.0, 1.0])], np.array([2.0]), decays=[-1.0])


# ----------------------------------------------------------------------------- scores and metrics
def test_item_rec_rankings_do_not_depend_on_the_intensity():
    rng = np.random.default_rng(2)
    p = rng.dirichlet(np.ones(30), size=12)
    base = rim.top_k_rows(rim.rim_scores(np.ones(12), p), 5)
    for _ in range(3):
        lam = rng.lognormal(size=12)
        np.testing.assert_array_equal(rim.top_k_rows(rim.rim_scores(lam, p), 5), base)
    with pytest.raises(ValueError, match="positive"):
        rim.rim_scores(-np.ones(12), p)


def test_metrics_on_a_hand_worked_example():
    scores = np.array([[3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    targets = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 0]]))
    m = rim.item_rec_metrics(scores, targets, k=1)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.25)
    u = rim.user_rec_metrics(scores, targets, c=1)   # columns: item 0 -> row 0 (hit), 1 -> row 0, 2 -> row 1
    assert u["precision"] == pytest.approx(1 / 3) and u["recall"] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------- matching
def test_dual_matching_reaches_the_assignment_optimum():
    rng = np.random.default_rng(3)
    for trial in range(3):
        s = rng.random((20, 20))
        rows, cols = scipy.optimize.linear_sum_assignment(s, maximize=True)
        best = s[rows, cols].sum()
        _, _, pi = rim.dual_matching(s, 1, 1, "ub", sweeps=3)
        assert (s * pi).sum() == pytest.approx(best, rel=0.01), trial
        np.testing.assert_allclose(pi.sum(1), 1.0, atol=1e-3)
        assert pi.sum(0).max() <= 1.0 + 1e-2


def test_dual_matching_lower_bound_and_online_serving():
    rng = np.random.default_rng(4)
    s = np.linspace(3, 0, 40)[None, :] + rng.random((30, 40))       # popular items first
    u, v, pi = rim.dual_matching(s, 2, 1.0, "lb", sweeps=3)
    assert (v <= 0).all() and (u >= 0).all()
    assert pi.sum(1).max() <= 2 + 1e-6                                # rows: at most k
    assert pi.sum(0).min() >= 1.0 - 1e-2                              # columns: at least c
    free = rim.serve_top_k(s, 2)
    assert (free.sum(0) > 0).sum() < 40                                # unconstrained: some items never shown
    served = rim.serve_with_prices(s, 2, v, scale=s.max())            # the prices, served afresh
    np.testing.assert_allclose(served, pi, atol=1e-4)
    _, v_ub, pi_ub = rim.dual_matching(s, 2, 3, "ub", sweeps=3)
    assert (v_ub >= 0).all() and pi_ub.sum(0).max() <= 3 + 1e-2 and pi_ub.sum(1).max() <= 2 + 1e-6
    with pytest.raises(ValueError, match="constraint"):
        rim.dual_matching(s, 2, 3, "eq")


def test_greedy_matching_respects_both_constraint_types():
    rng = np.random.default_rng(5)
    s = np.linspace(3, 0, 40)[None, :] + rng.random((30, 40))
    s[0, 0] = -np.inf                                                   # an excluded pair is never assigned
    ub = rim.greedy_matching(s, 2, 3, "ub")
    assert ub[0, 0] == 0 and ub.sum(1).max() <= 2 and ub.sum(0).max() <= 3
    assert ub.sum() == 60                                               # 30 rows x 2, room in the columns
    lb = rim.greedy_matching(s, 2, 1.0, "lb")
    # the official two stages: up to min(n k, c m) = 40 pairs with every item at least once
    assert lb[0, 0] == 0 and lb.sum(0).min() >= 1 and lb.sum() == 40
    assert rim.matching_constraints(0.5, 16, 5) == (16, 2.5, "lb")
    assert rim.matching_constraints(3, 16, 5) == (48, 5, "ub")
    report = rim.assignment_report(ub, sp.csr_matrix(np.eye(30, 40)), min_total=100)
    assert report["precision"] == pytest.approx(ub[np.arange(30), np.arange(30)].sum() / 100)


# ----------------------------------------------------------------------------- protocol and the GRU
def toy_log(n_users=40, n_items=25, seed=5):
    rng = np.random.default_rng(seed)
    user, item, time = [], [], []
    for u in range(n_users):
        n = rng.integers(6, 20)
        user += [u] * n
        item += list(rng.choice(n_items, n, replace=False))
        time += list(np.sort(rng.uniform(0, 1000, n)))
    return np.array(user), np.array(item), np.array(time)


def test_protocol_windows_and_groups():
    user, item, time = toy_log()
    train, test, valid = rim.make_protocol(user, item, time, 25, seed=0)
    assert len(test) + len(valid) == 40 and abs(len(test) - len(valid)) <= 1
    assert set(test.user).isdisjoint(valid.user)
    for states in (test, valid):
        for T, hist in zip(states.test_start, states.history_times):
            assert (hist < T).all()
        assert states.targets.shape == (len(states), 25)
    # nothing a model trains on from a test user lies at or after its T
    for u, T in zip(test.user, test.test_start):
        assert (train[u][1] < T).all()


def test_gru_predictions_are_distributions():
    user, item, time = toy_log()
    train, test, _ = rim.make_protocol(user, item, time, 25, seed=0)
    gru = rim.NextItemGRU(25, hidden_dim=16, num_layers=1).fit([s for s, _ in train], epochs=2)
    p = gru.predict(test.history_items)
    assert p.shape == (len(test), 25)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    assert np.isfinite(gru.losses).all()
    assert gru.best_epoch == int(np.argmin(gru.valid_losses))            # the best held-out epoch is kept


def test_gru_carries_its_state_across_bptt_chunks():
    """With the state carried, chunking changes the gradient steps but not the forward pass: the loss of
    an evaluation pass is the same for any chunk length (it would not be, were the state reset)."""
    user, item, time = toy_log()
    train, _, _ = rim.make_protocol(user, item, time, 25, seed=0)
    sequences = [s for s, _ in train]
    order = np.arange(len(sequences))
    short = rim.NextItemGRU(25, hidden_dim=8, num_layers=1, bptt=3, seed=1)
    long = rim.NextItemGRU(25, hidden_dim=8, num_layers=1, bptt=1000, seed=1)
    import torch
    with torch.no_grad():
        assert short._epoch(sequences, order, 16) == pytest.approx(long._epoch(sequences, order, 16), rel=1e-6)


def test_simple_intensities_and_hawkes_poisson_on_a_known_rate():
    horizon = 10.0
    states = rim.UserStates(user=np.arange(3), test_start=np.array([100.0, 100.0, 100.0]),
                            history_items=[np.array([1, 2]), np.array([3]), np.array([], int)],
                            history_times=[np.array([80.0, 95.0]), np.array([50.0]), np.array([])],
                            targets=sp.csr_matrix((3, 5)), horizon=horizon)
    np.testing.assert_allclose(rim.popularity_intensity(states), [2.01, 1.01, 0.01])
    np.testing.assert_allclose(rim.ema_intensity(states), [np.exp(-2) + np.exp(-0.5), np.exp(-5), 0.0])
    # HP recovers a rate that is a known positive combination of the Hawkes features
    rng = np.random.default_rng(6)
    n = 400
    times = [np.sort(rng.uniform(0, 100, rng.integers(2, 12))) for _ in range(n)]
    states = rim.UserStates(np.arange(n), np.full(n, 100.0), [np.zeros(len(t), int) for t in times], times,
                            sp.csr_matrix((n, 5)), horizon)
    features = rim.hawkes_states(states, np.array([0.1, 1.0]))
    true_w = np.array([0.5, 0.0, 0.2, 0.0, 0.3])
    counts = rng.poisson(features @ true_w * 20) / 20.0            # low-noise counts
    states.targets = sp.csr_matrix(np.c_[counts, np.zeros((n, 4))])
    hp = rim.HawkesPoisson(decays=(0.1, 1.0), penalty=0.0).fit(states)
    np.testing.assert_allclose(hp.intensity(states), features @ true_w, atol=0.08)
