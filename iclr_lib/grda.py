"""Graph-Relational Domain Adaptation (Xu, He, Lee, Wang, Wang; ICLR 2022).

Domains are the nodes of a graph ``A``. An encoder ``E(x, z_u)`` sees each point ``x`` together with
its domain's node embedding ``z_u``; a predictor ``F`` is trained on the labelled source domains; a
*graph discriminator* ``D`` maps encodings to vectors whose dot products should reconstruct ``A``.
The encoder plays against it: ``min_{E,F} max_D  L_f - lambda L_d`` (the paper's eq. 3).

The pieces, in the order of the chapter:

- Data: :func:`load_dg` (the official DG-15 / DG-60 files), :func:`make_dg` (a generator with the
  same statistics), :func:`load_tpt48` (48 US states' monthly temperatures, N(24) -> S(24)).
  :func:`load_numpy_pickle` reads the official pickles with an unpickler that admits numpy arrays only.
- :func:`pretrain_node_embeddings`: ``z_u`` from the graph-reconstruction loss :func:`graph_reconstruction_loss`.
- Networks with the official widths: :class:`Encoder`, :class:`Predictor`, :class:`GraphDiscriminator`,
  :class:`DomainClassifier` (DANN's discriminator).
- :func:`sample_domains` (the official sub-graph sampling) and :func:`graph_discriminator_loss`.
- :func:`train_domain_adaptation`: ``"source_only"``, ``"dann"`` and ``"grda"``, with the official joint
  backward (D gets ``(1 - lambda)`` of its gradient, none at ``lambda = 1``;
  :func:`joint_backward_discriminator_gradient` shows why) or an alternating min-max update;
  :func:`paper_time_config` (commit dafc621: learned embeddings :class:`EmbeddingNet`, paired batches
  :func:`epoch_order`, :func:`official_nll_loss`) and :func:`head_config` (today's settings);
  :func:`train_many` runs configurations in worker processes.
- The theory, exactly and in the discrete case: :func:`pair_alignment`, :func:`encoder_objective`
  and :func:`equilibrium_encoder`.

Shapes: ``N`` domains, ``B`` points per domain in a batch, ``nh`` hidden width.
"""
from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Method = Literal["source_only", "dann", "grda"]
METHODS: tuple[str, ...] = ("source_only", "dann", "grda")


# ----------------------------------------------------------------------------- data
@dataclass
class DomainGraphData:
    """Points from ``N`` domains that are the nodes of a graph.

    Attributes:
        name: e.g. ``"dg15"``.
        X: ``(N, n, d)`` float32 inputs, ``n`` points per domain (standardised as the official code does).
        y: ``(N, n)`` int64 class labels, or ``(N, n, k)`` float32 regression targets.
        A: ``(N, N)`` int64 symmetric 0/1 adjacency with a zero diagonal.
        source_domains: the labelled domains; every other domain is a target.
        node_embedding: ``(N, 2)`` official pre-trained embeddings, or ``None``.
        angle: ``(N,)`` the latent angle of each DG domain, or ``None``.
        eval_mask: ``(N, n)`` bool, the points a target domain is scored on (all, for DG).
        task: ``"classification"`` or ``"regression"``.
        names: a label per domain (state codes for TPT-48).
        positions: ``(N, 2)`` coordinates for drawing the graph (longitude/latitude for TPT-48), or ``None``.
    """

    name: str
    X: np.ndarray
    y: np.ndarray
    A: np.ndarray
    source_domains: np.ndarray
    node_embedding: np.ndarray | None = None
    angle: np.ndarray | None = None
    eval_mask: np.ndarray | None = None
    task: str = "classification"
    names: list[str] = field(default_factory=list)
    positions: np.ndarray | None = None

    def __post_init__(self) -> None:
        N = self.A.shape[0]
        if self.A.shape != (N, N) or (self.A != self.A.T).any() or np.diag(self.A).any():
            raise ValueError("A must be a symmetric (N, N) 0/1 matrix with a zero diagonal")
        if self.X.ndim != 3 or self.X.shape[0] != N or self.y.shape[:2] != self.X.shape[:2]:
            raise ValueError(f"X must be (N, n, d) and y (N, n[, k]) with N = {N}; got {self.X.shape}, {self.y.shape}")
        src = np.asarray(self.source_domains)
        if src.size == 0 or src.min() < 0 or src.max() >= N or len(set(src.tolist())) != src.size:
            raise ValueError(f"source_domains must be distinct domain ids in [0, {N}), got {src}")
        if self.eval_mask is None:
            self.eval_mask = np.ones(self.X.shape[:2], dtype=bool)
        if not self.names:
            self.names = [str(u) for u in range(N)]

    @property
    def num_domains(self) -> int:
        return int(self.A.shape[0])

    @property
    def target_domains(self) -> np.ndarray:
        return np.setdiff1d(np.arange(self.num_domains), self.source_domains)

    def hops_from_sources(self) -> np.ndarray:
        """``(N,)`` graph distance of each domain to the nearest source domain (0 for sources)."""
        dist = np.full(self.num_domains, -1)
        dist[self.source_domains] = 0
        frontier, d = list(self.source_domains), 0
        while frontier:
            d += 1
            nxt = [v for u in frontier for v in np.flatnonzero(self.A[u]) if dist[v] < 0]
            for v in nxt:
                dist[v] = d
            frontier = list(set(nxt))
        return dist


