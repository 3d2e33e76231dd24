"""Trajectory prediction and its feature attribution (Makansi et al., ICLR 2022, "You mostly walk alone").

- Data: ETH/UCY pedestrian tracks (:func:`load_eth_ucy`, :func:`windows_from_tracks`: 8 observed and 12
  predicted steps of 0.4 s, neighbours within a radius) and a procedural "team game"
  (:func:`simulate_team_scenes`), the stand-in for the paper's basketball data.
- Model: :class:`TrajectoryPredictor`, one encoder for the target's past, one for its position in the
  scene, one *shared* encoder per neighbour summed over the present neighbours (so every neighbour is a
  separate input that can be removed), and a Gaussian decoder. :func:`train_predictor`, :func:`evaluate`.
- Attribution: :func:`shapley_attribution` with the paper's players (own past, position, each neighbour,
  a random agent from another scene), value = minus the per-sample loss (NLL or ADE), removed players
  replaced by random draws of the same kind (``removal="random"``) or by zeros / masking (``"zero"``);
  :func:`with_random_neighbours`, the null control that puts random agents in the real neighbours' slots.

Shapes: ``N`` windows, ``K`` neighbour slots, ``OBS = 8`` observed and ``PRED = 12`` future steps, 2-D
positions in metres relative to the target's last observed position.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from .shapley import exact_shapley

OBS, PRED = 8, 12
STEP_SECONDS = 0.4
FRAMES_PER_STEP = 10
ETH_UCY_SCENES = ("biwi_eth", "biwi_hotel", "crowds_zara01", "crowds_zara02", "crowds_zara03",
                  "students001", "students003", "uni_examples")
#: The standard leave-one-scene-out protocol: test split -> the scenes it holds out.
TEST_SPLITS = {"eth": ("biwi_eth",), "hotel": ("biwi_hotel",), "univ": ("students001", "students003"),
               "zara1": ("crowds_zara01",), "zara2": ("crowds_zara02",)}


# ----------------------------------------------------------------------------- windows
@dataclass
class Windows:
    """Prediction problems, one per (target agent, start time); all arrays share the first axis ``N``.

    Attributes:
        past: ``(N, OBS, 2)`` the target's observed positions, relative to its last observed one.
        future: ``(N, PRED, 2)`` the positions to predict, same frame.
        neighbours: ``(N, K, OBS, 2)`` neighbours' observed positions, same frame (zeros where absent).
        neighbour_mask: ``(N, K)`` which slots hold a neighbour.
        neighbour_type: ``(N, K)`` integer agent type of each slot's neighbour.
        position: ``(N, 2)`` the target's last observed position in scene coordinates (metres).
        agent_type: ``(N,)`` the target's agent type.
        scene: ``(N,)`` integer id of the scene the window comes from.
    """

    past: np.ndarray
    future: np.ndarray
    neighbours: np.ndarray
    neighbour_mask: np.ndarray
    neighbour_type: np.ndarray
    position: np.ndarray
    agent_type: np.ndarray
    scene: np.ndarray

    def __len__(self) -> int:
        return len(self.past)

    @property
    def n_slots(self) -> int:
        return self.neighbours.shape[1]

    def subset(self, index: np.ndarray) -> "Windows":
        return Windows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    @staticmethod
    def concat(parts: Sequence["Windows"]) -> "Windows":
        if len({p.n_slots for p in parts}) != 1:
            raise ValueError("windows with different numbers of neighbour slots cannot be concatenated")
        return Windows(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Windows)})


def load_eth_ucy(scene: str) -> np.ndarray:
    """One ETH/UCY scene as ``(rows, 4)`` float64: frame, pedestrian id, x, y (metres), via the verified fetcher."""
    if scene not in ETH_UCY_SCENES:
        raise ValueError(f"scene must be one of {ETH_UCY_SCENES}, got {scene!r}")
    from .data import fetch

    path = fetch("eth_ucy", files=[f"all_data/{scene}.txt"], verbose=False) / "all_data" / f"{scene}.txt"
    table = np.loadtxt(path, dtype=np.float64)
    if table.ndim != 2 or table.shape[1] != 4:
        raise ValueError(f"{path}: expected 4 tab-separated columns, got shape {table.shape}")
    return table


def windows_from_tracks(table: np.ndarray, scene_id: int = 0, max_neighbours: int = 4, radius: float = 3.0,
                        stride: int = 1) -> Windows:
    """Cut ``(frame, id, x, y)`` rows into 20-step windows (8 observed, 12 future) of every fully tracked agent.

    Neighbours are the other agents tracked over the whole observation window whose last observed position
    is within ``radius`` metres of the target's; the ``max_neighbours`` nearest fill the slots, nearest first.
    """
    if stride < 1 or max_neighbours < 1 or radius <= 0:
        raise ValueError(f"need stride >= 1, max_neighbours >= 1, radius > 0; got {stride}, {max_neighbours}, {radius}")
    steps = np.round((table[:, 0] - table[:, 0].min()) / FRAMES_PER_STEP).astype(int)
    ids, agent = np.unique(table[:, 1], return_inverse=True)
    grid = np.full((steps.max() + 1, len(ids), 2), np.nan)
    grid[steps, agent] = table[:, 2:4]
    present = ~np.isnan(grid[..., 0])                                    # (T, A)
    T, A = present.shape
    span = OBS + PRED
    rows = {k: [] for k in ("past", "future", "neighbours", "neighbour_mask", "position")}
    for start in range(0, T - span + 1, stride):
        observed = present[start:start + OBS].all(0)                    # tracked over the observation window
        targets = np.flatnonzero(observed & present[start + OBS:start + span].all(0))
        if not len(targets):
            continue
        candidates = np.flatnonzero(observed)
        last = grid[start + OBS - 1]                                      # (A, 2)
        for a in targets:
            origin = last[a]
            distance = np.linalg.norm(last[candidates] - origin, axis=1)
            near = candidates[(candidates != a) & (distance <= radius)]
            near = near[np.argsort(np.linalg.norm(last[near] - origin, axis=1), kind="stable")][:max_neighbours]
            slots = np.zeros((max_neighbours, OBS, 2))
            slots[:len(near)] = np.transpose(grid[start:start + OBS, near], (1, 0, 2)) - origin
            mask = np.zeros(max_neighbours, dtype=bool)
            mask[:len(near)] = True
            rows["past"].append(grid[start:start + OBS, a] - origin)
            rows["future"].append(grid[start + OBS:start + span, a] - origin)
            rows["neighbours"].append(slots)
            rows["neighbour_mask"].append(mask)
            rows["position"].append(origin)
    n = len(rows["past"])
    if n == 0:
        raise ValueError("no agent is tracked for 20 consecutive steps in this table")
    out = {k: np.asarray(v, dtype=np.float32 if k != "neighbour_mask" else bool) for k, v in rows.items()}
    return Windows(**out, neighbour_type=np.zeros((n, max_neighbours), dtype=np.int64),
                   agent_type=np.zeros(n, dtype=np.int64), scene=np.full(n, scene_id, dtype=np.int64))


# ----------------------------------------------------------------------------- the team-game simulator
LEADER, FOLLOWER, WALKER = 0, 1, 2


def simulate_team_scenes(n_scenes: int, alpha: float, rng: np.random.Generator, noise: float = 0.03,
                         lag: tuple[int, int] = (4, 8)) -> Windows:
    """A coordinated "team game": per scene a leader, two followers and an independent walker.

    The leader walks towards a goal and turns towards a new one at a random step inside the observation
    window. With probability ``alpha`` the scene is *coordinated*: each follower copies the leader's
    velocity with a lag drawn from ``range(*lag)`` steps (default 4-7: it turns later, mostly in the
    future window, and only the leader's past tells when). Otherwise the followers walk on their own and turn at an unpredictable
    time. The walker always walks alone. Targets are the two followers; their neighbour slots are
    ``[leader, other follower, walker]``. ``alpha = 0`` is "walking alone", ``alpha = 1`` is team play.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if not 0 <= lag[0] < lag[1]:
        raise ValueError(f"lag must be a range (low, high) with 0 <= low < high, got {lag}")
    span = OBS + PRED

    def heading(theta):
        return np.stack([np.cos(theta), np.sin(theta)], -1)

    def turning_walk(start, speed, theta, turn_at, turn_by):
        angles = np.where(np.arange(span) < turn_at, theta, theta + turn_by)
        velocity = speed * heading(angles) * STEP_SECONDS + rng.normal(0, noise, (span, 2))
        return start + np.cumsum(velocity, 0), velocity

    windows = []
    for _ in range(n_scenes):
        origin = rng.uniform(-10, 10, 2)
        turn = rng.choice([-1, 1]) * rng.uniform(np.pi / 3, 2 * np.pi / 3)
        leader, leader_velocity = turning_walk(origin, rng.uniform(1.0, 1.5), rng.uniform(0, 2 * np.pi),
                                               rng.integers(2, OBS), turn)
        coordinated = rng.random() < alpha
        followers = []
        for _ in range(2):
            start = origin + rng.normal(0, 1.0, 2)
            if coordinated:
                delay = rng.integers(*lag)
                index = np.clip(np.arange(span) - delay, 0, None)
                velocity = leader_velocity[index] + rng.normal(0, noise, (span, 2))
                followers.append(start + np.cumsum(velocity, 0))
            else:
                own_turn = rng.choice([-1, 1]) * rng.uniform(np.pi / 3, 2 * np.pi / 3)
                followers.append(turning_walk(start, rng.uniform(1.0, 1.5), rng.uniform(0, 2 * np.pi),
                                              rng.integers(OBS + 1, span - 4), own_turn)[0])
        walker = turning_walk(origin + rng.normal(0, 2.0, 2), rng.uniform(0.5, 1.5), rng.uniform(0, 2 * np.pi),
                              span, 0.0)[0]
        for me in range(2):
            target, other = followers[me], followers[1 - me]
            last = target[OBS - 1]
            neighbours = np.stack([leader[:OBS], other[:OBS], walker[:OBS]]) - last
            windows.append((target[:OBS] - last, target[OBS:] - last, neighbours, last))
    past, future, neighbours, position = (np.asarray(x, dtype=np.float32) for x in zip(*windows))
    n = len(past)
    return Windows(past=past, future=future, neighbours=neighbours, neighbour_mask=np.ones((n, 3), dtype=bool),
                   neighbour_type=np.tile(np.array([LEADER, FOLLOWER, WALKER]), (n, 1)),
                   position=position, agent_type=np.full(n, FOLLOWER, dtype=np.int64),
                   scene=np.repeat(np.arange(n_scenes), 2))


# ----------------------------------------------------------------------------- the predictor
def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


class TrajectoryPredictor(nn.Module):
    """Per-neighbour encoders with a masked sum, in the spirit of the paper's Trajectron++Edge.

    ``forward(past, position, neighbours, mask)`` with shapes ``(B, OBS, 2)``, ``(B, 2)``,
    ``(B, K, OBS, 2)``, ``(B, K)`` returns the Gaussian's mean and log standard deviation, each
    ``(B, PRED, 2)``. With ``use_neighbours=False`` the neighbour branch is switched off (its output is 0).
    """

    def __init__(self, hidden: int = 64, use_neighbours: bool = True) -> None:
        super().__init__()
        self.use_neighbours = use_neighbours
        self.past_encoder = _mlp([OBS * 2 + (OBS - 1) * 2, hidden, hidden])
        self.position_encoder = _mlp([2, 16, 16])
        self.neighbour_encoder = _mlp([OBS * 2 * 2, hidden, hidden])
        self.decoder = _mlp([2 * hidden + 16, 2 * hidden, PRED * 4])

    def forward(self, past, position, neighbours, mask):
        velocity = past[:, 1:] - past[:, :-1]
        h_past = self.past_encoder(torch.cat([past.flatten(1), velocity.flatten(1)], 1))
        h_position = self.position_encoder(position / 10.0)
        if self.use_neighbours:
            relative = neighbours - past[:, None]                       # the neighbour seen from the target
            h = self.neighbour_encoder(torch.cat([neighbours, relative], -1).flatten(2))   # (B, K, hidden)
            h_neighbours = (h * mask[..., None]).sum(1)
        else:
            h_neighbours = torch.zeros_like(h_past)
        out = self.decoder(torch.cat([h_past, h_position, h_neighbours], 1)).view(-1, PRED, 4)
        return out[..., :2], out[..., 2:].clamp(-4.0, 3.0)


def _tensors(w: Windows):
    return (torch.as_tensor(w.past), torch.as_tensor(w.position), torch.as_tensor(w.neighbours),
            torch.as_tensor(w.neighbour_mask, dtype=torch.float32), torch.as_tensor(w.future))


def gaussian_nll(mean: torch.Tensor, log_std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under independent Gaussians, summed over steps and axes: ``(B,)``."""
    z = (target - mean) * torch.exp(-log_std)
    return (0.5 * z ** 2 + log_std + 0.5 * math.log(2 * math.pi)).sum((1, 2))


def displacement_errors(mean: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample ADE (mean over steps) and FDE (last step) of the predicted mean, in metres: ``(B,), (B,)``."""
    distance = torch.linalg.norm(mean - target, dim=-1)
    return distance.mean(1), distance[:, -1]


def train_predictor(windows: Windows, *, use_neighbours: bool = True, epochs: int = 20, seed: int = 0,
                    batch_size: int = 256, lr: float = 2e-3, hidden: int = 64) -> TrajectoryPredictor:
    """Fit :class:`TrajectoryPredictor` by the Gaussian NLL with Adam (cosine-decayed learning rate)."""
    if epochs < 1 or len(windows) == 0:
        raise ValueError(f"need epochs >= 1 and at least one window, got {epochs} and {len(windows)}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = TrajectoryPredictor(hidden, use_neighbours)
    data = _tensors(windows)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * math.ceil(len(windows) / batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(windows), generator=generator).split(batch_size):
            past, position, neighbours, mask, future = (t[batch] for t in data)
            loss = gaussian_nll(*model(past, position, neighbours, mask), future).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


@torch.no_grad()
def evaluate(model: TrajectoryPredictor, windows: Windows) -> dict[str, float]:
    """Mean ADE, FDE (metres) and NLL (nats per window) of ``model`` on ``windows``."""
    past, position, neighbours, mask, future = _tensors(windows)
    mean, log_std = model(past, position, neighbours, mask)
    ade, fde = displacement_errors(mean, future)
    return {"ADE": float(ade.mean()), "FDE": float(fde.mean()),
            "NLL": float(gaussian_nll(mean, log_std, future).mean())}


# ----------------------------------------------------------------------------- attribution
def player_names(n_slots: int) -> list[str]:
    """The players of :func:`shapley_attribution`: own past, position, one per neighbour slot, a random agent."""
    return ["past", "position", *[f"neighbour {k + 1}" for k in range(n_slots)], "random agent"]


@torch.no_grad()
def shapley_attribution(model: TrajectoryPredictor, windows: Windows, random_pool: Windows, *,
                        removal: Literal["random", "zero"] = "random", metric: Literal["nll", "ade"] = "nll",
                        n_draws: int = 4, rng: np.random.Generator) -> np.ndarray:
    """Exact Shapley values of every player for every window: ``(N, 2 + K + 1)``, columns as :func:`player_names`.

    The value of a coalition is minus the loss of the true future (per window, averaged over ``n_draws``
    draws of the replacements): ``v(S) = -L(f(x_S, x~_{not S}), y)``. A removed player is replaced
    (``removal="random"``) by the same kind of input from another window: the past and position of a
    window with the same agent type, slot ``k``'s neighbour from a window whose slot ``k`` is occupied by
    the same agent type; or (``"zero"``) by zeros, with a removed neighbour masked out. Empty slots stay
    empty (their players are dummies, value exactly 0). The *random agent* is an extra neighbour slot
    holding a neighbour from ``random_pool`` (another scene); removed, it is replaced by another such draw
    (``"random"``) or masked (``"zero"``). Draws are shared by all coalitions (common random numbers).
    """
    if removal not in ("random", "zero") or metric not in ("nll", "ade"):
        raise ValueError(f"removal must be 'random' or 'zero' and metric 'nll' or 'ade', got {removal!r}, {metric!r}")
    if random_pool.n_slots < 1 or not random_pool.neighbour_mask.any():
        raise ValueError("random_pool must contain at least one neighbour")
    n, k = len(windows), windows.n_slots
    n_players = 2 + k + 1

    def draw_from(candidates_by_window: list[np.ndarray]) -> np.ndarray:
        return np.array([c[rng.integers(len(c))] if len(c) else i for i, c in enumerate(candidates_by_window)])

    by_type = {t: np.flatnonzero(windows.agent_type == t) for t in np.unique(windows.agent_type)}
    same_type = [by_type[t] for t in windows.agent_type]
    slot_donors = []
    for s in range(k):
        donors = {t: np.flatnonzero(windows.neighbour_mask[:, s] & (windows.neighbour_type[:, s] == t))
                  for t in np.unique(windows.neighbour_type[:, s])}
        slot_donors.append([donors[t] for t in windows.neighbour_type[:, s]])
    pool_rows, pool_slots = np.nonzero(random_pool.neighbour_mask)
    draws = []
    for _ in range(n_draws):
        pick = rng.integers(len(pool_rows), size=(2, n))
        draws.append({"past": draw_from(same_type), "position": draw_from(same_type),
                      "slots": [draw_from(slot_donors[s]) for s in range(k)],
                      "random_in": random_pool.neighbours[pool_rows[pick[0]], pool_slots[pick[0]]],
                      "random_out": random_pool.neighbours[pool_rows[pick[1]], pool_slots[pick[1]]]})
    future = torch.as_tensor(windows.future).repeat(n_draws, 1, 1)

    def value(mask: np.ndarray) -> np.ndarray:
        batches = []
        for d in draws:
            past = windows.past if mask[0] else (windows.past[d["past"]] if removal == "random"
                                                 else np.zeros_like(windows.past))
            position = windows.position if mask[1] else (windows.position[d["position"]] if removal == "random"
                                                         else np.zeros_like(windows.position))
            neighbours = np.concatenate([windows.neighbours, np.zeros((n, 1, OBS, 2), np.float32)], 1)
            present = np.concatenate([windows.neighbour_mask, np.zeros((n, 1), bool)], 1).copy()
            for s in range(k):
                if not mask[2 + s]:
                    if removal == "random":
                        neighbours[:, s] = windows.neighbours[d["slots"][s], s]
                    else:
                        present[:, s] = False
            present[:, :k] &= windows.neighbour_mask                 # empty slots stay empty
            if mask[-1]:
                neighbours[:, k], present[:, k] = d["random_in"], True
            elif removal == "random":
                neighbours[:, k], present[:, k] = d["random_out"], True
            batches.append((past, position, neighbours, present))
        past, position, neighbours, present = (torch.as_tensor(np.concatenate(x)) for x in zip(*batches))
        mean, log_std = model(past.float(), position.float(), neighbours.float(), present.float())
        loss = gaussian_nll(mean, log_std, future) if metric == "nll" else displacement_errors(mean, future)[0]
        return -loss.view(n_draws, n).mean(0).numpy().astype(np.float64)

    return exact_shapley(value, n_players).T


def with_random_neighbours(windows: Windows, random_pool: Windows, rng: np.random.Generator) -> Windows:
    """The null control of the interaction: a copy of ``windows`` whose *present* neighbour slots hold
    neighbours drawn from ``random_pool`` (another scene) instead of the real ones.

    Same windows, same number of neighbours in the same slots, same estimator: the largest Shapley value
    among a window's ``k`` random neighbours is the like-for-like reference for the largest value among
    its ``k`` real ones. Absent slots stay empty; ``neighbours`` is ``(N, K, OBS, 2)`` as in ``windows``.
    """
    rows, slots = np.nonzero(random_pool.neighbour_mask)
    if not len(rows):
        raise ValueError("random_pool must contain at least one neighbour")
    pick = rng.integers(len(rows), size=windows.neighbour_mask.shape)
    present = windows.neighbour_mask
    drawn = random_pool.neighbours[rows[pick], slots[pick]]                       # (N, K, OBS, 2)
    return replace(windows, neighbours=np.where(present[..., None, None], drawn, 0).astype(windows.neighbours.dtype),
                   neighbour_type=np.where(present, random_pool.neighbour_type[rows[pick], slots[pick]],
                                           windows.neighbour_type))


def global_attribution(phi: np.ndarray, neighbour_mask: np.ndarray) -> dict[str, float]:
    """The paper's global view from per-window Shapley values ``(N, 2 + K + 1)``.

    ``past`` and ``position``: the mean of their values; ``interaction``: the mean over windows with at
    least one neighbour of the *largest* value among the real neighbours; ``random agent``: its mean value.
    """
    k = neighbour_mask.shape[1]
    if phi.shape[1] != 2 + k + 1:
        raise ValueError(f"phi must have 2 + K + 1 = {2 + k + 1} columns, got {phi.shape[1]}")
    has = neighbour_mask.any(1)
    neighbour_phi = np.where(neighbour_mask, phi[:, 2:2 + k], -np.inf)
    return {"past": float(phi[:, 0].mean()), "position": float(phi[:, 1].mean()),
            "interaction": float(neighbour_phi[has].max(1).mean()) if has.any() else 0.0,
            "random agent": float(phi[:, -1].mean()), "windows with neighbours": float(has.mean())}
