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
    "ema_intensity", "fit_hawkes", "fit_hawkes_to_states", "greedy_matching", "hawkes_features",
    "hawkes_states", "item_rec_metrics", "make_protocol", "popularity_intensity", "rim_scores",
    "serve_top_k", "simulate_hawkes", "top_k_rows", "user_rec_metrics",
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


def fit_hawkes_to_states(states: UserStates, decays=(0.01, 0.1, 1.0, 10.0), **kwargs) -> HawkesModel:
    """Fit the Hawkes intensity on the histories of ``states``, each observed from its first event
    to its ``T`` (the official ``Hawkes.fit``: test users' pasts, nothing at or after ``T``)."""
    h = states.horizon
    pairs = [(t / h, T / h) for T, t in zip(states.test_start, states.history_times) if len(t) >= 2]
    return fit_hawkes([t for t, _ in pairs], np.array([e for _, e in pairs]), decays, **kwargs)


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


class HawkesPoisson:
    """HP: ``lambda(x) = h(x) . softplus(w)`` with the Hawkes features ``h`` at ``T``, fitted by
    Poisson regression on the event counts of a validation window (the official ``HawkesPoisson``)."""

    def __init__(self, decays=(0.01, 0.1, 1.0, 10.0), penalty: float = 1e-3):
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
    ``[n, m]`` (softmax rows that sum to 1). Index ``m`` is the begin-of-sequence token.
    Training cuts each sequence into windows of ``window`` steps (truncated back-propagation
    through time; every event is a target once); prediction reads the last ``max_length`` items.
    """

    def __init__(self, n_items: int, hidden_dim: int = 128, num_layers: int = 2, max_length: int = 256,
                 window: int = 32, seed: int = 0):
        torch.manual_seed(seed)
        self.n_items, self.max_length, self.window = n_items, max_length, window
        self.embedding = nn.Embedding(n_items + 1, hidden_dim)
        self.gru = nn.GRU(hidden_dim, hidden_dim, num_layers, batch_first=True)
        self.output_bias = nn.Parameter(torch.zeros(n_items))
        self.parameters = list(self.embedding.parameters()) + list(self.gru.parameters()) + [self.output_bias]
        self.losses: list[float] = []

    def _batch(self, sequences):
        seqs = [np.r_[self.n_items, s[-self.max_length:]] for s in sequences]  # BOS + history
        width = max(len(s) for s in seqs)
        inputs = np.full((len(seqs), width), self.n_items)
        lengths = np.array([len(s) for s in seqs])
        for r, s in enumerate(seqs):
            inputs[r, :len(s)] = s
        return torch.as_tensor(inputs), torch.as_tensor(lengths)

    def _logits(self, hidden):
        return hidden @ self.embedding.weight[: self.n_items].T + self.output_bias

    def fit(self, sequences, *, epochs: int = 10, batch_size: int = 64, lr: float = 0.1, seed: int = 0,
            progress: bool = False) -> "NextItemGRU":
        # (inputs, targets) windows: the first starts with BOS, later ones with the previous item
        windows = []
        for seq in sequences:
            seq = np.asarray(seq)
            padded = np.r_[self.n_items, seq]
            for start in range(0, len(seq), self.window):
                windows.append((padded[start:start + self.window], seq[start:start + self.window]))
        optimizer = torch.optim.Adagrad(self.parameters, lr=lr)
        rng = np.random.default_rng(seed)
        iterator = range(epochs)
        if progress:
            from tqdm.auto import tqdm

            iterator = tqdm(iterator, desc="GRU epochs")
        for _ in iterator:
            total, count = 0.0, 0
            order = rng.permutation(len(windows))
            for start in range(0, len(windows), batch_size):
                batch = [windows[i] for i in order[start:start + batch_size]]
                width = max(len(x) for x, _ in batch)
                inputs = torch.full((len(batch), width), self.n_items, dtype=torch.long)
                targets = torch.full((len(batch), width), -100, dtype=torch.long)
                for r, (x, y) in enumerate(batch):
                    inputs[r, :len(x)] = torch.as_tensor(x)
                    targets[r, :len(y)] = torch.as_tensor(y)
                hidden, _ = self.gru(self.embedding(inputs))
                loss = F.cross_entropy(self._logits(hidden).reshape(-1, self.n_items), targets.reshape(-1),
                                       ignore_index=-100)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total, count = total + loss.item(), count + 1
            self.losses.append(total / max(count, 1))
        return self

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
def _scale_scores(scores: np.ndarray) -> np.ndarray:
    """Scores divided by their largest finite magnitude: the scale the dual prices ``v`` live on."""
    s = np.asarray(scores, float)
    finite = np.isfinite(s)
    return s / (np.abs(s[finite]).max() or 1.0)


def _bisect_rows(scores, target: float, eps: float, *, floor=None, guess=None, width: float = 0.0,
                 iterations: int = 30):
    """Per row, the shift ``u`` with ``sum_y sigmoid((s_xy - u) / eps) = target`` (decreasing in u).

    ``scores`` is a float64 torch tensor ``[rows, cols]``. ``floor`` bounds ``u`` from below;
    ``guess`` +- ``width`` is tried first as the bracket (a warm start from the previous, slightly
    larger epsilon), falling back to the full range in the rows where it does not bracket the root.
    """

    def excess(u):
        return torch.sigmoid((scores - u[:, None]) / eps).sum(1) - target

    p = target / scores.shape[1]
    logit = math.log(p) - math.log1p(-p)
    lo = scores.amin(1) - eps * logit - 1.0
    hi = scores.amax(1) - eps * logit + 1.0
    if floor is not None:
        lo = torch.maximum(lo, floor)
    if guess is not None:
        lo_try, hi_try = guess - width, guess + width
        if floor is not None:
            lo_try = torch.maximum(lo_try, floor)
        lo = torch.where(excess(lo_try) > 0, lo_try, lo)
        hi = torch.where(excess(hi_try) <= 0, hi_try, hi)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        too_many = excess(mid) > 0
        lo = torch.where(too_many, mid, lo)
        hi = torch.where(too_many, hi, mid)
    return 0.5 * (lo + hi)


def dual_matching(scores: np.ndarray, k: int, capacity: float, *, min_epsilon: float = 1e-4,
                  steps: int = 100, epsilons=None, sweeps: int = 1, iterations: int = 30):
    """Entropy-regularised matching: every row gets ``k`` items, every column at most ``capacity`` rows.

    Solves ``max_pi sum s pi + eps H(pi)`` through its dual: ``pi = sigmoid((s - u_x - v_y) / eps)``,
    ``u`` by bisection per row (equality), ``v >= 0`` by bisection per column (upper bound), with
    ``eps`` annealed geometrically from 1 to ``min_epsilon`` in ``steps`` steps. The official code
    anneals to 1e-10 over 100 epochs; our default stops at 1e-4, which is 3-10x cheaper here, at a
    price: RIM scores are heavy-tailed (most are below 1e-4 of the largest), and a final epsilon of
    1e-4 cannot tell the small ones apart (the chapter compares the two in full mode). Too few steps hurt
    too: with 40 steps a third of random 20 x 20 assignment problems ended about 4 % short of the
    optimum.
    Scores are divided by their maximum first; excluded pairs (-inf) become -20, which keeps the
    bisection brackets finite and their weight below 1e-8. Computed in float64 (torch).
    Returns ``(u [n], v [m], pi [n, m])`` as numpy arrays; ``v`` is on the normalised score scale
    (use ``serve_top_k(scores, k, v)``).
    """

    s = np.array(scores, float)
    n, m = s.shape
    if not 1 <= k < m:
        raise ValueError(f"k must be in [1, {m}), got {k}")
    if capacity * m < k * n:
        raise ValueError(f"capacity {capacity} x {m} items cannot serve {n} rows x {k} items")
    scaled = _scale_scores(s)
    s = torch.as_tensor(np.where(np.isfinite(scaled), scaled, -20.0), dtype=torch.float64)
    epsilons = np.geomspace(1.0, min_epsilon, steps) if epsilons is None else np.asarray(epsilons, float)
    v = torch.zeros(m, dtype=torch.float64)
    u, previous = None, None
    floor = torch.zeros(m, dtype=torch.float64)
    for eps in epsilons:
        eps = float(eps)
        warm = {"iterations": iterations} if previous is None else {"width": 20.0 * previous, "iterations": 16}
        for _ in range(sweeps):
            u = _bisect_rows(s - v[None, :], k, eps, guess=u, **warm)
            shifted = (s - u[:, None]).T
            if capacity < n:
                at_zero = torch.sigmoid(shifted / eps).sum(1)
                v_new = _bisect_rows(shifted, capacity, eps, floor=floor,
                                     guess=v if previous is not None else None, **warm)
                v = torch.where(at_zero > capacity, v_new, torch.zeros_like(v_new))
        previous = eps
    pi = torch.sigmoid((s - u[:, None] - v[None, :]) / float(epsilons[-1]))
    return u.numpy().astype(float), v.numpy().astype(float), pi.numpy().astype(float)


def serve_top_k(scores: np.ndarray, k: int, item_shift: np.ndarray | None = None) -> np.ndarray:
    """Online serving: each row's top ``k`` of ``s(x, .) - v(.)``; returns a 0/1 ``[n, m]`` assignment."""
    s = np.asarray(scores, float)
    if item_shift is not None:
        s = _scale_scores(s) - item_shift[None, :]
    chosen = top_k_rows(s, k)
    out = np.zeros(s.shape)
    np.put_along_axis(out, chosen, 1.0, axis=1)
    return out


