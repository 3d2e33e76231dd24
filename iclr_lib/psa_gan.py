"""PSA-GAN: progressive self-attention GANs for synthetic time series
(Jeha, Bohlke-Schneider, Mercado, Kapoor, Nirwan, Flunkert, Gasthaus, Januschowski; ICLR 2022).

A generator and a discriminator of 1-D convolutions grow together from windows of length 8 to the
full length, doubling at each stage, with a linear fade-in of every new block. Each block is a
spectrally normalised convolution followed by self-attention whose residual gate ``gamma`` starts
at 0. The loss is least squares (LSGAN) plus a *moment loss* that matches each synthetic window's
mean and standard deviation to those of the real window it was conditioned on.

The pieces, in the order of the chapter:

- Data: :func:`load_m4_hourly` (the 414 M4 hourly series), :func:`split_series`,
  :class:`WindowSampler` (random windows, per-window min-max scaling, positional time features).
- Networks: :class:`SelfAttention`, :class:`MainBlock`, :class:`Generator`, :class:`Discriminator`,
  :func:`fade`; losses :func:`lsgan_losses` and :func:`moment_loss`; :func:`train_psagan` with its
  :class:`GANConfig` (including the ablations: no self-attention, no moment loss, no fading, and
  the official soft min-max output scaling, :func:`soft_min_max_scale`); checkpoint selection on
  validation series by :class:`ACFSelector`; :func:`train_many` for several runs in worker processes.
- Baselines: :func:`fit_ar1` / :func:`sample_ar1`, the seasonal AR :func:`fit_seasonal_ar` /
  :func:`sample_seasonal_ar` (seeded or fully synthetic) and :func:`sample_noise`.
- Metrics: :func:`frechet_distance`, :class:`TSEncoder` trained by :func:`train_ts2vec_encoder`
  (for Context-FID), :func:`context_fid`, :func:`paired_context_fid` (the official protocol: paired
  windows, batch by batch), :func:`acf_distance`, :func:`discriminative_score`,
  :func:`forecast_error` (train on one set of windows, test on real ones: TSTR).

Shapes: ``B`` windows, ``C`` channels, ``L`` time steps; a batch of series is ``(B, 1, L)`` and its
time features ``(B, F, L)``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

# ----------------------------------------------------------------------------- data
PERIODS = (24.0, 168.0)   # hourly data: daily and weekly cycles


def load_m4_hourly(with_test: bool = True) -> list[np.ndarray]:
    """The 414 M4 hourly series through the registry (700 or 960 training values each).

    With ``with_test`` the 48 values of the M4 test horizon are appended (748 or 1,008 values): the
    generator has no use for the forecasting split, and longer series give more windows.
    """
    import pandas as pd

    from .data import fetch

    root = fetch("m4_hourly", ["Hourly-train.csv", "Hourly-test.csv"], verbose=False)
    train = pd.read_csv(root / "Hourly-train.csv").iloc[:, 1:].to_numpy(dtype=np.float64)
    test = pd.read_csv(root / "Hourly-test.csv").iloc[:, 1:].to_numpy(dtype=np.float64)
    series = []
    for row, tail in zip(train, test):
        values = row[~np.isnan(row)]
        series.append(np.concatenate([values, tail]) if with_test else values)
    return series


def split_series(n_series: int, n_held_out: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_ids, held_out_ids)``: a random split *by series* (held-out series are never seen in training)."""
    if not 0 < n_held_out < n_series:
        raise ValueError(f"n_held_out must be in (0, {n_series}), got {n_held_out}")
    order = np.random.default_rng(seed).permutation(n_series)
    return np.sort(order[n_held_out:]), np.sort(order[:n_held_out])


def time_features(positions: np.ndarray) -> np.ndarray:
    """``(..., F=4)`` positional features: sine and cosine of the daily and weekly phase of each index.

    M4 gives no timestamps, so the phase is counted from each series' first value."""
    positions = np.asarray(positions, dtype=np.float64)[..., None]
    angles = 2 * math.pi * positions / np.asarray(PERIODS)
    return np.concatenate([np.sin(angles), np.cos(angles)], -1).astype(np.float32)


def minmax_scale(windows: np.ndarray) -> np.ndarray:
    """Scale each window (last axis) to ``[0, 1]``; constant windows become 0.5."""
    lo, hi = windows.min(-1, keepdims=True), windows.max(-1, keepdims=True)
    span = hi - lo
    return np.where(span > 0, (windows - lo) / np.where(span > 0, span, 1), 0.5).astype(np.float32)


class WindowSampler:
    """Random windows of length ``length`` from a set of series, min-max scaled per window.

    ``sample(n, rng)`` returns ``(x (n, 1, L), t (n, F, L))``: the scaled values and the positional
    time features of the window's positions in its series.
    """

    def __init__(self, series: Sequence[np.ndarray], length: int) -> None:
        if length < 2:
            raise ValueError(f"length must be >= 2, got {length}")
        self.series = [np.asarray(s, dtype=np.float64) for s in series if len(s) >= length]
        if not self.series:
            raise ValueError(f"no series is at least {length} long")
        self.length = length
        self.starts = np.array([len(s) - length + 1 for s in self.series])

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        which = rng.integers(0, len(self.series), n)
        starts = (rng.random(n) * self.starts[which]).astype(int)
        values = np.stack([self.series[w][s:s + self.length] for w, s in zip(which, starts)])
        positions = starts[:, None] + np.arange(self.length)
        x = torch.as_tensor(minmax_scale(values))[:, None, :]
        t = torch.as_tensor(time_features(positions)).permute(0, 2, 1).contiguous()
        return x, t