class _NumpyOnlyUnpickler(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")


def load_numpy_pickle(path: str | Path) -> object:
    """Unpickle a file that may contain only dicts/lists of numpy arrays (the official GRDA files).

    Anything else (a function, ``os.system``, a class) raises ``pickle.UnpicklingError`` instead of
    running: never ``pickle.load`` a file from the internet.
    """
    data = Path(path).read_bytes()
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


_DG_SOURCES = {"dg15": [0, 12, 3, 4, 14, 8], "dg60": [2, 14, 41, 23, 59, 33]}


def _dg_arrays(which: str) -> dict[str, np.ndarray]:
    from .data import DataUnavailableError, fetch

    try:  # the offline mirror holds a pickle-free npz copy
        root = fetch("grda_dg", [f"{which}.npz"], verbose=False)
        with np.load(root / f"{which}.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataUnavailableError:  # a reader with internet: the official pickles, read safely
        n = which[2:]
        pkl = "toy_d15_spiral_tight_boundary.pkl" if n == "15" else "toy_d60_spiral.pkl"
        root = fetch("grda_dg", [pkl, f"g_encode_{n}.pkl"], verbose=False)
        raw = load_numpy_pickle(root / pkl)
        enc = load_numpy_pickle(root / f"g_encode_{n}.pkl")
        N = raw["A"].shape[0]
        return {"X": raw["data"], "y": raw["label"].astype(np.int64), "domain": raw["domain"].astype(np.int64),
                "A": raw["A"].astype(np.int8), "angle": raw["angle"], "src_domains": np.array(_DG_SOURCES[which]),
                "g_encode": np.stack([np.asarray(enc[str(u)], dtype=np.float64) for u in range(N)])}


def _group_by_domain(X: np.ndarray, y: np.ndarray, domain: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(domain, kind="stable")
    counts = np.bincount(domain, minlength=N)
    if (counts != counts[0]).any():
        raise ValueError(f"every domain must have the same number of points, got counts {counts}")
    return X[order].reshape(N, counts[0], -1), y[order].reshape(N, counts[0], *y.shape[1:])


def load_dg(which: str = "dg15", standardize: bool = True) -> DomainGraphData:
    """DG-15 or DG-60, the official files (``which`` is ``"dg15"`` or ``"dg60"``), through the registry.

    ``X`` is z-scored over all domains (as the official ``main.py`` does) when ``standardize``.
    """
    if which not in _DG_SOURCES:
        raise ValueError(f"which must be 'dg15' or 'dg60', got {which!r}")
    z = _dg_arrays(which)
    X = np.asarray(z["X"], dtype=np.float64)
    if standardize:
        X = (X - X.mean(0)) / X.std(0)
    A = np.asarray(z["A"]).astype(np.int64)
    Xd, yd = _group_by_domain(X.astype(np.float32), np.asarray(z["y"]).astype(np.int64),
                              np.asarray(z["domain"]).astype(np.int64), A.shape[0])
    return DomainGraphData(which, Xd, yd, A, np.asarray(z["src_domains"]).astype(np.int64),
                           node_embedding=np.asarray(z["g_encode"], dtype=np.float32),
                           angle=np.asarray(z["angle"], dtype=np.float64))


def make_dg(num_domains: int = 15, *, seed: int = 0, max_angle: float = math.pi, radius_slope: float = 0.58,
            points_per_class: int = 50, edge_threshold: float = 0.2,
            source_domains: Sequence[int] | None = None, standardize: bool = True) -> DomainGraphData:
    """A DG-style dataset, generated the way the official files were (measured on them).

    Domain ``u`` has an angle ``theta_u ~ U[0, max_angle)`` and radius ``r_u = 1 + radius_slope * theta_u``
    (a spiral). Class 0 is ``r_u (cos, sin)`` plus a standard-normal offset kept inside the unit disc
    (rejection sampling); class 1 the same at ``-r_u (cos, sin)``. For ``i < j`` with
    ``p = cos(theta_i - theta_j) >= edge_threshold`` an edge is drawn with probability ``p``.
    DG-15 uses ``max_angle = pi, radius_slope = 0.58``; DG-60 ``2 pi`` and ``6 / (2 pi)``.
    """
    if num_domains < 2:
        raise ValueError(f"num_domains must be >= 2, got {num_domains}")
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, max_angle, num_domains)
    radius = 1 + radius_slope * angle

    def disc_offsets(n: int) -> np.ndarray:
        out = np.empty((0, 2))
        while len(out) < n:
            cand = rng.normal(size=(2 * n, 2))
            out = np.concatenate([out, cand[(cand ** 2).sum(1) <= 1]])
        return out[:n]

    X, y = [], []
    for u in range(num_domains):
        centre = radius[u] * np.array([math.cos(angle[u]), math.sin(angle[u])])
        X.append(np.concatenate([centre + disc_offsets(points_per_class), -centre + disc_offsets(points_per_class)]))
        y.append(np.repeat([0, 1], points_per_class))
    A = np.zeros((num_domains, num_domains), dtype=np.int64)
    for i in range(num_domains):
        for j in range(i + 1, num_domains):
            p = math.cos(angle[i] - angle[j])
            if p >= edge_threshold and rng.random() < p:
                A[i, j] = A[j, i] = 1
    Xa = np.stack(X)
    if standardize:
        flat = Xa.reshape(-1, 2)
        Xa = (Xa - flat.mean(0)) / flat.std(0)
    src = np.asarray(source_domains if source_domains is not None
                     else rng.choice(num_domains, max(1, num_domains * 2 // 5), replace=False))
    return DomainGraphData(f"generated{num_domains}", Xa.astype(np.float32), np.stack(y), A, src, angle=angle)


# The 24 northernmost states by latitude: GRDA's N(24) -> S(24) split (10 / 6 / 8 targets at 1 / 2 / >= 3 hops).
TPT48_NORTH = ("ND", "VT", "NH", "ME", "WA", "MT", "SD", "MN", "WI", "MI", "NY", "MA", "OR", "ID", "WY", "NE",
               "IA", "IL", "IN", "OH", "PA", "NJ", "CT", "RI")


def _tpt48_arrays() -> dict[str, np.ndarray]:
    """``temps (48, 144)``, ``states``, ``A (48, 48)``, ``lat``, ``lon``: the mirror's npz, or rebuilt from
    the VDI repository's files (temperature pickle read safely, adjacency list without DC, coordinates)."""
    from .data import DataUnavailableError, fetch

    try:
        root = fetch("tpt48", ["tpt48.npz"], verbose=False)
        with np.load(root / "tpt48.npz", allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except DataUnavailableError:
        files = ["month_temp_data.pkl", "usa_map.txt", "longitude-latitude-normalize.csv"]
        root = fetch("tpt48", files, verbose=False)
    temps_by_state = load_numpy_pickle(root / "month_temp_data.pkl")
    states = list(temps_by_state)
    index = {s: i for i, s in enumerate(states)}
    A = np.zeros((len(states), len(states)), dtype=np.int8)
    for line in (root / "usa_map.txt").read_text().split("\n"):
        pair = line.split()
        if len(pair) == 2 and pair[0] in index and pair[1] in index:   # drops DC's two edges
            A[index[pair[0]], index[pair[1]]] = A[index[pair[1]], index[pair[0]]] = 1
    coords = {}
    for row in (root / "longitude-latitude-normalize.csv").read_text().splitlines()[1:]:
        state, lat, lon = row.split(",")[:3]
        coords[state] = (float(lat), float(lon))
    return {"temps": np.stack([np.asarray(temps_by_state[s], dtype=np.float64) for s in states]),
            "states": np.array(states), "A": A, "lat": np.array([coords[s][0] for s in states]),
            "lon": np.array([coords[s][1] for s in states])}


def load_tpt48(window: int = 6) -> DomainGraphData:
    """TPT-48 as GRDA/VDI use it: predict the next ``window`` months from the previous ``window``.

    Every state gets all sliding windows of length ``2 * window`` (``X`` the first half, ``y`` the second,
    both standardised with the global mean/std). Source states (N(24)) train on all their windows;
    target states are scored on the non-overlapping windows starting at months 0, 12, 24, ...
    (``eval_mask``). Returns regression data with ``X: (48, 133, 6)`` and ``y: (48, 133, 6)``.
    """
    z = _tpt48_arrays()
    temps, states, A = z["temps"], [str(s) for s in z["states"]], z["A"].astype(np.int64)
    positions = np.stack([z["lon"], z["lat"]], 1).astype(np.float64)
    temps = (temps - temps.mean()) / temps.std()
    starts = np.arange(temps.shape[1] - 2 * window + 1)
    X = np.stack([[row[s:s + window] for s in starts] for row in temps]).astype(np.float32)
    y = np.stack([[row[s + window:s + 2 * window] for s in starts] for row in temps]).astype(np.float32)
    mask = np.zeros(X.shape[:2], dtype=bool)
    mask[:, starts % 12 == 0] = True
    src = np.array([states.index(s) for s in TPT48_NORTH])
    return DomainGraphData("tpt48", X, y, A, src, eval_mask=mask, task="regression", names=states,
                           positions=positions)


# ----------------------------------------------------------------------------- node embeddings
def graph_reconstruction_loss(Z: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``L_g = mean_{i != j} BCE(sigmoid(z_i . z_j), A_ij)`` for embeddings ``Z: (N, k)``."""
    N = Z.shape[0]
    logits = Z @ Z.T
    off = ~torch.eye(N, dtype=torch.bool)
    return F.binary_cross_entropy_with_logits(logits[off], A.to(logits.dtype)[off])


def pretrain_node_embeddings(A: np.ndarray, dim: int = 2, steps: int = 2000, lr: float = 0.01,
                             seed: int = 0) -> np.ndarray:
    """Node embeddings ``(N, dim)`` minimising :func:`graph_reconstruction_loss` (Adam, full batch)."""
    A_t = torch.as_tensor(np.asarray(A), dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    Z = torch.randn(A_t.shape[0], dim, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([Z], lr=lr)
    for _ in range(steps):
        loss = graph_reconstruction_loss(Z, A_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return Z.detach().numpy().astype(np.float32)


# ----------------------------------------------------------------------------- networks
def _mlp(sizes: Sequence[int], relu_last: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or relu_last:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """``E(x, z)``: ``x -> Linear(nx, nh)-ReLU``; ``z -> Linear(nz, nh)-ReLU-Linear(nh, nh)-ReLU``;
    concatenate; 3 x ``[Linear(2 nh, 2 nh)-ReLU]``; ``Linear(2 nh, nh)``. ``(..., nx), (..., nz) -> (..., nh)``."""

    def __init__(self, nx: int, nz: int = 2, nh: int = 512) -> None:
        super().__init__()
        self.x_branch = _mlp([nx, nh], relu_last=True)
        self.z_branch = _mlp([nz, nh, nh], relu_last=True)
        self.body = _mlp([2 * nh] * 4 + [nh], relu_last=False)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([self.x_branch(x), self.z_branch(z)], -1))


class Predictor(nn.Module):
    """``F``: ``nh -> nh -> nh -> n_out`` with ReLUs: class logits or regression outputs."""

    def __init__(self, nh: int = 512, n_out: int = 2) -> None:
        super().__init__()
        self.net = _mlp([nh, nh, nh, n_out], relu_last=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class GraphDiscriminator(nn.Module):
    """``D``: encoding ``(..., nh)`` -> ``z_hat (..., d_out)`` through 5 x ``[Linear(nh, nh)-ReLU]``."""

    def __init__(self, nh: int = 512, d_out: int = 2) -> None:
        super().__init__()
        self.net = _mlp([nh] * 6 + [d_out], relu_last=False)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class DomainClassifier(nn.Module):
    """DANN's discriminator: encoding ``(..., nh)`` -> logits over the ``N`` domains, through
    5 x ``[Linear(nh, nh)-ReLU]`` (the official ``ClassDiscNet``'s layout). ``relu_logits``: the official
    network also applies a ReLU to the logits before its log-softmax (so no logit is ever negative)."""

    def __init__(self, nh: int = 512, num_domains: int = 15, relu_logits: bool = False) -> None:
        super().__init__()
        self.net = _mlp([nh] * 6 + [num_domains], relu_last=relu_logits)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        return self.net(e)


class EmbeddingNet(nn.Module):
    """The paper-time official ``GNet`` (``use_g_encode = False``): domain embeddings *learned* during
    training, ``z_u = Linear(nh, nz)(ReLU(Linear(N, nh)(onehot(u))))``. ``forward()`` -> ``(N, nz)``."""

    def __init__(self, num_domains: int, nh: int = 512, nz: int = 2) -> None:
        super().__init__()
        self.num_domains = num_domains
        self.net = _mlp([num_domains, nh, nz], relu_last=False)

    def forward(self) -> torch.Tensor:
        return self.net(torch.eye(self.num_domains))


def init_official(module: nn.Module, std: float = 0.01) -> nn.Module:
    """The official initialisation: every ``Linear`` weight ``~ N(0, std^2)``, biases 0."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
    return module


# ----------------------------------------------------------------------------- the graph discriminator loss
def sample_domains(A: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct domains, as the official code picks them for one D step.

    With probability 1/2 uniformly at random; otherwise by random walks: start at a random unvisited
    node, repeatedly move to a random unvisited neighbour, and start a new walk when stuck. Random
    walks give D many connected pairs to learn from.
    """
    N = A.shape[0]
    if not 2 <= k <= N:
        raise ValueError(f"k must be in [2, {N}], got {k}")
    if rng.random() < 0.5:
        return rng.choice(N, k, replace=False)
    visited = np.zeros(N, dtype=bool)
    chosen: list[int] = []
    while len(chosen) < k:
        node = int(rng.choice(np.flatnonzero(~visited)))
        while True:
            visited[node] = True
            chosen.append(node)
            if len(chosen) == k:
                break
            nbrs = np.flatnonzero((A[node] > 0) & ~visited)
            if nbrs.size == 0:
                break
            node = int(rng.choice(nbrs))
    return np.array(chosen)


def graph_discriminator_loss(z_hat: torch.Tensor, domains: Sequence[int], A: np.ndarray | torch.Tensor) -> torch.Tensor:
    """The balanced graph-reconstruction loss of D on one batch (the official ``__loss_D__``).

    ``z_hat: (N, B, d_out)`` is D's output for ``B`` points of every domain. For each pair ``u < v`` of
    ``domains`` the ``b``-th point of ``u`` is paired with the ``b``-th point of ``v`` and scored with
    ``BCE(sigmoid(z_hat_ub . z_hat_vb), A_uv)``. The mean over connected pairs and the mean over
    unconnected pairs are averaged (so sparse graphs do not collapse to "no edge") and multiplied by ``N``.
    """
    A_t = torch.as_tensor(np.asarray(A), dtype=z_hat.dtype)
    idx = torch.as_tensor(np.asarray(domains), dtype=torch.long)
    iu, ju = torch.triu_indices(len(idx), len(idx), offset=1)
    u, v = idx[iu], idx[ju]
    logits = (z_hat[u] * z_hat[v]).sum(-1)                      # (P, B)
    labels = A_t[u, v][:, None].expand_as(logits)
    per_pair = F.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(1)
    connected = A_t[u, v] > 0
    parts = [per_pair[mask].mean() for mask in (connected, ~connected) if mask.any()]
    return torch.stack(parts).mean() * z_hat.shape[0]


def joint_backward_discriminator_gradient(loss_d: torch.Tensor, loss_f: torch.Tensor, lam: float,
                                          d_params: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The gradient the *official* update gives D: it back-propagates ``loss_D`` and
    ``loss_E = loss_F - lam * loss_D`` into the same ``.grad`` buffers before stepping D, so D receives
    ``dL_D + d(L_F - lam L_D) = (1 - lam) dL_D`` (``L_F`` does not depend on D). At ``lam = 1`` that is zero."""
    g1 = torch.autograd.grad(loss_d, d_params, retain_graph=True)
    g2 = torch.autograd.grad(loss_f - lam * loss_d, d_params, retain_graph=True, allow_unused=True)
    return [a + (torch.zeros_like(a) if b is None else b) for a, b in zip(g1, g2)]


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters; the defaults are the official DG-15 configuration.

    Attributes:
        method: ``"source_only"``, ``"dann"`` or ``"grda"``.
        nh: hidden width (official 512; the encoder's body is ``2 nh`` wide).
        epochs: passes over the data (official 500); an epoch has ``n // batch_size`` steps.
        batch_size: points per domain per step (official 10).
        lr_e, lr_d: Adam learning rates of E+F and of D (official 1e-4 both), betas (0.9, 0.999).
        lr_half_life: epochs after which both learning rates are halved (official ExponentialLR 0.5^(1/100)).
        lam: ``lambda_d``, the weight of the adversarial term (official 1).
        sample_domains: domains per D step for GRDA (official 10 of 15).
        eval_every: epochs between evaluations recorded in the history.
        init_std: the official ``N(0, 0.01^2)`` initialisation of every network; ``None`` keeps PyTorch's
            default (Kaiming-uniform) initialisation.
        disc_init_std: the same for D alone (``"same"``: follow ``init_std``).
        update: ``"alternating"`` (a D step on ``L_d``, then an E/F step against the new D) or ``"joint"``
            (the official order of ``backward`` calls into shared buffers: D receives ``(1 - lam) dL_d``).
        embedding: ``"fixed"`` (the node embeddings passed in, e.g. the official ``g_encode`` file) or
            ``"learned"`` (the paper-time :class:`EmbeddingNet`, trained with :func:`graph_reconstruction_loss`
            over all domains plus whatever gradient the update sends it through the encoder).
        lr_g: Adam learning rate of the learned embeddings (decayed like the others).
        prediction_loss: ``"cross_entropy"`` or ``"official"``, the paper-time ``NLL(log(softmax + 1e-4))``
            (classification only; regression always uses the MSE).
        paired_batches: the official data loader: one shuffled index ``i`` picks the ``i``-th point of
            *every* domain, so (the files being sorted by class) D compares points of the same class.
            ``False``: an independent shuffle per domain.
        dann_relu_logits: the official DANN discriminator's ReLU on its logits.
    """

    method: str = "grda"
    nh: int = 512
    epochs: int = 500
    batch_size: int = 10
    lr_e: float = 1e-4
    lr_d: float = 1e-4
    lr_half_life: float = 100.0
    lam: float = 1.0
    sample_domains: int = 10
    eval_every: int = 25
    init_std: float | None = 0.01
    disc_init_std: float | None | str = "same"
    update: str = "alternating"
    embedding: str = "fixed"
    lr_g: float = 1e-4
    prediction_loss: str = "cross_entropy"
    paired_batches: bool = False
    dann_relu_logits: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        for name, allowed in (("update", UPDATES), ("embedding", EMBEDDINGS), ("prediction_loss", PREDICTION_LOSSES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("nh", "epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lam < 0:
            raise ValueError(f"lam must be >= 0, got {self.lam}")


UPDATES: tuple[str, ...] = ("alternating", "joint")
EMBEDDINGS: tuple[str, ...] = ("fixed", "learned")
PREDICTION_LOSSES: tuple[str, ...] = ("cross_entropy", "official")
#: The official settings of the paper's time (Wang-ML-Lab/GRDA at commit dafc621, 2022-01-30:
#: ``configs/config_random_{15,60}_new.py``, ``model/model.py``, ``model/modules.py``). Today's HEAD has
#: ``lr = 1e-4``, ``lambda = 1`` and fixed embeddings, which arrived on 2022-05-09 (5e92a99), after the paper.
PAPER_TIME = {
    "dg15": dict(lr_e=3e-5, lr_d=3e-5, lr_g=1e-4, lam=0.5, sample_domains=10),
    "dg60": dict(lr_e=1e-5, lr_d=1e-5, lr_g=3e-4, lam=0.5, sample_domains=30),
}
PAPER_TIME_COMMIT = "dafc621"
_PAPER_TIME_COMMON = dict(epochs=500, batch_size=10, lr_half_life=100.0, init_std=0.01, disc_init_std="same",
                          update="joint", embedding="learned", prediction_loss="official", paired_batches=True,
                          dann_relu_logits=True)


#: Today's official DG-15 settings (from 5e92a99, 2022-05-09, on): the paper-time code with
#: ``lr = 1e-4``, ``lambda = 1`` (which freezes D under the joint update) and the fixed ``g_encode_15`` file.
HEAD_CHANGES = dict(lr_e=1e-4, lr_d=1e-4, lam=1.0, embedding="fixed")
HEAD_COMMIT = "5e92a99"


def head_config(method: str, **overrides) -> TrainConfig:
    """The official DG-15 configuration of today's HEAD (see :data:`HEAD_CHANGES`), width 512 unless overridden."""
    return paper_time_config(method, "dg15", **{**HEAD_CHANGES, **overrides})


def paper_time_config(method: str, dataset: str = "dg15", **overrides) -> TrainConfig:
    """The configuration of the paper's time for ``dataset`` (``"dg15"`` or ``"dg60"``), width 512, with
    ``overrides`` (e.g. ``nh=128, seed=1``) applied on top."""
    if dataset not in PAPER_TIME:
        raise ValueError(f"dataset must be one of {tuple(PAPER_TIME)}, got {dataset!r}")
    return TrainConfig(**{"method": method, "nh": 512, **_PAPER_TIME_COMMON, **PAPER_TIME[dataset], **overrides})


@dataclass
class TrainResult:
    """What :func:`train_domain_adaptation` returns.

    ``per_domain``: ``(N,)`` accuracy in % (classification) or MSE (regression) on ``eval_mask``;
    ``target``: its mean over target domains; ``history``: a list of dicts per evaluation (epoch,
    target metric, mean losses); ``encodings``: ``(N, n, nh)`` final encodings; ``predictions``:
    ``(N, n)`` predicted classes or ``(N, n, k)`` outputs; ``embedding``: ``(N, nz)`` the domain
    embeddings the encoder saw at the end (learned or fixed).
    """

    config: TrainConfig
    per_domain: np.ndarray
    target: float
    history: list[dict]
    encodings: np.ndarray
    predictions: np.ndarray
    seconds: float = 0.0
    embedding: np.ndarray | None = None
    models: dict = field(default_factory=dict, repr=False)


def evaluate(data: DomainGraphData, encoder: Encoder, predictor: Predictor, z: torch.Tensor
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(per_domain_metric (N,), encodings (N, n, nh), predictions)`` on all points of every domain."""
    X = torch.as_tensor(data.X)
    with torch.no_grad():
        e = encoder(X, z[:, None, :].expand(-1, X.shape[1], -1))
        out = predictor(e)
    mask = data.eval_mask
    if data.task == "classification":
        pred = out.argmax(-1).numpy()
        correct = (pred == data.y)
        metric = np.array([100.0 * correct[u][mask[u]].mean() for u in range(data.num_domains)])
    else:
        pred = out.numpy()
        err = ((pred - data.y) ** 2).mean(-1)
        metric = np.array([err[u][mask[u]].mean() for u in range(data.num_domains)])
    return metric, e.numpy(), pred


def official_nll_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The paper-time predictor loss, ``NLL(log(softmax(logits) + 1e-4))`` (``PredNet`` + ``F.nll_loss``).

    ``logits: (M, C)``, ``labels: (M,)``. Close to the cross-entropy for a fair prediction, but no
    point costs more than ``-log(1e-4) = 9.2``, so a confidently wrong point stops pulling the model.
    """
    return F.nll_loss(torch.log(logits.softmax(-1) + 1e-4), labels)


def epoch_order(num_domains: int, n: int, paired: bool, rng: np.random.Generator) -> np.ndarray:
    """``(N, n)`` the order in which an epoch visits each domain's points; batch ``s`` takes columns
    ``[s B, (s + 1) B)``. ``paired``: the official loader, one permutation shared by every domain."""
    if paired:
        return np.repeat(rng.permutation(n)[None, :], num_domains, axis=0)
    return np.stack([rng.permutation(n) for _ in range(num_domains)])


def train_domain_adaptation(data: DomainGraphData, config: TrainConfig, node_embedding: np.ndarray | None = None,
                            progress: bool = False) -> TrainResult:
    """Train ``config.method`` on ``data``.

    Every step draws ``batch_size`` points from *every* domain (``x: (N, B, d)``); ``F`` is trained on
    source domains only; targets contribute unlabelled points to the adversarial term. With
    ``update="alternating"`` one step is

    1. ``e = E(x, z)``;
    2. D step: minimise ``L_d(D(e.detach()))`` over D's parameters only;
    3. E/F step: minimise ``L_f(F(e)) - lam * L_d(D(e))`` over E and F (D, just updated, is held fixed).

    With ``update="joint"`` it is the official ``__optimize__``: ``L_g.backward()``, ``zero D``,
    ``L_d.backward()``, ``zero E/F``, ``(L_f - lam L_d).backward()``, then every optimiser steps. So D
    gets ``(1 - lam) dL_d``, E and F get ``d(L_f - lam L_d)`` and learned embeddings
    ``d(L_g + L_f + (1 - lam) L_d)``.

    ``node_embedding`` (``(N, k)``) defaults to ``data.node_embedding``; with ``embedding="learned"`` only
    its width ``k`` is used (2 when there is none).
    """
    import time

    from tqdm.auto import tqdm

    start = time.perf_counter()
    z_np = node_embedding if node_embedding is not None else data.node_embedding
    learned = config.embedding == "learned"
    if z_np is None and not learned:
        raise ValueError("node_embedding is required: pass one or use data with node_embedding")
    if z_np is not None:
        z_np = np.asarray(z_np, dtype=np.float32)
        if z_np.shape[0] != data.num_domains:
            raise ValueError(f"node_embedding must have {data.num_domains} rows, got {z_np.shape}")
    if config.method == "grda" and not 2 <= config.sample_domains <= data.num_domains:
        raise ValueError(f"sample_domains must be in [2, {data.num_domains}], got {config.sample_domains}")
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    N, n, nx = data.X.shape
    nz = 2 if z_np is None else z_np.shape[1]
    classification = data.task == "classification"
    n_out = 2 if classification else data.y.shape[-1]

    def initialise(module: nn.Module, std: float | None | str) -> nn.Module:
        std = config.init_std if std == "same" else std
        return module if std is None else init_official(module, float(std))

    encoder = initialise(Encoder(nx, nz, config.nh), "same")
    predictor = initialise(Predictor(config.nh, n_out), "same")
    gnet = initialise(EmbeddingNet(N, config.nh, nz), "same") if learned else None
    decay = 0.5 ** (1.0 / config.lr_half_life)
    opt_ef = torch.optim.Adam(list(encoder.parameters()) + list(predictor.parameters()), lr=config.lr_e,
                              betas=(0.9, 0.999), foreach=True)
    optimisers = [opt_ef]
    disc: nn.Module | None = None
    if config.method == "grda":
        disc = initialise(GraphDiscriminator(config.nh, 2), config.disc_init_std)
    elif config.method == "dann":
        disc = initialise(DomainClassifier(config.nh, N, relu_logits=config.dann_relu_logits), config.disc_init_std)
    opt_d = opt_g = None
    if disc is not None:
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=(0.9, 0.999), foreach=True)
        optimisers.append(opt_d)
    if gnet is not None:
        opt_g = torch.optim.Adam(gnet.parameters(), lr=config.lr_g, betas=(0.9, 0.999), foreach=True)
        optimisers.append(opt_g)
    schedulers = [torch.optim.lr_scheduler.ExponentialLR(o, decay) for o in optimisers]

    X = torch.as_tensor(data.X)
    Y = torch.as_tensor(data.y)
    A_t = torch.as_tensor(data.A, dtype=torch.float32)
    z_fixed = None if z_np is None else torch.as_tensor(z_np)
    src = torch.as_tensor(data.source_domains, dtype=torch.long)
    domain_ids = torch.arange(N)[:, None]

    def embeddings() -> torch.Tensor:
        return gnet() if gnet is not None else z_fixed

    def adversarial_loss(out: torch.Tensor, domains: np.ndarray | None) -> torch.Tensor:
        if config.method == "grda":
            return graph_discriminator_loss(out, domains, data.A)
        logits = out.reshape(-1, N)
        target = domain_ids.expand(N, out.shape[1]).reshape(-1)
        return F.cross_entropy(logits, target)

    def prediction_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not classification:
            return F.mse_loss(out[src], target[src])
        logits, labels = out[src].reshape(-1, n_out), target[src].reshape(-1)
        if config.prediction_loss == "official":
            return official_nll_loss(logits, labels)
        return F.cross_entropy(logits, labels)

    steps = n // config.batch_size
    history: list[dict] = []
    sums = {"pred": 0.0, "adv": 0.0}
    for epoch in tqdm(range(config.epochs), disable=not progress, desc=config.method, leave=False):
        for net in (encoder, predictor, gnet):
            if net is not None:
                net.train()
        perms = epoch_order(N, n, config.paired_batches, rng)
        for s in range(steps):
            cols = torch.as_tensor(perms[:, s * config.batch_size:(s + 1) * config.batch_size])
            x = torch.gather(X, 1, cols[..., None].expand(-1, -1, nx))
            yb = torch.gather(Y, 1, cols if classification else cols[..., None].expand(-1, -1, n_out))
            z_all = embeddings()
            e = encoder(x, z_all[:, None, :].expand(-1, config.batch_size, -1))
            loss_g = graph_reconstruction_loss(z_all, A_t) if gnet is not None else None
            domains = sample_domains(data.A, config.sample_domains, rng) if config.method == "grda" else None
            loss_adv = torch.zeros(())
            if config.update == "joint":
                if disc is not None:
                    loss_adv = adversarial_loss(disc(e), domains)
                loss_pred = prediction_loss(predictor(e), yb)
                loss = loss_pred - config.lam * loss_adv
                if opt_g is not None:
                    opt_g.zero_grad(set_to_none=True)
                    loss_g.backward(retain_graph=True)
                if opt_d is not None:
                    opt_d.zero_grad(set_to_none=True)
                    # what this pass leaves in E's and F's buffers is zeroed next, so autograd is asked
                    # for D's (and the embeddings') gradients only: the same numbers, less work
                    keep = [*disc.parameters(), *(gnet.parameters() if gnet is not None else ())]
                    loss_adv.backward(retain_graph=True, inputs=keep)
                opt_ef.zero_grad(set_to_none=True)
                loss.backward()
            else:
                if disc is not None:
                    loss_d = adversarial_loss(disc(e.detach()), domains)      # 2. D step
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    loss_adv = adversarial_loss(disc(e), domains)             # 3. E/F step against the new D
                loss_pred = prediction_loss(predictor(e), yb)
                loss = loss_pred - config.lam * loss_adv
                for o in (opt_ef, opt_g):
                    if o is not None:
                        o.zero_grad(set_to_none=True)
                (loss if loss_g is None else loss + loss_g).backward()
                if disc is not None:
                    opt_d.zero_grad(set_to_none=True)                         # D was stepped already
            for o in optimisers:
                o.step()
            sums["pred"] += loss_pred.item()
            sums["adv"] += loss_adv.item()
        for sch in schedulers:
            sch.step()
        if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
            encoder.eval(), predictor.eval()
            with torch.no_grad():
                z_eval = embeddings()
            metric, _, _ = evaluate(data, encoder, predictor, z_eval)
            count = steps * (config.eval_every if (epoch + 1) % config.eval_every == 0
                             else (epoch + 1) % config.eval_every)
            history.append({"epoch": epoch + 1, "target": float(metric[data.target_domains].mean()),
                            "loss_pred": sums["pred"] / count, "loss_adv": sums["adv"] / count})
            sums = {"pred": 0.0, "adv": 0.0}
    encoder.eval(), predictor.eval()
    with torch.no_grad():
        z_final = embeddings()
    metric, enc, pred = evaluate(data, encoder, predictor, z_final)
    return TrainResult(config, metric, float(metric[data.target_domains].mean()), history, enc, pred,
                       seconds=time.perf_counter() - start, embedding=z_final.numpy().copy(),
                       models={"encoder": encoder, "predictor": predictor, "discriminator": disc, "embedding": gnet})


def _train_in_worker(args: tuple) -> TrainResult:
    torch.set_num_threads(1)
    data, config, node_embedding = args
    return train_domain_adaptation(data, config, node_embedding)


def train_many(data: DomainGraphData, configs: Sequence[TrainConfig], node_embedding: np.ndarray | None = None,
               workers: int = 1) -> list[TrainResult]:
    """:func:`train_domain_adaptation` for every config (methods x seeds x settings), in order.

    With ``workers > 1`` the runs go to that many one-thread processes ("spawn": nothing is shared but
    the arguments). These networks are too small to keep two threads busy, so on a 2-core machine two
    one-thread runs side by side do nearly twice the work of one two-thread run. Each run is seeded by
    its config, so the numbers are those of a one-thread run in this process.
    """
    configs = list(configs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(configs) < 2:
        return [train_domain_adaptation(data, c, node_embedding) for c in configs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(workers, len(configs)), mp_context=mp.get_context("spawn")) as pool:
        return list(pool.map(_train_in_worker, [(data, c, node_embedding) for c in configs]))


# ----------------------------------------------------------------------------- the theory, discrete and exact
def binary_entropy(p: torch.Tensor) -> torch.Tensor:
    """``H_b(p) = -p log p - (1 - p) log(1 - p)`` in nats, with ``H_b(0) = H_b(1) = 0``."""
    p = p.clamp(1e-12, 1 - 1e-12)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def pair_alignment(p_e_given_u: torch.Tensor, prior: torch.Tensor, A: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a discrete encoding ``e in {1..K}``: ``(alpha (K, K), p_e (K,))`` with
    ``alpha(e, e') = E_{i ~ p(u|e), j ~ p(u|e')}[A_ij]`` (the paper's optimal ``sigmoid(D*(e) . D*(e'))``).

    ``p_e_given_u: (N, K)`` rows sum to 1; ``prior: (N,)``; ``A: (N, N)``.
    """
    joint = prior[:, None] * p_e_given_u                     # p(u, e)
    p_e = joint.sum(0)
    post = joint / p_e.clamp_min(1e-30)                      # p(u | e), columns sum to 1
    return post.T @ A.to(post.dtype) @ post, p_e


def encoder_objective(p_e_given_u: torch.Tensor, prior: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """The value of D's loss at its optimum, ``E_{e, e'}[H_b(alpha(e, e'))]`` (what the encoder maximises).

    Its maximum ``H_b(alpha_bar)`` with ``alpha_bar = sum_ij p(i) p(j) A_ij`` (independent of the
    encoder, by Jensen) is reached exactly when ``alpha`` is constant.
    """
    alpha, p_e = pair_alignment(p_e_given_u, prior, A)
    return (p_e[:, None] * p_e[None, :] * binary_entropy(alpha)).sum()


def entropy_bound(prior: torch.Tensor, A: torch.Tensor) -> torch.Tensor:
    """``H_b(alpha_bar)``, ``alpha_bar = prior^T A prior``: the largest value of :func:`encoder_objective`."""
    return binary_entropy(prior @ A.to(prior.dtype) @ prior)


def equilibrium_encoder(A: np.ndarray, n_codes: int = 6, steps: int = 3000, lr: float = 0.05, seed: int = 0,
                        prior: np.ndarray | None = None) -> np.ndarray:
    """An encoder ``p(e | u): (N, n_codes)`` that maximises :func:`encoder_objective` for graph ``A``,
    found by gradient ascent on softmax logits from a random start (float64, uniform prior by default)."""
    A_t = torch.as_tensor(np.asarray(A), dtype=torch.float64)
    N = A_t.shape[0]
    pr = torch.full((N,), 1.0 / N, dtype=torch.float64) if prior is None else torch.as_tensor(prior, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    logits = (2 * torch.randn(N, n_codes, generator=gen, dtype=torch.float64)).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    for _ in range(steps):
        loss = -encoder_objective(logits.softmax(1), pr, A_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return logits.detach().softmax(1).numpy()