def greedy_matching(scores: np.ndarray, k: int, capacity: float) -> np.ndarray:
    """Greedy baseline: visit pairs by decreasing score, assign while the row has fewer than ``k``
    items and the column fewer than ``capacity`` rows. Returns a 0/1 ``[n, m]`` assignment."""
    s = np.asarray(scores, float)
    n, m = s.shape
    order = np.argsort(-s, axis=None, kind="stable")
    rows, cols = np.unravel_index(order, s.shape)
    row_count, col_count = np.zeros(n, int), np.zeros(m, int)
    out = np.zeros((n, m))
    for r, c in zip(rows, cols):
        if not np.isfinite(s[r, c]):
            break
        if row_count[r] < k and col_count[c] < capacity:
            out[r, c] = 1.0
            row_count[r] += 1
            col_count[c] += 1
            if row_count.min() >= k:
                break
    return out


def assignment_report(assignment: np.ndarray, targets: sp.spmatrix) -> dict[str, float]:
    """Precision of a 0/1 assignment against the targets, item coverage and item-exposure perplexity."""
    hits = float((assignment * (sp.csr_matrix(targets) > 0).toarray()).sum())
    exposure = assignment.sum(0)
    share = exposure / exposure.sum()
    nz = share[share > 0]
    return {"precision": hits / assignment.sum(), "coverage": float((exposure > 0).mean()),
            "perplexity": float(np.exp(-(nz * np.log(nz)).sum()))}