# ----------------------------------------------------------------------------- networks
class SelfAttention(nn.Module):
    """Self-attention over time with a residual gate: ``x + gamma * Conv1x1(Attn(x))``, ``(B, C, L) -> (B, C, L)``.

    Queries and keys have ``key_dim`` channels and values ``value_dim`` (1x1 convolutions); a 1x1
    convolution maps the attended values back to ``C`` channels. ``gamma`` starts at 0, so a new block
    starts as the identity and learns how much attention to mix in (SAGAN, PSA-GAN). The defaults are
    the official configuration (``run_gan.py``: ``key_features = value_features = 1``; in ``_model.py``
    only the block's main convolution is spectrally normalised, not these four).
    """

    def __init__(self, channels: int, key_dim: int = 1, value_dim: int = 1) -> None:
        super().__init__()
        if min(channels, key_dim, value_dim) < 1:
            raise ValueError(f"channels, key_dim and value_dim must be >= 1, got {channels}, {key_dim}, {value_dim}")
        self.query = nn.Conv1d(channels, key_dim, 1)
        self.key = nn.Conv1d(channels, key_dim, 1)
        self.value = nn.Conv1d(channels, value_dim, 1)
        self.out = nn.Conv1d(value_dim, channels, 1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = pointwise(self.query, x), pointwise(self.key, x), pointwise(self.value, x)               # (B, d, L), (B, d, L), (B, d_v, L)
        # broadcast products rather than bmm: with one or a few key and value channels they are faster
        scores = (q.unsqueeze(-1) * k.unsqueeze(-2)).sum(1) / math.sqrt(q.shape[1])   # (B, L, L): q_i . k_j
        weights = torch.softmax(scores, dim=-1)                                        # (B, L, L)
        attended = (weights.unsqueeze(1) * v.unsqueeze(-2)).sum(-1)                    # (B, d_v, L)
        return x + self.gamma * pointwise(self.out, attended)


class MainBlock(nn.Module):
    """PSA-GAN's block: ``c = LeakyReLU(SN-Conv1d_k3(x))``, then ``c + gamma * SA(c)`` (or ``c`` alone).
    The slope of the LeakyReLU is PyTorch's default 0.01, as in the official block."""

    def __init__(self, in_channels: int, channels: int, attention: bool = True) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv1d(in_channels, channels, 3, padding=1))
        self.attention = SelfAttention(channels) if attention else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = F.leaky_relu(self.conv(x), 0.01)
        return c if self.attention is None else self.attention(c)


def fade(new: torch.Tensor, old: torch.Tensor, alpha: float) -> torch.Tensor:
    """The fade-in of a new stage: ``alpha * new + (1 - alpha) * old`` (``alpha`` goes 0 -> 1)."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    return alpha * new + (1.0 - alpha) * old


def _pool_to(t: torch.Tensor, length: int) -> torch.Tensor:
    """Average-pool ``(B, C, L)`` to ``length`` steps (plain pooling when ``length`` divides ``L``: faster)."""
    if t.shape[-1] == length:
        return t
    if t.shape[-1] % length == 0:
        return F.avg_pool1d(t, t.shape[-1] // length)
    return F.adaptive_avg_pool1d(t, length)


def pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution ``(B, C_in, L) -> (B, C_out, L)`` computed as a matrix product: the same numbers as
    ``conv(x)``, several times faster on a CPU when a side has one or a few channels."""
    out = torch.matmul(conv.weight[:, :, 0], x)
    return out if conv.bias is None else out + conv.bias[:, None]


SCALINGS = ("none", "local")   # the generator's output: free, or soft min-max scaled per window


def soft_min_max_scale(x: torch.Tensor, sharpness: float = 100.0) -> torch.Tensor:
    """Scale every series of ``x (B, 1, L)`` to about ``[0, 1]`` with differentiable min and max.

    The official generator does this to its output under "local" scaling (``_model.py``,
    ``_softmax_min_max_scaling`` with ``alpha = 100``): ``min ~ sum_t x_t softmax(-a x)_t`` and
    ``max ~ sum_t x_t softmax(a x)_t``, then ``(x - min) / (max - min)``. A constant series has
    ``max = min``; a tiny floor on the denominator keeps it finite.
    """
    soft_min = (x * torch.softmax(-sharpness * x, dim=-1)).sum(-1, keepdim=True)
    soft_max = (x * torch.softmax(sharpness * x, dim=-1)).sum(-1, keepdim=True)
    return (x - soft_min) / (soft_max - soft_min).clamp_min(1e-8)


