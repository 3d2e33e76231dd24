"""Recurrent intensity modeling (RIM; Ma, Liu & Deoras, ICLR 2022): recommendation and marketing as one model.

The paper in three sentences. A recommender answers two questions with one score table: which
items to show a user (ItemRec, rank each row) and which users to target with an item (UserRec,
rank each column). A sequence model's ``p(y | x)`` ranks rows well but its columns are not
comparable across users, because it ignores *how active* each user is; RIM multiplies it by a
user-activity intensity ``lambda(x)`` from a temporal point process, which leaves every row's
ranking unchanged and fixes the columns. The same intensity scores feed a matching step that
trades relevance against item exposure under capacity constraints.

Shapes: ``n`` user-states (a user at a time ``T`` with the history before ``T``), ``m`` items.
Score tables are dense ``[n, m]`` arrays; targets are ``scipy.sparse`` CSR ``[n, m]`` counts of
the events in ``[T, T + H)``. Times are measured in units of the horizon ``H``.

Official code: github.com/awslabs/recurrent-intensity-model-experiments (package ``rime``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

from .item_cf import purchase_matrix

__all__ = [
    "HawkesModel", "HawkesPoisson", "NextItemGRU", "UserStates", "assignment_report", "dual_matching",
    "OFFICIAL_DECAYS", "ema_intensity", "fit_hawkes", "fit_hawkes_least_squares", "fit_hawkes_to_states", "greedy_matching", "hawkes_features",
    "hawkes_states", "item_rec_metrics", "least_squares_design", "make_protocol", "popularity_intensity", "rim_scores",
    "matching_constraints", "serve_top_k", "serve_with_prices", "simulate_hawkes", "top_k_rows", "user_rec_metrics",
]


# ----------------------------------------------------------------------------- the protocol
@dataclass
class UserStates:
    """A population of user-states ``x = (user, T)``.

    Attributes:
        user: ``[n]`` user index of each state.
        test_start: ``[n]`` the time ``T`` (seconds).
        history_items / history_times: per state, the items and times (seconds) before ``T``.
        targets: ``[n, m]`` CSR counts of the events in ``[T, T + H)``.
        horizon: ``H`` in seconds.
    """

    user: np.ndarray
    test_start: np.ndarray
    history_items: list[np.ndarray]
    history_times: list[np.ndarray]
    targets: sp.csr_matrix
    horizon: float

    def __len__(self) -> int:
        return len(self.user)

    def seen(self) -> sp.csr_matrix:
        """``[n, m]`` 0/1 matrix of the items in each history (excluded from recommendations)."""
        n, m = self.targets.shape
        rows = np.repeat(np.arange(n), [len(h) for h in self.history_items])
        cols = np.concatenate(self.history_items) if n else np.zeros(0, int)
        return purchase_matrix(rows, cols, n, m)


def make_protocol(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, n_items: int, *,
                  seed: int = 0, group_a_fraction: float = 0.5):
    """The paper's split (the official ``prepare_ml_1m_data``), on any event log.

    1. Keep the second half of each user's events (ties in time broken at random).
    2. ``tau`` = median over users of (last - first kept event); the horizon ``H = tau``.
    3. Half of the users (group A) are training-only in the test dataset ``D``; the others get
       ``T = t_first + tau`` and targets in ``[T, T + H)``.
    4. The validation dataset ``V`` swaps the roles: group A at ``T = t_first + tau``.

    Returns ``(train_sequences, D, V)``: ``train_sequences`` is a list of ``(items, times)``, one per
    user, holding every event a model may train on (group A: all kept events; group B: before T).
    """
    user, item, timestamp = (np.asarray(a) for a in (user, item, timestamp))
    if not (len(user) == len(item) == len(timestamp)):
        raise ValueError("user, item and timestamp must have the same length")
    if not 0.0 < group_a_fraction < 1.0:
        raise ValueError(f"group_a_fraction must lie in (0, 1), got {group_a_fraction}")
    rng = np.random.default_rng(seed)
    shuffle = rng.permutation(len(user))
    order = shuffle[np.lexsort((timestamp[shuffle], user[shuffle]))]  # by user, then time; random ties
    user, item, timestamp = user[order], item[order], timestamp[order].astype(float)
    starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
    ends = np.r_[starts[1:], len(user)]
    per_user = []
    for s, e in zip(starts, ends):
        n_events = e - s
        rank_pct = np.arange(1, n_events + 1) / n_events  # pandas rank(method="first", pct=True)
        keep = np.arange(s, e)[rank_pct >= 0.5]
        per_user.append((int(user[s]), item[keep], timestamp[keep]))
    spans = np.array([t[-1] - t[0] for _, _, t in per_user])
    tau = float(np.median(spans))
    if tau <= 0:
        raise ValueError("the median activity span is zero: not enough events per user")
    group_a = np.zeros(len(per_user), bool)
    group_a[rng.choice(len(per_user), int(round(group_a_fraction * len(per_user))), replace=False)] = True

    def states(members: np.ndarray) -> UserStates:
        rows, hist_i, hist_t, t_start, tgt_r, tgt_c = [], [], [], [], [], []
        for idx in np.flatnonzero(members):
            u, its, ts = per_user[idx]
            t = ts[0] + tau
            before, window = ts < t, (ts >= t) & (ts < t + tau)
            state = len(rows)
            rows.append(u)
            t_start.append(t)
            hist_i.append(its[before])
            hist_t.append(ts[before])
            tgt_r += [state] * int(window.sum())
            tgt_c += list(its[window])
        targets = sp.csr_matrix((np.ones(len(tgt_r)), (tgt_r, tgt_c)), shape=(len(rows), n_items))
        return UserStates(np.array(rows), np.array(t_start), hist_i, hist_t, targets, tau)

    test, valid = states(~group_a), states(group_a)
    train_sequences = []
    for idx, (u, its, ts) in enumerate(per_user):
        if group_a[idx]:
            train_sequences.append((its, ts))
        else:
            cut = ts < ts[0] + tau
            train_sequences.append((its[cut], ts[cut]))
    return train_sequences, test, valid


# ----------------------------------------------------------------------------- intensities
def popularity_intensity(states: UserStates) -> np.ndarray:
    """``lambda(x)`` = history length + 0.01 (the paper's "Pop" user intensity). ``[n]``."""
    return np.array([len(h) for h in states.history_items], float) + 0.01


def ema_intensity(states: UserStates) -> np.ndarray:
    """``lambda(x) = sum_i exp(-(T - t_i) / H)``, an exponential moving average of past events. ``[n]``."""
    return np.array([np.exp(-(T - t) / states.horizon).sum()
                     for T, t in zip(states.test_start, states.history_times)])


def hawkes_features(times: np.ndarray, end: float, decays: np.ndarray) -> np.ndarray:
    """The Hawkes state at time ``end`` for one user whose events happened at ``times`` (sorted,
    in horizon units; the first event is the *start* event).

    Returns ``[2K + 1]``: ``[sum_{i>=2} b_k exp(-b_k (end - t_i))]_k``, ``[b_k exp(-b_k (end - t_1))]_k``
    and 1, so that ``lambda(end) = features @ [a, c, mu]``.
    """
    decays = np.asarray(decays, float)
    times = np.asarray(times, float)
    if len(times) == 0:
        return np.r_[np.zeros(2 * len(decays)), 1.0]
    excite = (decays[:, None] * np.exp(-decays[:, None] * (end - times[None, 1:]))).sum(1)
    start = decays * np.exp(-decays * (end - times[0]))
    return np.r_[excite, start, 1.0]


def _event_design(sequences: list[np.ndarray], ends: np.ndarray, decays: np.ndarray):
    """For penalised MLE: ``H`` [n_events, 2K+1] (the state just before each event i >= 2) and
    ``G`` [2K+1], the integral of the features over every observation window."""
    k = len(decays)
    rows, compensator = [], np.zeros(2 * k + 1)
    for times, end in zip(sequences, ends):
        if len(times) == 0:
            continue
        t1 = times[0]
        # recursive sum over previous excitation events (i >= 2): r_k(i) = sum_{2<=j<i} b e^{-b(t_i - t_j)}
        running = np.zeros(k)
        for i in range(1, len(times)):
            if i >= 2:
                running = running * np.exp(-decays * (times[i] - times[i - 1])) + decays * np.exp(
                    -decays * (times[i] - times[i - 1]))
            start = decays * np.exp(-decays * (times[i] - t1))
            rows.append(np.r_[running, start, 1.0])
        compensator[:k] += (1.0 - np.exp(-decays[:, None] * (end - times[None, 1:]))).sum(1)
        compensator[k:2 * k] += 1.0 - np.exp(-decays * (end - t1))
        compensator[2 * k] += end - t1
    design = np.array(rows) if rows else np.zeros((0, 2 * k + 1))
    return design, compensator


@dataclass
class HawkesModel:
    """A fitted Hawkes user intensity: ``lambda(t) = mu + sum_k a_k (excitation)_k + sum_k c_k (start)_k``."""

    decays: np.ndarray
    excitation: np.ndarray   # a_k
    start: np.ndarray        # c_k
    baseline: float          # mu
    negative_log_likelihood: float

    @property
    def coefficients(self) -> np.ndarray:
        return np.r_[self.excitation, self.start, self.baseline]

    def intensity(self, states: UserStates) -> np.ndarray:
        """``lambda(x)`` at each state's ``T`` (events per horizon). ``[n]``."""
        return hawkes_states(states, self.decays) @ self.coefficients


def fit_hawkes_to_states(states: UserStates, decays=None, *, method: str = "least-squares", **kwargs) -> HawkesModel:
    """Fit the Hawkes intensity on the histories of ``states``, each observed from its first event
    to its ``T`` (the official ``Hawkes.fit``: test users' pasts, nothing at or after ``T``).

    ``method="least-squares"`` is the official fit (:func:`fit_hawkes_least_squares`, default decays
    :data:`OFFICIAL_DECAYS`); ``"likelihood"`` is penalised maximum likelihood (:func:`fit_hawkes`,
    default decays 0.01, 0.1, 1, 10 per horizon), this book's earlier choice.
    """
    h = states.horizon
    if method == "least-squares":
        pairs = [(t / h, T / h) for T, t in zip(states.test_start, states.history_times) if len(t) >= 1]
        decays = OFFICIAL_DECAYS if decays is None else decays
        return fit_hawkes_least_squares([t for t, _ in pairs], np.array([e for _, e in pairs]), decays, **kwargs)
    if method == "likelihood":
        pairs = [(t / h, T / h) for T, t in zip(states.test_start, states.history_times) if len(t) >= 2]
        decays = (0.01, 0.1, 1.0, 10.0) if decays is None else decays
        return fit_hawkes([t for t, _ in pairs], np.array([e for _, e in pairs]), decays, **kwargs)
    raise ValueError(f"method must be 'least-squares' or 'likelihood', got {method!r}")


def hawkes_states(states: UserStates, decays: np.ndarray) -> np.ndarray:
    """``[n, 2K+1]`` Hawkes features of every state at its ``T``, times in horizon units."""
    h = states.horizon
    return np.array([hawkes_features(t / h, T / h, decays)
                     for T, t in zip(states.test_start, states.history_times)])


def hawkes_negative_log_likelihood(theta: np.ndarray, design: np.ndarray, compensator: np.ndarray,
                                   penalty: float = 0.0):
    """``-sum_i log(theta . h_i) + theta . G + penalty/2 ||theta||^2`` and its gradient (convex)."""
    rate = design @ theta
    if np.any(rate <= 0):
        return np.inf, np.zeros_like(theta)
    value = -np.log(rate).sum() + compensator @ theta + 0.5 * penalty * theta @ theta
    grad = -(design / rate[:, None]).sum(0) + compensator + penalty * theta
    return value, grad


def fit_hawkes(sequences: list[np.ndarray], ends: np.ndarray, decays=(0.01, 0.1, 1.0, 10.0), *,
               penalty: float = 1e-3, start_channel: bool = True) -> HawkesModel:
    """Penalised maximum likelihood for a sum-of-exponentials Hawkes process (scipy L-BFGS-B).

    ``sequences``: per user the sorted event times, in horizon units; ``ends``: the end of each
    observation window. The first event of each user is a *start* event: it does not count as an
    outcome and excites through its own channel (``start_channel``). All coefficients are >= 0.
    """
    decays = np.asarray(decays, float)
    if np.any(decays <= 0):
        raise ValueError("decays must be positive")
    if len(sequences) != len(ends):
        raise ValueError("sequences and ends must have the same length")
    for times, end in zip(sequences, ends):
        if len(times) and (np.any(np.diff(times) < 0) or end < times[-1]):
            raise ValueError("each sequence must be sorted and end no earlier than its last event")
    design, compensator = _event_design(sequences, np.asarray(ends, float), decays)
    if len(design) == 0:
        raise ValueError("no events after the start events: nothing to fit")
    k = len(decays)
    bounds = [(0.0, None)] * (2 * k) + [(1e-8, None)]
    if not start_channel:
        bounds[k:2 * k] = [(0.0, 0.0)] * k
    theta0 = np.r_[np.full(k, 0.1 / k), np.zeros(k) if not start_channel else np.full(k, 0.1 / k),
                   len(design) / max(compensator[-1], 1e-8)]
    result = scipy.optimize.minimize(hawkes_negative_log_likelihood, theta0, args=(design, compensator, penalty),
                                     jac=True, method="L-BFGS-B", bounds=bounds)
    theta = result.x
    return HawkesModel(decays, theta[:k], theta[k:2 * k], float(theta[-1]), float(result.fun))


def simulate_hawkes(baseline: float, alpha: float, decay: float, end: float, seed: int = 0) -> np.ndarray:
    """Ogata's thinning for ``lambda(t) = mu + sum_{t_i < t} alpha b exp(-b (t - t_i))``; event times on [0, end)."""
    if not 0 <= alpha < 1:
        raise ValueError("alpha (the branching ratio) must lie in [0, 1) for a stationary process")
    rng = np.random.default_rng(seed)
    t, excitation, events = 0.0, 0.0, []
    while True:
        bound = baseline + excitation  # intensity only decays until the next event
        w = rng.exponential(1.0 / bound)
        t_new = t + w
        if t_new >= end:
            return np.array(events)
        excitation *= math.exp(-decay * w)
        t = t_new
        if rng.random() * bound <= baseline + excitation:
            events.append(t)
            excitation += alpha * decay


# The official Hawkes fit (``rime.models.hawkes`` at the paper's time, 2022-02): tick's
# ``HawkesSumExpKern(1 / np.logspace(-6, 1), C=1e3)``, i.e. 50 decays from 0.1 to 1e6 per horizon, the
# least-squares contrast, a ridge penalty of strength 1 / C and non-negative coefficients.
OFFICIAL_DECAYS = 1.0 / np.logspace(-6, 1, 50)


def least_squares_design(sequences: list[np.ndarray], ends: np.ndarray, decays: np.ndarray):
    """The sufficient statistics of the least-squares contrast of ``lambda(t) = h(t) . theta``.

    For each sequence (sorted times in horizon units; the first is the *start* event at ``t_1``) observed
    until ``end``, with ``h(t) = [sum_{i>=2, t_i<t} b_k e^{-b_k (t - t_i)}]_k ++ [b_k e^{-b_k (t - t_1)}]_k ++ [1]``:

    - ``gram`` ``[2K+1, 2K+1]`` = ``sum_u integral_{t_1}^{end} h(t) h(t)^T dt`` (closed form, O(n K^2) per sequence
      through the recursion ``A_k(j) = 1 + e^{-b_k (s_j - s_{j-1})} A_k(j-1)``),
    - ``linear`` ``[2K+1]`` = ``sum_u sum_{i>=2} h(t_i)``, with only *strictly* earlier events exciting an event
      (tied timestamps do not excite each other, as in tick),
    - ``n_jumps``: the number of events tick normalises by (per sequence, the events i >= 2 plus the two
      control events the official code adds: the start and the end of the window).

    The contrast is ``(theta^T gram theta - 2 linear . theta) / n_jumps`` = ``(integral lambda^2 - 2 sum_i lambda(t_i)) / n_jumps``.
    """
    decays = np.asarray(decays, float)
    k = len(decays)
    pair_sum = decays[:, None] + decays[None, :]
    pair_coef = decays[:, None] * decays[None, :] / pair_sum                      # b_k b_l / (b_k + b_l)
    gram = np.zeros((2 * k + 1, 2 * k + 1))
    linear = np.zeros(2 * k + 1)
    n_jumps = 0
    ex, st, one = slice(0, k), slice(k, 2 * k), 2 * k
    if np.any(decays <= 0):
        raise ValueError("decays must be positive")
    for times, end in zip(sequences, ends):
        times = np.asarray(times, float)
        if len(times) == 0:
            continue
        if np.any(np.diff(times) < 0):
            raise ValueError("each sequence's times must be sorted")
        length = float(end) - times[0]
        if length < 0 or (len(times) > 1 and times[-1] > end):
            raise ValueError("every event must lie before the end of its window")
        s = times[1:] - times[0]                                                     # excitation events
        n_jumps += len(s) + 2
        # baseline and start channel alone
        gram[one, one] += length
        start_mass = 1.0 - np.exp(-decays * length)
        gram[one, st] += start_mass
        gram[st, one] += start_mass
        gram[st, st] += pair_coef * (1.0 - np.exp(-pair_sum * length))
        linear[one] += len(s)
        if len(s) == 0:
            continue
        # A_k(j) = sum_{j' <= j} e^{-b_k (s_j - s_j')}; strictly-earlier sums for the events' own intensity
        gaps = np.diff(s, prepend=s[0])
        a = np.empty((len(s), k))
        running = np.zeros(k)
        for j in range(len(s)):
            running = 1.0 + np.exp(-decays * gaps[j]) * running if j else np.ones(k)
            a[j] = running
        # strictly earlier: subtract the events tied with s_j (those before j in the array, and j itself)
        first_of_tie = np.searchsorted(s, s, side="left")
        tied_before = np.arange(len(s)) - first_of_tie                               # tied events before j
        linear[ex] += (decays[None, :] * (a - 1.0 - tied_before[:, None])).sum(0)
        linear[st] += (decays[None, :] * np.exp(-decays[None, :] * s[:, None]) * (s[:, None] > 0)).sum(0)
        remaining = length - s                                                       # [n]
        mass = 1.0 - np.exp(-decays[None, :] * remaining[:, None])
        gram[one, ex] += mass.sum(0)
        gram[ex, one] += mass.sum(0)
        for lo in range(0, len(s), 512):                                              # [chunk, K, K] at a time
            r = remaining[lo:lo + 512, None, None]
            w = 1.0 - np.exp(-pair_sum[None] * r)
            aa = a[lo:lo + 512]
            gg = (w * (aa[:, None, :] + aa[:, :, None] - 1.0)).sum(0) * pair_coef      # integral g_k g_l
            gram[ex, ex] += gg
            gs = (w * np.exp(-decays[None, None, :] * s[lo:lo + 512, None, None])).sum(0) * pair_coef
            gram[ex, st] += gs                                                       # integral g_k start_l
            gram[st, ex] += gs.T
    return gram, linear, n_jumps


def fit_hawkes_least_squares(sequences: list[np.ndarray], ends: np.ndarray, decays=OFFICIAL_DECAYS, *,
                             penalty: float = 1e-3) -> HawkesModel:
    """The official fit: minimise ``contrast(theta) + penalty / 2 ||theta||^2`` over ``theta = (a, c, mu) >= 0``.

    tick solves it with accelerated gradient descent (1,000 iterations); the problem is a strictly convex
    quadratic with bounds, which scipy's L-BFGS-B solves to convergence. ``negative_log_likelihood`` of
    the returned model holds the penalised contrast at the optimum.
    """
    ends = np.asarray(ends, float)
    if len(sequences) != len(ends):
        raise ValueError(f"got {len(sequences)} sequences but {len(ends)} end times")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0, got {penalty}")
    decays = np.asarray(decays, float)
    gram, linear, n_jumps = least_squares_design(sequences, ends, decays)
    if n_jumps == 0:
        raise ValueError("no events to fit")

    def objective(theta):
        g = gram @ theta
        value = (theta @ g - 2.0 * linear @ theta) / n_jumps + 0.5 * penalty * theta @ theta
        return value, (2.0 * g - 2.0 * linear) / n_jumps + penalty * theta

    result = scipy.optimize.minimize(objective, np.ones(len(linear)), jac=True, method="L-BFGS-B",
                                     bounds=[(0.0, None)] * len(linear),
                                     options={"maxiter": 5000, "ftol": 1e-15, "gtol": 1e-12})
    k = len(decays)
    theta = result.x
    return HawkesModel(decays, theta[:k], theta[k:2 * k], float(theta[-1]), float(result.fun))


class HawkesPoisson:
    """HP: ``lambda(x) = h(x) . softplus(w)`` with the Hawkes features ``h`` at ``T``, fitted by
    Poisson regression on the event counts of a validation window (the official ``HawkesPoisson``)."""

    def __init__(self, decays=OFFICIAL_DECAYS, penalty: float = 1e-3):
        self.decays = np.asarray(decays, float)
        self.penalty = penalty
        self.weights: np.ndarray | None = None

    @staticmethod
    def _loss(x, features, counts, penalty):
        w = np.logaddexp(0.0, x)           # softplus
        rate = features @ w
        value = -np.mean(counts * np.log(1e-10 + rate) - rate) + 0.5 * penalty * (w @ w)
        d_rate = -(counts / (1e-10 + rate) - 1.0) / len(counts)
        grad_w = features.T @ d_rate + penalty * w
        return value, grad_w / (1.0 + np.exp(-x))   # chain rule through softplus

    def fit(self, states: UserStates) -> "HawkesPoisson":
        features = hawkes_states(states, self.decays)
        counts = np.asarray(states.targets.sum(axis=1)).ravel()
        result = scipy.optimize.minimize(self._loss, np.zeros(features.shape[1]),
                                         args=(features, counts, self.penalty), jac=True, method="L-BFGS-B")
        self.weights = np.logaddexp(0.0, result.x)
        return self

    def intensity(self, states: UserStates) -> np.ndarray:
        if self.weights is None:
            raise RuntimeError("call fit(validation_states) first")
        return hawkes_states(states, self.decays) @ self.weights


# ----------------------------------------------------------------------------- p(y | x): a GRU
class NextItemGRU:
    """GRU4Rec-style next-item model (the official ``rnn.py``): item embedding -> 2-layer GRU -> logits
    through the *tied* embedding matrix; trained with next-item cross-entropy.

    ``fit(sequences)`` takes per-user item arrays; ``predict(histories)`` returns ``p(y | x)``
    ``[n, m]`` (softmax rows that sum to 1). Index ``m`` is the begin-of-sequence token. Both read
    each sequence's last ``max_length`` items (official: 256) after the begin-of-sequence token.
    """

    def __init__(self, n_items: int, hidden_dim: int = 128, num_layers: int = 2, max_length: int = 256,
                 bptt: int = 32, seed: int = 0):
        if bptt < 1 or max_length < 1:
            raise ValueError(f"bptt and max_length must be >= 1, got {bptt} and {max_length}")
        torch.manual_seed(seed)
        self.n_items, self.max_length, self.bptt = n_items, max_length, bptt
        self.embedding = nn.Embedding(n_items + 1, hidden_dim)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)          # the official init_weights
        self.gru = nn.GRU(hidden_dim, hidden_dim, num_layers, batch_first=True)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.parameters = list(self.embedding.parameters()) + list(self.gru.parameters()) + [self.output_bias]
        self.losses: list[float] = []
        self.valid_losses: list[float] = []
        self.best_epoch: int | None = None

    def _batch(self, sequences):
        seqs = [np.r_[self.n_items, np.asarray(s, int)[-self.max_length:]] for s in sequences]  # BOS + history
        width = max(len(s) for s in seqs)
        inputs = np.full((len(seqs), width), self.n_items)
        lengths = np.array([len(s) for s in seqs])
        for r, s in enumerate(seqs):
            inputs[r, :len(s)] = s
        return torch.as_tensor(inputs), torch.as_tensor(lengths)

    def _logits(self, hidden):
        return hidden @ self.embedding.weight[: self.n_items].T + self.output_bias

    def _epoch(self, sequences, order, batch_size, optimizer=None) -> float:
        """One pass in batches of ``batch_size`` sequences; with an optimizer, one step per ``bptt`` chunk,
        the hidden state carried (detached) from chunk to chunk. Returns the mean loss per target."""
        total, count = 0.0, 0
        for start in range(0, len(order), batch_size):
            inputs, lengths = self._batch([sequences[i] for i in order[start:start + batch_size]])
            targets = torch.full_like(inputs, -100)
            targets[:, :-1] = inputs[:, 1:]
            targets[torch.arange(inputs.shape[1])[None, :] >= (lengths[:, None] - 1)] = -100   # padding
            hidden = None
            for lo in range(0, inputs.shape[1] - 1, self.bptt):
                x, y = inputs[:, lo:lo + self.bptt], targets[:, lo:lo + self.bptt]
                out, hidden = self.gru(self.embedding(x), hidden)
                n_targets = int((y != -100).sum())
                if n_targets == 0:
                    hidden = hidden.detach()
                    continue
                loss = F.cross_entropy(self._logits(out).reshape(-1, self.n_items), y.reshape(-1),
                                       ignore_index=-100, reduction="sum")
                if optimizer is not None:
                    optimizer.zero_grad()
                    (loss / n_targets).backward()
                    optimizer.step()
                hidden = hidden.detach()
                total, count = total + loss.item(), count + n_targets
        return total / max(count, 1)

    def fit(self, sequences, *, epochs: int = 20, batch_size: int = 64, lr: float = 0.1, valid_fraction: float = 0.2,
            patience: int = 4, seed: int = 0, progress: bool = False) -> "NextItemGRU":
        """The official training (``rime.models.rnn`` at the paper's time): a random ``valid_fraction`` of the
        sequences is held out; Adagrad (``lr``, eps 1e-3) on truncated back-propagation through time
        (``bptt`` steps, the state carried); the learning rate drops 4x after ``patience`` epochs without a
        better held-out loss, going back to the best weights; at the end the best held-out epoch's weights
        are kept (``best_epoch``, ``valid_losses``)."""
        if not 0.0 < valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must lie in (0, 1), got {valid_fraction}")
        sequences = [np.asarray(x, int) for x in sequences if len(x) > 0]
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(sequences))
        n_train = len(sequences) * round(100 * (1 - valid_fraction)) // 100     # official: N * 4 // 5
        train, valid = perm[:n_train], perm[n_train:]
        optimizer = torch.optim.Adagrad(self.parameters, lr=lr, eps=1e-3)
        best, best_state, bad = math.inf, None, 0
        iterator = range(epochs)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="GRU epochs")
        for epoch in iterator:
            self.losses.append(self._epoch(sequences, rng.permutation(train), batch_size, optimizer))
            with torch.no_grad():
                self.valid_losses.append(self._epoch(sequences, valid, 256))
            if self.valid_losses[-1] < best:
                best, bad, self.best_epoch = self.valid_losses[-1], 0, epoch
                best_state = [p.detach().clone() for p in self.parameters]
            else:
                bad += 1
                if bad > patience:           # ReduceLROnPlateau(factor=0.25, patience) with the best weights back
                    for group in optimizer.param_groups:
                        group["lr"] *= 0.25
                    self._load(best_state)
                    bad = 0
        self._load(best_state)
        return self

    def _load(self, state):
        with torch.no_grad():
            for p, value in zip(self.parameters, state):
                p.copy_(value)

    def predict(self, histories, batch_size: int = 256) -> np.ndarray:
        """``p(y | x)`` for each history (item arrays): ``[n, m]``, rows sum to 1."""

        out = []
        with torch.no_grad():
            for start in range(0, len(histories), batch_size):
                inputs, lengths = self._batch(histories[start:start + batch_size])
                hidden, _ = self.gru(self.embedding(inputs))
                last = hidden[torch.arange(len(lengths)), lengths - 1]
                out.append(torch.softmax(self._logits(last), dim=1).numpy())
        return np.vstack(out) if out else np.zeros((0, self.n_items))


# ----------------------------------------------------------------------------- scores and metrics
def rim_scores(intensity: np.ndarray, p_item: np.ndarray, seen: sp.spmatrix | None = None) -> np.ndarray:
    """The RIM score ``lambda(x) p(y | x)``: ``[n]`` x ``[n, m]`` -> ``[n, m]``; items in ``seen`` get -inf."""
    intensity, p_item = np.asarray(intensity, float), np.asarray(p_item, float)
    if intensity.ndim != 1 or p_item.ndim != 2 or len(intensity) != p_item.shape[0]:
        raise ValueError(f"intensity [n] and p_item [n, m] must agree, got {intensity.shape} and {p_item.shape}")
    if np.any(intensity <= 0):
        raise ValueError("intensities must be positive")
    scores = intensity[:, None] * p_item
    if seen is not None:
        scores = np.where(sp.csr_matrix(seen).toarray() > 0, -np.inf, scores)
    return scores


def top_k_rows(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` best columns of each row, best first (ties to the lower index). ``[n, k]``."""
    if not 1 <= k <= scores.shape[1]:
        raise ValueError(f"k must be in [1, {scores.shape[1]}], got {k}")
    order = np.argsort(-scores, axis=1, kind="stable")
    return order[:, :k]


def item_rec_metrics(scores: np.ndarray, targets: sp.spmatrix, k: int) -> dict[str, float]:
    """ItemRec: top ``k`` items per state. precision = hits / (k n) (micro); recall = mean over rows of
    hits / max(1, |targets of the row|)."""
    relevant = (sp.csr_matrix(targets) > 0).toarray()
    hits = np.take_along_axis(relevant, top_k_rows(scores, k), axis=1)
    n_targets = relevant.sum(axis=1)
    return {"precision": float(hits.mean()), "recall": float(np.mean(hits.sum(1) / np.maximum(1, n_targets)))}


def user_rec_metrics(scores: np.ndarray, targets: sp.spmatrix, c: int) -> dict[str, float]:
    """UserRec (marketing): top ``c`` states per item, the same definitions on the columns."""
    return item_rec_metrics(scores.T, sp.csr_matrix(targets).T, c)


# ----------------------------------------------------------------------------- matching
# The official matching (``rime.Experiment._mtch_update``, ``metrics/cvx.py``, ``metrics/matching.py`` at the
# paper's time). A multiplier ``m`` sets the constraints: for ``m < 1`` ("lb") every user gets at most ``k``
# items and every item at least ``m C`` users (a minimum exposure); for ``m >= 1`` ("ub") every user gets at
# most ``m k`` items and every item at most ``C`` users. m = 0 is plain ItemRec, a large m plain UserRec.
def matching_constraints(multiplier: float, k: int, c: int) -> tuple[float, float, str]:
    """``(row cap, column bound, "ub" | "lb")`` of the official sweep for one multiplier."""
    if multiplier < 0:
        raise ValueError(f"the multiplier must be >= 0, got {multiplier}")
    return (k, c * multiplier, "lb") if multiplier < 1 else (k * multiplier, c, "ub")


def _scale_scores(scores: np.ndarray, scale: float | None = None) -> np.ndarray:
    """Scores divided by ``scale`` (default: their largest finite value), the scale of the dual prices;
    excluded pairs (-inf) become -20, which keeps bisection brackets finite and their weight 0."""
    s = np.asarray(scores, float)
    finite = np.isfinite(s)
    scale = float(np.abs(s[finite]).max() or 1.0) if scale is None else float(scale)
    return np.where(finite, s / scale, -20.0)


def _solve_shift(scores, target, eps: float, sign: int, guess=None, width: float = 0.0, tol: float = 1e-3):
    """Per row of ``scores`` ``[rows, cols]`` (float64 torch), the shift ``x`` with ``sum_y sigmoid((s - x) / eps)``
    equal to ``target`` (a float or ``[rows]``), clipped to ``x >= 0`` (``sign = +1``: the row sum is an upper
    bound) or ``x <= 0`` (``sign = -1``: a lower bound). Bisection until the bracket is below ``tol * eps``.
    """
    rows, cols = scores.shape
    target = torch.as_tensor(target, dtype=scores.dtype).expand(rows).clone()

    def excess(x):
        return torch.sigmoid((scores - x[:, None]) / eps).sum(1) - target

    zero = torch.zeros(rows, dtype=scores.dtype)
    at_zero = excess(zero)
    active = at_zero > 0 if sign > 0 else at_zero < 0          # rows whose bound binds at x = 0
    feasible = (target > 0) & (target < cols)
    active &= feasible
    out = zero.clone()
    if sign < 0:
        out = torch.where(target >= cols, torch.full_like(out, -math.inf), out)   # cannot be met: give all
    if not bool(active.any()):
        return out
    s = scores[active]
    t = target[active]
    ratio = (t / cols).clamp(1e-12, 1 - 1e-12)
    margin = eps * (torch.log(1 - ratio) - torch.log(ratio)).abs() + eps
    if sign > 0:
        lo, hi = torch.zeros_like(t), s.amax(1) + margin + 1.0
    else:
        lo, hi = s.amin(1) - margin - 1.0, torch.zeros_like(t)
    if guess is not None and width > 0:
        g = guess[active]
        lo_try = torch.clamp(g - width, min=0.0) if sign > 0 else g - width
        hi_try = g + width if sign > 0 else torch.clamp(g + width, max=0.0)
        sub_excess = lambda x: torch.sigmoid((s - x[:, None]) / eps).sum(1) - t   # noqa: E731
        lo = torch.where(sub_excess(lo_try) > 0, torch.maximum(lo_try, lo), lo)
        hi = torch.where(sub_excess(hi_try) <= 0, torch.minimum(hi_try, hi), hi)
    for _ in range(200):
        if float((hi - lo).max()) <= tol * eps:
            break
        mid = 0.5 * (lo + hi)
        too_many = torch.sigmoid((s - mid[:, None]) / eps).sum(1) > t
        lo = torch.where(too_many, mid, lo)
        hi = torch.where(too_many, hi, mid)
    out[active] = 0.5 * (lo + hi)
    return out


def dual_matching(scores: np.ndarray, k: float, c: float, constraint: str = "ub", *, min_epsilon: float = 1e-10,
                  steps: int = 100, sweeps: int = 1, scale: float | None = None):
    """The official CVX matching: ``max_pi sum s pi + eps H(pi)`` s.t. every row at most ``k`` and every
    column at most (``"ub"``) or at least (``"lb"``) ``c``.

    The dual gives ``pi = sigmoid((s - u_x - v_y) / eps)`` with ``u >= 0`` and ``v >= 0`` ("ub") or
    ``v <= 0`` ("lb"); ``eps`` is annealed geometrically from 1 to ``min_epsilon`` over ``steps`` epochs,
    and in each epoch ``u`` is solved row by row and then ``v`` column by column. (The official code takes
    an SGD step on ``v`` per mini-batch of users; with one batch, as at this size, its step equals the
    column solve; ``sweeps > 1`` alternates more often per epoch.) The rows are solved once more at the
    final ``eps``, so every row meets its bound as served. Scores are divided by their maximum (or by
    ``scale``) first. Computed in float64 (torch).

    Returns ``(u [n], v [m], pi [n, m])`` as numpy arrays, ``v`` on the normalised score scale (serve new
    users with :func:`serve_with_prices`).
    """
    if constraint not in ("ub", "lb"):
        raise ValueError(f"constraint must be 'ub' or 'lb', got {constraint!r}")
    s_np = _scale_scores(scores, scale)
    n, m = s_np.shape
    if not k > 0:
        raise ValueError(f"k must be > 0, got {k}")
    if constraint == "ub" and c <= 0:
        raise ValueError(f"an upper bound c must be > 0, got {c}")
    s = torch.as_tensor(s_np, dtype=torch.float64)
    sign_v = 1 if constraint == "ub" else -1
    u = v = None
    previous = None
    for eps in np.geomspace(1.0, min_epsilon, steps + 1)[1:]:
        eps = float(eps)
        width = 20.0 * previous if previous is not None else 0.0
        base_v = v if v is not None else torch.zeros(m, dtype=torch.float64)
        for _ in range(sweeps):
            u = _solve_shift(s - base_v[None, :], k, eps, +1, guess=u, width=width)
            v = _solve_shift((s - u[:, None]).T, c, eps, sign_v, guess=v, width=width)
            base_v = v
        previous = eps
    v_finite = torch.where(torch.isfinite(v), v, torch.full_like(v, -1e6))
    u = _solve_shift(s - v_finite[None, :], k, float(min_epsilon), +1, guess=u, width=20.0 * previous)
    pi = torch.sigmoid((s - u[:, None] - v_finite[None, :]) / float(min_epsilon))   # = serve_with_prices
    return u.numpy(), v_finite.numpy(), pi.numpy()


def serve_with_prices(scores: np.ndarray, k: float, prices: np.ndarray, *, scale: float,
                      epsilon: float = 1e-10) -> np.ndarray:
    """Online serving (the official ``CVX.transform``): scores divided by ``scale`` (the population the
    prices were fitted on), then per row ``u >= 0`` solved for at most ``k`` items given the item prices
    ``v``. Returns ``pi`` ``[n, m]`` (0/1 up to ties at ``epsilon``)."""
    s = torch.as_tensor(_scale_scores(scores, scale), dtype=torch.float64)
    v = torch.as_tensor(np.asarray(prices, float), dtype=torch.float64)
    u = _solve_shift(s - v[None, :], k, epsilon, +1)
    return torch.sigmoid((s - u[:, None] - v[None, :]) / epsilon).numpy()


def serve_top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Each row's top ``k`` (no constraint): a 0/1 ``[n, m]`` assignment."""
    chosen = top_k_rows(np.asarray(scores, float), k)
    out = np.zeros(np.shape(scores))
    np.put_along_axis(out, chosen, 1.0, axis=1)
    return out


def _greedy(order_rows, order_cols, row_cap, col_cap, blocked=None):
    out = np.zeros((len(row_cap), len(col_cap)))
    row_left, col_left = row_cap.astype(np.int64).copy(), col_cap.astype(np.int64).copy()
    for r, c in zip(order_rows, order_cols):
        if row_left[r] > 0 and col_left[c] > 0 and (blocked is None or not blocked[r, c]):
            out[r, c] = 1.0
            row_left[r] -= 1
            col_left[c] -= 1
    return out


def greedy_matching(scores: np.ndarray, k: float, c: float, constraint: str = "ub") -> np.ndarray:
    """The official greedy matcher (``assign_mtch``): visit pairs by decreasing score and assign while the
    row and the column have room. ``"ub"``: rows at most ``k``, columns at most ``c``. ``"lb"``: first
    every item up to its minimum share (rows at most ``ceil(total / n)``, columns at most ``c``, with
    ``total = min(n k, c m)``), then the rows are filled up to ``k`` with the columns unbounded. Pairs
    with score -inf are never assigned. Returns a 0/1 ``[n, m]`` assignment."""
    if constraint not in ("ub", "lb"):
        raise ValueError(f"constraint must be 'ub' or 'lb', got {constraint!r}")
    s = np.asarray(scores, float)
    n, m = s.shape
    order = np.argsort(-s, axis=None, kind="stable")
    order = order[np.isfinite(s.ravel()[order])]
    rows, cols = np.unravel_index(order, s.shape)
    if constraint == "ub":
        return _greedy(rows, cols, np.full(n, k), np.full(m, c))
    total = min(n * k, c * m)
    min_k = min(k, math.ceil(total / n))
    min_c = min(c, math.ceil(total / m))
    first = _greedy(rows, cols, np.full(n, min_k), np.full(m, min_c))
    if k > min_k:
        rest = _greedy(rows, cols, k - first.sum(1), np.full(m, n), blocked=first > 0)
    else:
        rest = _greedy(rows, cols, np.full(n, m), c - first.sum(0), blocked=first > 0)
    return first + rest


def assignment_report(assignment: np.ndarray, targets: sp.spmatrix, min_total: float = 0.0) -> dict[str, float]:
    """The official ``evaluate_assigned``: precision = hits / max(``min_total``, assignments), item
    coverage, and the perplexity of the item exposure (``exp`` of its entropy)."""
    assignment = np.asarray(assignment, float)
    hits = float((assignment * (sp.csr_matrix(targets) > 0).toarray()).sum())
    exposure = assignment.sum(0)
    share = exposure / max(exposure.sum(), 1e-300)
    nz = share[share > 0]
    return {"precision": hits / max(min_total, assignment.sum(), 1e-300), "coverage": float((exposure > 0.5).mean()),
            "perplexity": float(np.exp(-(nz * np.log(nz)).sum())), "recs per user": float(assignment.sum() / len(assignment))}