class Generator(nn.Module):
    """``G(z, t) -> x``: noise ``z (B, Z, L)`` and time features ``t (B, F, L)`` to a series ``(B, 1, 8 * 2^stage)``.

    Both inputs are average-pooled to length 8 and pass the initial block; every stage then doubles
    the length (nearest-neighbour upsampling), appends the time features pooled to that length, and
    applies a :class:`MainBlock`. Each stage has its own 1x1 output convolution; during the fade-in of
    stage ``s`` the output is ``fade(out_s, upsample(out_{s-1}), alpha)``.

    ``scaling="local"`` passes the output through :func:`soft_min_max_scale`, as the official generator
    does when windows are min-max scaled one by one; ``"none"`` leaves a free linear output.
    """

    def __init__(self, depth: int, noise_dim: int = 4, feature_dim: int = 4, channels: int = 32,
                 attention: bool = True, scaling: str = "none") -> None:
        super().__init__()
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        self.depth, self.noise_dim, self.scaling = depth, noise_dim, scaling
        self.initial = MainBlock(noise_dim + feature_dim, channels, attention)
        self.blocks = nn.ModuleList(MainBlock(channels + feature_dim, channels, attention) for _ in range(depth))
        self.to_series = nn.ModuleList(spectral_norm(nn.Conv1d(channels, 1, 1)) for _ in range(depth + 1))

    def forward(self, z: torch.Tensor, t: torch.Tensor, stage: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        stage = self.depth if stage is None else stage
        if not 0 <= stage <= self.depth:
            raise ValueError(f"stage must be in [0, {self.depth}], got {stage}")
        h = self.initial(torch.cat([_pool_to(z, 8), _pool_to(t, 8)], 1))
        previous = None
        for s in range(1, stage + 1):
            previous = h
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            h = self.blocks[s - 1](torch.cat([h, _pool_to(t, h.shape[-1])], 1))
        out = pointwise(self.to_series[stage], h)
        if stage > 0 and alpha < 1.0:
            old = F.interpolate(pointwise(self.to_series[stage - 1], previous), scale_factor=2, mode="nearest")
            out = fade(out, old, alpha)
        return soft_min_max_scale(out) if self.scaling == "local" else out


class Discriminator(nn.Module):
    """``D(x, t) -> (B,)``: the mirror image of :class:`Generator`, from length ``8 * 2^stage`` down to 8.

    Each stage has its own 1x1 input convolution (series and pooled time features); each block is a
    :class:`MainBlock` followed by average pooling by 2; the last layer is a spectrally normalised
    linear map of the length-8 features. During the fade-in of stage ``s`` the input to the next
    block down is ``fade(pool(block_s(in_s(x))), in_{s-1}(pool(x)), alpha)``.
    """

    def __init__(self, depth: int, feature_dim: int = 4, channels: int = 32, attention: bool = True) -> None:
        super().__init__()
        self.depth = depth
        self.from_series = nn.ModuleList(spectral_norm(nn.Conv1d(1 + feature_dim, channels, 1)) for _ in range(depth + 1))
        self.blocks = nn.ModuleList(MainBlock(channels, channels, attention) for _ in range(depth))
        self.final_block = MainBlock(channels, channels, attention)
        self.head = spectral_norm(nn.Linear(channels * 8, 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, stage: int | None = None, alpha: float = 1.0) -> torch.Tensor:
        stage = self.depth if stage is None else stage
        if x.shape[-1] != 8 * 2 ** stage:
            raise ValueError(f"stage {stage} expects length {8 * 2 ** stage}, got {x.shape[-1]}")
        h = F.leaky_relu(pointwise(self.from_series[stage], torch.cat([x, _pool_to(t, x.shape[-1])], 1)), 0.2)
        for s in range(stage, 0, -1):
            h = F.avg_pool1d(self.blocks[s - 1](h), 2)
            if s == stage and alpha < 1.0:
                xs = F.avg_pool1d(x, 2)
                old = F.leaky_relu(pointwise(self.from_series[s - 1], torch.cat([xs, _pool_to(t, xs.shape[-1])], 1)), 0.2)
                h = fade(h, old, alpha)
        return self.head(self.final_block(h).flatten(1)).squeeze(1)


# ----------------------------------------------------------------------------- losses
def lsgan_losses(d_real: torch.Tensor, d_fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(L_D, L_G)`` of least-squares GANs: ``L_D = 1/2 E[(D(x) - 1)^2] + 1/2 E[D(G(z))^2]``,
    ``L_G = 1/2 E[(D(G(z)) - 1)^2]`` (pass ``d_fake`` detached from G for the D step)."""
    loss_d = 0.5 * ((d_real - 1) ** 2).mean() + 0.5 * (d_fake ** 2).mean()
    return loss_d, lsgan_generator_loss(d_fake)


def lsgan_generator_loss(d_fake: torch.Tensor) -> torch.Tensor:
    """``L_G = 1/2 E[(D(G(z)) - 1)^2]``, the generator's half of :func:`lsgan_losses` (no ``D(real)`` needed)."""
    return 0.5 * ((d_fake - 1) ** 2).mean()


def moment_loss(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """PSA-GAN's moment loss: ``mean_b |std_t(fake_b) - std_t(real_b)| + mean_b |mean_t(fake_b) - mean_t(real_b)|``
    for paired windows ``(B, 1, L)`` (each fake window was generated with its real window's time features)."""
    if fake.shape != real.shape:
        raise ValueError(f"fake and real must have the same shape, got {tuple(fake.shape)} and {tuple(real.shape)}")
    return ((fake.std(-1) - real.std(-1)).abs().mean() + (fake.mean(-1) - real.mean(-1)).abs().mean())


# ----------------------------------------------------------------------------- training
@dataclass(frozen=True)
class GANConfig:
    """Hyper-parameters of :func:`train_psagan`.

    Attributes:
        length: window length; must be ``8 * 2^depth``.
        iterations: generator steps in all, spread evenly over the ``depth + 1`` stages (as the official
            schedule spreads its epochs).
        fade_fraction: share of each new stage spent fading it in (linear ``alpha`` 0 -> 1; official 2 of 5 epochs).
        batch_size, channels, noise_dim: sizes.
        lr_g, lr_d: Adam learning rates (betas 0.5, 0.999); ``d_steps`` D steps per G step (official 2).
        moment_weight: ``lambda_ML`` (official 1; 0 is the "no moment loss" ablation).
        attention: self-attention in every block (False: the "no SA" ablation).
        progressive: grow from length 8 (False: train the full-length networks from the start, the
            "no progressive growing" ablation, with the same number of steps).
        ema: generator weights are averaged with this decay for sampling (0, the default: no averaging;
            with our short training, averaging over 100 or more steps lagged behind and hurt).
        scaling: the generator's output, ``"none"`` (a free linear output) or ``"local"`` (soft min-max
            scaled to [0, 1] per window, as the official generator under local scaling).
    """

    length: int = 64
    iterations: int = 1500
    fade_fraction: float = 0.4
    batch_size: int = 64
    channels: int = 32
    noise_dim: int = 4
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    d_steps: int = 2
    moment_weight: float = 1.0
    attention: bool = True
    progressive: bool = True
    ema: float = 0.0
    scaling: str = "none"
    seed: int = 0

    @property
    def depth(self) -> int:
        return int(round(math.log2(self.length / 8)))

    def __post_init__(self) -> None:
        if self.length < 8 or 8 * 2 ** self.depth != self.length:
            raise ValueError(f"length must be 8 * 2^depth (8, 16, 32, 64, 128, ...), got {self.length}")
        if self.iterations < self.depth + 1:
            raise ValueError(f"iterations must be at least {self.depth + 1} (one per stage)")
        if not 0.0 <= self.fade_fraction < 1.0 or not 0.0 <= self.ema < 1.0:
            raise ValueError("fade_fraction and ema must be in [0, 1)")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.moment_weight < 0 or self.d_steps < 1:
            raise ValueError("moment_weight must be >= 0 and d_steps >= 1")


@dataclass
class GANResult:
    """What :func:`train_psagan` returns: the ``generator`` for sampling (the selected checkpoint when a
    ``selector`` was given), the ``discriminator``, a ``history`` of per-stage losses, ``stage_samples`` (a
    few windows at the end of every stage, for plotting) and ``selection`` (the checkpoints scored by the
    selector: ``iteration``, ``score``)."""

    config: GANConfig
    generator: Generator
    discriminator: Discriminator
    history: list[dict] = field(default_factory=list)
    stage_samples: dict = field(default_factory=dict)
    seconds: float = 0.0
    selection: list[dict] = field(default_factory=list)
    last_generator: Generator | None = None


def schedule(config: GANConfig, iteration: int) -> tuple[int, float]:
    """``(stage, alpha)`` at generator step ``iteration``: stages get equal shares of the steps, and
    the first ``fade_fraction`` of every stage after the first fades it in."""
    if not config.progressive:
        return config.depth, 1.0
    per_stage = config.iterations / (config.depth + 1)
    stage = min(int(iteration // per_stage), config.depth)
    into = (iteration - stage * per_stage) / per_stage
    alpha = 1.0 if stage == 0 or config.fade_fraction == 0 else min(1.0, into / config.fade_fraction)
    return stage, alpha


def train_psagan(sampler: WindowSampler, config: GANConfig = GANConfig(), progress: bool = False,
                 selector: Callable[[Generator], float] | None = None, select_every: int = 25) -> GANResult:
    """Train PSA-GAN on windows from ``sampler`` (whose length must equal ``config.length``).

    Each generator step: ``d_steps`` discriminator steps on fresh real windows (pooled to the current
    length) against fakes generated with those windows' time features, then one generator step on
    ``L_G + lambda_ML * moment_loss``.

    Checkpoint selection: GAN losses do not say when the samples are good, and the last step is one
    sample of an oscillating process. With a ``selector`` (a function of the generator, in eval mode,
    returning a score where lower is better, e.g. Context-FID against *training* windows), the generator
    is scored every ``select_every`` steps once the last stage is fully faded in (without progressive
    growing: over the same final stretch of steps), and at the end; the best checkpoint is returned. Without one, the generator after the last step is returned.
    """
    import copy

    from tqdm.auto import tqdm

    if sampler.length != config.length:
        raise ValueError(f"sampler windows have length {sampler.length}, config.length is {config.length}")
    if select_every < 1:
        raise ValueError(f"select_every must be >= 1, got {select_every}")
    best_state = None
    # the last stage once faded in; the same stretch of steps without progressive growing
    selectable_from = config.iterations - config.iterations / (config.depth + 1) * (1 - config.fade_fraction)
    start = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    features = time_features(np.zeros(1)).shape[-1]
    G = Generator(config.depth, config.noise_dim, features, config.channels, config.attention, config.scaling)
    D = Discriminator(config.depth, features, config.channels, config.attention)
    G_avg = copy.deepcopy(G).requires_grad_(False)
    opt_g = torch.optim.Adam(G.parameters(), lr=config.lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(D.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
    result = GANResult(config, G_avg, D)
    sums, count, last_stage = {"loss_d": 0.0, "loss_g": 0.0, "moment": 0.0}, 0, 0

    def batch(stage: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, t = sampler.sample(config.batch_size, rng)
        z = torch.randn(config.batch_size, config.noise_dim, config.length)
        return _pool_to(x, 8 * 2 ** stage), t, z

    def record(stage: int, iteration: int) -> None:
        nonlocal sums, count
        result.history.append({"stage": stage, "iteration": iteration, "length": 8 * 2 ** stage,
                               **{k: v / max(count, 1) for k, v in sums.items()}})
        with torch.no_grad():
            x, t, z = batch(stage)
            result.stage_samples[stage] = G_avg(z[:4], t[:4], stage).squeeze(1).numpy()
        sums, count = {k: 0.0 for k in sums}, 0

    for it in tqdm(range(config.iterations), disable=not progress, desc="PSA-GAN", leave=False):
        stage, alpha = schedule(config, it)
        if stage != last_stage:
            record(last_stage, it)
            last_stage = stage
        for _ in range(config.d_steps):
            real, t, z = batch(stage)
            with torch.no_grad():
                fake = G(z, t, stage, alpha)
            # one forward pass of D over real and fake windows (D has no batch statistics)
            d_out = D(torch.cat([real, fake]), torch.cat([t, t]), stage, alpha)
            loss_d, _ = lsgan_losses(d_out[:len(real)], d_out[len(real):])
            opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            opt_d.step()
        real, t, z = batch(stage)   # real: the windows whose time features condition the fakes (moment loss)
        fake = G(z, t, stage, alpha)
        D.requires_grad_(False)     # the generator step needs D's input gradient only
        loss_g = lsgan_generator_loss(D(fake, t, stage, alpha))
        D.requires_grad_(True)
        moments = moment_loss(fake, real)
        opt_g.zero_grad(set_to_none=True)
        (loss_g + config.moment_weight * moments).backward()
        opt_g.step()
        with torch.no_grad():
            for p_avg, p in zip(G_avg.parameters(), G.parameters()):
                p_avg.lerp_(p, 1.0 - config.ema)
            for b_avg, b in zip(G_avg.buffers(), G.buffers()):
                b_avg.copy_(b)
        if selector is not None and it >= selectable_from and (
                (it + 1) % select_every == 0 or it + 1 == config.iterations):
            G_avg.eval()
            with torch.no_grad():
                score = float(selector(G_avg))
            G_avg.train()
            result.selection.append({"iteration": it + 1, "score": score})
            if score <= min(r["score"] for r in result.selection):
                best_state = copy.deepcopy(G_avg.state_dict())
        sums["loss_d"] += loss_d.item()
        sums["loss_g"] += loss_g.item()
        sums["moment"] += moments.item()
        count += 1
    # copied before record(), whose forward pass in train mode moves the spectral-norm vectors
    last = copy.deepcopy(G_avg).eval() if result.selection else G_avg
    record(last_stage, config.iterations)
    if result.selection:
        G_avg.load_state_dict(best_state)
    result.last_generator = last
    G_avg.eval()
    result.seconds = time.perf_counter() - start
    return result


class ACFSelector:
    """A checkpoint selector for :func:`train_psagan` that never looks at the reported metric or data:
    the ACF distance (:func:`acf_distance`, lags up to ``max_lag``) between ``real (n, L)`` windows of
    *validation* series and the generator's samples for their time features ``t (n, F, L)``.
    A plain class (not a closure), so that it can be sent to worker processes."""

    def __init__(self, real: np.ndarray, t: torch.Tensor, max_lag: int = 48, seed: int = 0) -> None:
        real = np.asarray(real, dtype=np.float32)
        if real.ndim != 2 or t.ndim != 3 or t.shape[0] != real.shape[0] or t.shape[-1] != real.shape[1]:
            raise ValueError(f"real must be (n, L) and t (n, F, L), got {real.shape} and {tuple(t.shape)}")
        if not 0 < max_lag < real.shape[1]:
            raise ValueError(f"max_lag must be in (0, {real.shape[1]}), got {max_lag}")
        self.real, self.t, self.max_lag, self.seed = real, t, max_lag, seed

    def __call__(self, generator: Generator) -> float:
        return acf_distance(self.real, generate(generator, self.t, seed=self.seed), self.max_lag)


def _train_in_worker(args: tuple) -> dict:
    sampler, config, selector, select_every = args
    torch.set_num_threads(1)
    r = train_psagan(sampler, config, selector=selector, select_every=select_every)
    return {"generator": r.generator.state_dict(), "discriminator": r.discriminator.state_dict(),
            "last_generator": None if r.last_generator is None else r.last_generator.state_dict(),
            "history": r.history, "stage_samples": r.stage_samples, "seconds": r.seconds, "selection": r.selection}


def train_many(sampler: WindowSampler, configs: Sequence[GANConfig], selector: Callable[[Generator], float] | None = None,
               select_every: int = 25, workers: int = 1) -> list[GANResult]:
    """:func:`train_psagan` for every config (e.g. the variants of a chapter times its seeds), in order.

    With ``workers > 1`` the runs go to that many processes of one thread each ("spawn": nothing is
    shared but the arguments). On a 2-core machine two one-thread runs side by side do nearly twice
    the work of one two-thread run, because these networks are too small to keep two threads busy.
    Each run is seeded by its config, so the results do not depend on ``workers``: they are those of a
    one-thread run in this process (up to float rounding in the last digits). ``selector`` must be
    picklable when ``workers > 1`` (e.g. an :class:`ACFSelector`).
    """
    configs = list(configs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if workers == 1 or len(configs) < 2:
        return [train_psagan(sampler, c, selector=selector, select_every=select_every) for c in configs]
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    features = time_features(np.zeros(1)).shape[-1]
    with ProcessPoolExecutor(min(workers, len(configs)), mp_context=mp.get_context("spawn")) as pool:
        outs = list(pool.map(_train_in_worker, [(sampler, c, selector, select_every) for c in configs]))
    results = []
    for c, o in zip(configs, outs):
        def build(state: dict) -> Generator:
            g = Generator(c.depth, c.noise_dim, features, c.channels, c.attention, c.scaling)
            g.load_state_dict(state)
            return g.eval()

        D = Discriminator(c.depth, features, c.channels, c.attention)
        D.load_state_dict(o["discriminator"])
        results.append(GANResult(c, build(o["generator"]), D.eval(), o["history"], o["stage_samples"], o["seconds"],
                                 o["selection"], None if o["last_generator"] is None else build(o["last_generator"])))
    return results


def generate(generator: Generator, t: torch.Tensor, seed: int = 0, batch: int = 512) -> np.ndarray:
    """``(n, L)`` synthetic windows for time features ``t (n, F, L)`` (full depth, no fading)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    with torch.no_grad():
        for s in range(0, t.shape[0], batch):
            tb = t[s:s + batch]
            z = torch.randn(tb.shape[0], generator.noise_dim, tb.shape[-1], generator=gen)
            out.append(generator(z, tb).squeeze(1))
    return torch.cat(out).numpy()


# ----------------------------------------------------------------------------- baselines
SEASONAL_LAGS = (1, 2, 24, 25)


def fit_seasonal_ar(windows: np.ndarray, lags: Sequence[int] = SEASONAL_LAGS) -> tuple[np.ndarray, float]:
    """Least-squares AR on the given lags, pooled over windows ``(n, L)``:
    ``x_t = w_0 + sum_j w_j x_{t - lag_j} + eps``, ``eps ~ N(0, sigma^2)``.

    With lags 1, 2, 24 and 25 it models the last two hours and the same hours a day earlier, a
    strong classical baseline for hourly series. Returns ``(w (1 + len(lags),), sigma)``.
    """
    w = np.asarray(windows, dtype=np.float64)
    lags = tuple(int(lag) for lag in lags)
    if w.ndim != 2 or not lags or min(lags) < 1:
        raise ValueError(f"windows must be (n, L) and lags positive, got {w.shape} and {lags}")
    p = max(lags)
    if w.shape[1] <= p:
        raise ValueError(f"windows of length {w.shape[1]} are too short for lag {p}")
    target = w[:, p:].ravel()
    design = np.column_stack([np.ones_like(target)] + [w[:, p - lag:w.shape[1] - lag].ravel() for lag in lags])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    return coef, float(np.std(target - design @ coef))


def sample_seasonal_ar(coef: np.ndarray, sigma: float, length: int, n: int | None = None,
                       start: np.ndarray | None = None, lags: Sequence[int] = SEASONAL_LAGS, burn_in: int = 200,
                       seed: int = 0) -> np.ndarray:
    """``(n, length)`` paths of the AR of :func:`fit_seasonal_ar`.

    ``start (n, max(lags))``: the first ``max(lags)`` values of every path are these real values (the
    "seeded" baseline) and the rest is simulated. Without ``start`` the paths are fully synthetic:
    started at the process mean and run for ``burn_in`` steps before the kept ``length``.
    """
    lags = tuple(int(lag) for lag in lags)
    p = max(lags)
    coef = np.asarray(coef, dtype=np.float64)
    if coef.shape != (len(lags) + 1,):
        raise ValueError(f"coef must have {len(lags) + 1} entries (intercept, one per lag), got {coef.shape}")
    rng = np.random.default_rng(seed)
    if start is not None:
        start = np.asarray(start, dtype=np.float64)
        if start.ndim != 2 or start.shape[1] != p or length < p:
            raise ValueError(f"start must be (n, {p}) and length >= {p}, got {start.shape} and {length}")
        n, skip, total = start.shape[0], 0, length
    else:
        if n is None:
            raise ValueError("give n (fully synthetic paths) or start (seeded paths)")
        mean = coef[0] / (1.0 - coef[1:].sum()) if abs(1.0 - coef[1:].sum()) > 1e-8 else 0.0
        start, skip, total = np.full((n, p), mean), burn_in, burn_in + length
    out = np.empty((n, max(total, p)))
    out[:, :p] = start
    for i in range(p, total):
        out[:, i] = coef[0] + sum(c * out[:, i - lag] for c, lag in zip(coef[1:], lags)) + sigma * rng.standard_normal(n)
    return out[:, skip:skip + length].astype(np.float32)


def fit_ar1(windows: np.ndarray) -> tuple[float, float, float]:
    """Least-squares AR(1) ``x_t = c + phi x_{t-1} + eps``, ``eps ~ N(0, sigma^2)``, pooled over windows ``(n, L)``:
    :func:`fit_seasonal_ar` with the single lag 1. Returns ``(c, phi, sigma)``."""
    (c, phi), sigma = fit_seasonal_ar(windows, lags=(1,))
    return float(c), float(phi), sigma


def sample_ar1(c: float, phi: float, sigma: float, first_values: np.ndarray, length: int, seed: int = 0) -> np.ndarray:
    """``(n, length)`` AR(1) paths starting at ``first_values (n,)`` (:func:`sample_seasonal_ar`, lag 1)."""
    start = np.asarray(first_values, dtype=np.float64)[:, None]
    return sample_seasonal_ar(np.array([c, phi]), sigma, length, start=start, lags=(1,), seed=seed)


def sample_noise(n: int, length: int, seed: int = 0) -> np.ndarray:
    """``(n, length)`` i.i.d. uniform noise on [0, 1] (the range of min-max scaled windows)."""
    return np.random.default_rng(seed).random((n, length)).astype(np.float32)


# ----------------------------------------------------------------------------- metrics
def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """The Fréchet distance between Gaussians fitted to the rows of ``a (n, d)`` and ``b (m, d)``:
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` (FID when the rows are embeddings).

    The trace of the root is computed as ``sum sqrt(eig(S_a^{1/2} S_b S_a^{1/2}))`` (the same eigenvalues
    as ``S_a S_b``, but of a symmetric matrix), with numpy's ``eigh`` only: no ``scipy.linalg.sqrtm``,
    whose signature and 1x1 behaviour changed between scipy releases.
    """
    a, b = np.atleast_2d(np.asarray(a, np.float64)), np.atleast_2d(np.asarray(b, np.float64))
    if a.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"a and b must be (n, d) and (m, d), got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    w, v = np.linalg.eigh(cov_a)
    half_a = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T                      # S_a^{1/2}
    trace_root = np.sqrt(np.clip(np.linalg.eigvalsh(half_a @ cov_b @ half_a), 0.0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root)


class TSEncoder(nn.Module):
    """A small TS2Vec-style encoder: input projection, ``layers`` dilated residual convolutions
    (dilation 1, 2, 4, ...), max-pooling over time: ``(B, 1, L) -> (B, out_dim)``."""

    def __init__(self, channels: int = 32, out_dim: int = 32, layers: int = 4) -> None:
        super().__init__()
        self.inp = nn.Conv1d(1, channels, 1)
        self.convs = nn.ModuleList(nn.Conv1d(channels, channels, 3, padding=2 ** i, dilation=2 ** i) for i in range(layers))
        self.out = nn.Conv1d(channels, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        for conv in self.convs:
            h = h + F.gelu(conv(h))
        return self.out(h).amax(-1)


def train_ts2vec_encoder(windows: np.ndarray, steps: int = 300, batch_size: int = 128, crop: float = 0.75,
                         temperature: float = 0.1, lr: float = 1e-3, seed: int = 0, progress: bool = False
                         ) -> TSEncoder:
    """Train :class:`TSEncoder` with an instance-contrastive loss on two random crops of each window.

    Two overlapping crops of the same window are positives, every other window in the batch a
    negative (InfoNCE on cosine similarities). No labels; only real training windows ``(n, L)``.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    data = torch.as_tensor(np.asarray(windows, dtype=np.float32))[:, None, :]
    n, L = data.shape[0], data.shape[-1]
    size = max(4, int(crop * L))
    enc = TSEncoder()
    opt = torch.optim.Adam(enc.parameters(), lr=lr)
    for _ in tqdm(range(steps), disable=not progress, desc="Context-FID encoder", leave=False):
        idx = torch.as_tensor(rng.integers(0, n, batch_size))
        a0, b0 = rng.integers(0, L - size + 1, 2)
        za = F.normalize(enc(data[idx, :, a0:a0 + size]), dim=1)
        zb = F.normalize(enc(data[idx, :, b0:b0 + size]), dim=1)
        logits = za @ zb.T / temperature
        labels = torch.arange(batch_size)
        loss = 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return enc.eval()


def embed_windows(encoder: TSEncoder, windows: np.ndarray, batch: int = 1024) -> np.ndarray:
    """``(n, out_dim)`` embeddings of windows ``(n, L)``."""
    x = torch.as_tensor(np.asarray(windows, dtype=np.float32))[:, None, :]
    with torch.no_grad():
        return torch.cat([encoder(x[s:s + batch]) for s in range(0, len(x), batch)]).numpy()


def context_fid(encoder: TSEncoder, real: np.ndarray, synthetic: np.ndarray) -> float:
    """Context-FID: the Fréchet distance between the encoder's embeddings of real and synthetic windows."""
    return frechet_distance(embed_windows(encoder, real), embed_windows(encoder, synthetic))


def paired_context_fid(encoder: TSEncoder, real: np.ndarray, synthetic: np.ndarray, n_batches: int = 10
                       ) -> np.ndarray:
    """Context-FID as the official experiment computes it (``nursery/ContextFIDExperiment``): row ``i`` of
    ``synthetic (n, L)`` was generated with the time features of real window ``i`` of ``real (n, L)``;
    the pairs are cut into ``n_batches`` consecutive batches and the FID is computed batch by batch.
    Returns the ``(n_batches,)`` scores; report their mean and spread.

    Every batch needs more windows than the embedding has dimensions (for a full-rank covariance).
    """
    real, synthetic = np.asarray(real), np.asarray(synthetic)
    if real.shape != synthetic.shape or real.ndim != 2:
        raise ValueError(f"real and synthetic must be paired (n, L) arrays, got {real.shape} and {synthetic.shape}")
    if n_batches < 1:
        raise ValueError(f"n_batches must be >= 1, got {n_batches}")
    size = real.shape[0] // n_batches
    dim = encoder.out.out_channels
    if size <= dim:
        raise ValueError(f"{real.shape[0]} pairs in {n_batches} batches give {size} per batch; "
                         f"need more than the embedding's {dim} dimensions")
    er, es = embed_windows(encoder, real), embed_windows(encoder, synthetic)
    return np.array([frechet_distance(er[b * size:(b + 1) * size], es[b * size:(b + 1) * size])
                     for b in range(n_batches)])


def autocorrelation(windows: np.ndarray, max_lag: int) -> np.ndarray:
    """``(max_lag,)`` mean autocorrelation at lags 1..max_lag over windows ``(n, L)`` (each window centred)."""
    w = np.asarray(windows, np.float64)
    w = w - w.mean(1, keepdims=True)
    var = (w ** 2).sum(1)
    ok = var > 0
    return np.array([((w[ok, lag:] * w[ok, :-lag]).sum(1) / var[ok]).mean() for lag in range(1, max_lag + 1)])


def acf_distance(real: np.ndarray, synthetic: np.ndarray, max_lag: int = 48) -> float:
    """Mean absolute difference between the mean autocorrelation functions (lags 1..max_lag)."""
    return float(np.abs(autocorrelation(real, max_lag) - autocorrelation(synthetic, max_lag)).mean())


def _conv_classifier(length: int, channels: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv1d(1, channels, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
                         nn.Conv1d(channels, channels, 5, padding=2), nn.ReLU(), nn.AdaptiveMaxPool1d(1),
                         nn.Flatten(), nn.Linear(channels, 1))


def discriminative_score(real: np.ndarray, synthetic: np.ndarray, epochs: int = 30, seed: int = 0) -> float:
    """``|accuracy - 0.5|`` of a small CNN trained to tell real from synthetic windows (``(n, L)`` each),
    on a held-out quarter of both sets. 0 means indistinguishable; 0.5 means perfectly separable.

    Both sets are min-max scaled per window first: real windows span exactly ``[0, 1]`` by construction,
    so without rescaling the classifier would only need to check a window's range.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = min(len(real), len(synthetic))
    X = np.concatenate([minmax_scale(np.asarray(real[:n], np.float32)),
                        minmax_scale(np.asarray(synthetic[:n], np.float32))])
    y = np.concatenate([np.ones(n), np.zeros(n)]).astype(np.float32)
    order = rng.permutation(2 * n)
    cut = int(1.5 * n)
    tr, te = order[:cut], order[cut:]
    Xt, yt = torch.as_tensor(X)[:, None, :], torch.as_tensor(y)
    net = _conv_classifier(X.shape[1])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for s in range(0, len(tr), 128):
            b = torch.as_tensor(tr[s:s + 128])
            loss = F.binary_cross_entropy_with_logits(net(Xt[b]).squeeze(1), yt[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        acc = ((net(Xt[torch.as_tensor(te)]).squeeze(1) > 0).float() == yt[torch.as_tensor(te)]).float().mean().item()
    return abs(acc - 0.5)


def forecast_error(train_windows: np.ndarray, test_windows: np.ndarray, horizon: int = 16, epochs: int = 40,
                   seed: int = 0) -> float:
    """Train on one set of windows, test on another: an MLP forecasts the last ``horizon`` values of a
    window from the rest; returns its MSE on ``test_windows`` (TSTR when training windows are synthetic).

    Each window is min-max scaled, and context and target use the same scale, so errors of sets are comparable.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr = torch.as_tensor(np.asarray(train_windows, np.float32))
    te = torch.as_tensor(np.asarray(test_windows, np.float32))
    L = tr.shape[1]
    if not 0 < horizon < L:
        raise ValueError(f"horizon must be in (0, {L}), got {horizon}")
    net = nn.Sequential(nn.Linear(L - horizon, 128), nn.ReLU(), nn.Linear(128, horizon))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        order = torch.as_tensor(rng.permutation(len(tr)))
        for s in range(0, len(tr), 128):
            b = tr[order[s:s + 128]]
            loss = F.mse_loss(net(b[:, :-horizon]), b[:, -horizon:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    with torch.no_grad():
        return float(F.mse_loss(net(te[:, :-horizon]), te[:, -horizon:]).item())
