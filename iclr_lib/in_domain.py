"""In-domain generalisation (Schott et al., ICLR 2022): dSprites, the four splits, R^2 and small models.

- :func:`render_dsprites`: a procedural dSprites renderer following the published generative factors
  (shape, scale, orientation, x, y) and geometry measured on genuine frames
  (:func:`load_dsprites_reference`, :func:`reference_iou`); the real 26 MB archive cannot be fetched here.
- :func:`make_split`: the paper's ``random``, ``composition``, ``interpolation`` and ``extrapolation``
  splits of a factor grid (per-factor ratio ``r``; an image is out of distribution if any factor is).
- :func:`r2_per_factor`: ``R^2_k = 1 - MSE_k / Var_k`` with the variance over the *full* factor grid.
- Models for ``(B, 1, H, W)`` images -> ``(B, n_factors)`` targets in [0, 1]: :func:`make_model` with
  ``"mlp"``, ``"cnn"``, ``"coordconv"``, ``"resnet"`` (written here: no torchvision), and
  :class:`PCAReadout` (an unsupervised representation with an MLP readout); :func:`fit_regressor`.
"""
from __future__ import annotations

import math
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .nets import BasicBlock

FACTORS = ("shape", "scale", "orientation", "pos_x", "pos_y")
SHAPES = ("square", "ellipse", "heart")
DSPRITES_SIZES = (3, 6, 40, 32, 32)
SplitName = Literal["random", "composition", "interpolation", "extrapolation"]
SPLITS: tuple[str, ...] = ("random", "composition", "interpolation", "extrapolation")


# ----------------------------------------------------------------------------- the renderer
def factor_values(index: np.ndarray) -> np.ndarray:
    """dSprites latent values of integer factor indices ``(N, 5)`` on the full grid: shape id, scale in
    [0.5, 1], orientation in [0, 2 pi], x and y in [0, 1]."""
    index = np.asarray(index)
    return np.stack([index[:, 0], 0.5 + 0.1 * index[:, 1], index[:, 2] * 2 * np.pi / 39,
                     index[:, 3] / 31, index[:, 4] / 31], 1).astype(np.float64)


def render_dsprites(index: np.ndarray, size: int = 64) -> np.ndarray:
    """Binary dSprites images ``(N, size, size)`` (uint8 0/1) of full-grid factor indices ``(N, 5)``.

    Geometry (in 64-px units, pixel centres, y pointing down): centre ``(16 + 32 x, 16 + 32 y)``; the
    sprite frame ``u = cos(t) dx - sin(t) dy``, ``v = sin(t) dx + cos(t) dy`` (counter-clockwise on
    screen); square ``|u|, |v| <= 10 s``; ellipse semi-axes ``13 s`` by ``7 s``; heart
    ``(a^2 + b^2 - 1)^3 - a^2 b^3 <= 0`` with ``a = u / (8.25 s)``, ``b = -(v - 0.5 s) / (7.75 s)``.
    ``size`` < 64 samples the same picture at pixel centres of a coarser grid.
    """
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[1] != 5:
        raise ValueError(f"index must be (N, 5) factor indices, got shape {index.shape}")
    if (index < 0).any() or (index >= np.array(DSPRITES_SIZES)).any():
        raise ValueError(f"factor indices must lie in [0, {DSPRITES_SIZES})")
    values = factor_values(index)
    centres = (np.arange(size) + 0.5) * (64.0 / size)
    out = np.empty((len(index), size, size), dtype=np.uint8)
    for start in range(0, len(index), 2048):
        v = values[start:start + 2048]
        shape, scale, angle = v[:, 0, None, None], v[:, 1, None, None], v[:, 2, None, None]
        dx = centres[None, None, :] - (16 + 32 * v[:, 3, None, None])
        dy = centres[None, :, None] - (16 + 32 * v[:, 4, None, None])
        u = np.cos(angle) * dx - np.sin(angle) * dy
        w = np.sin(angle) * dx + np.cos(angle) * dy
        square = (np.abs(u) <= 10 * scale) & (np.abs(w) <= 10 * scale)
        ellipse = (u / (13 * scale)) ** 2 + (w / (7 * scale)) ** 2 <= 1
        a, b = u / (8.25 * scale), -(w - 0.5 * scale) / (7.75 * scale)
        heart = (a ** 2 + b ** 2 - 1) ** 3 - a ** 2 * b ** 3 <= 0
        out[start:start + 2048] = np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))
    return out


def load_dsprites_reference() -> np.ndarray:
    """The 320 genuine dSprites frames of DeepMind's ``dsprites.gif``: ``(320, 64, 64)`` bool."""
    from PIL import Image, ImageSequence

    from .data import fetch

    path = fetch("dsprites_reference", verbose=False) / "dsprites.gif"
    with Image.open(path) as gif:
        return np.stack([np.array(frame.convert("L")) > 127 for frame in ImageSequence.Iterator(gif)])


#: Frames of the reference GIF with known factors (see shared/data/dsprites_reference/SOURCE.md):
#: frame -> (shape, scale, orientation, x, y) indices.
REFERENCE_FRAMES = {**{f: (2, f, 0, 0, 0) for f in range(6)},
                    **{18 + k: (2, 5, k, 0, 0) for k in range(40)},
                    **{90 + k: (2, 5, 0, k, 31) for k in range(32)},      # "row position 1" = the last row
                    **{192 + s: (1, s, 0, 0, 0) for s in range(6)},
                    **{256 + s: (0, s, 0, 0, 0) for s in range(6)}}


def reference_iou(frames: np.ndarray) -> dict[str, list[float]]:
    """Intersection over union of the renderer with each known reference frame, grouped by shape."""
    out: dict[str, list[float]] = {name: [] for name in SHAPES}
    for frame, index in REFERENCE_FRAMES.items():
        ours = render_dsprites(np.array([index]))[0].astype(bool)
        real = frames[frame]
        out[SHAPES[index[0]]].append(float((ours & real).sum() / max(1, (ours | real).sum())))
    return out


# ----------------------------------------------------------------------------- grids, splits, R^2
def factor_grid(sizes: Sequence[int]) -> np.ndarray:
    """Every combination of factor indices, ``(prod(sizes), len(sizes))``, last factor fastest."""
    return np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), -1).reshape(-1, len(sizes))


def make_split(index: np.ndarray, sizes: Sequence[int], split: SplitName, ratio: float = 0.2,
               fixed: Sequence[int] = (0,), seed: int = 0) -> np.ndarray:
    """Boolean test mask ``(N,)`` of the paper's split for factor indices ``(N, F)`` on a grid of ``sizes``.

    Factors in ``fixed`` (dSprites: the shape) are never split. For the others, with ``n`` values:

    - ``extrapolation``: the top ``ceil(n r)`` values are test values; an image is test if ANY factor is;
    - ``interpolation``: ``round(linspace(0, n-1, n - ceil(n r)))`` are kept, the dropped interior values
      are test values (same any-rule);
    - ``composition``: ``q = 1 - (1 - (1 - r)^m)^(1/m)`` (``m`` split factors), low set = the first
      ``floor(n q)`` values; test = every participating factor outside its low set (factors whose low
      set is empty do not take part; at least two must, or every value of a factor could not be trained:
      ValueError otherwise);
    - ``random``: a random mask (``seed``) with the extrapolation split's test fraction.
    """
    index, sizes = np.asarray(index), list(sizes)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0 < ratio < 1:
        raise ValueError(f"ratio must be in (0, 1), got {ratio}")
    varied = [k for k in range(len(sizes)) if k not in fixed]
    if split in ("extrapolation", "interpolation", "random"):
        test = np.zeros(len(index), dtype=bool)
        for k in varied:
            n = sizes[k]
            if split == "interpolation":
                kept = np.unique(np.round(np.linspace(0, n - 1, n - math.ceil(n * ratio))).astype(int))
                test_values = np.setdiff1d(np.arange(n), kept)
            else:
                test_values = np.arange(n - math.ceil(n * ratio), n)
            test |= np.isin(index[:, k], test_values)
        if split == "random":
            order = np.random.default_rng(seed).permutation(len(index))
            random_test = np.zeros(len(index), dtype=bool)
            random_test[order[:int(round(test.mean() * len(index)))]] = True
            return random_test
        return test
    m = len(varied)
    q = 1 - (1 - (1 - ratio) ** m) ** (1 / m)
    low = {k: math.floor(sizes[k] * q) for k in varied}
    taking_part = [k for k in varied if low[k] > 0]
    if len(taking_part) < 2:
        # With one participating factor the "corner" is every image outside that factor's low set: the
        # training set would see a single value of it, and the split would be an extrapolation split.
        raise ValueError(
            f"composition needs at least two factors with a non-empty low set (floor(n q), q = {q:.3f}); on the "
            f"grid {tuple(sizes)} only factors {taking_part} have one: use a finer grid")
    return np.all([index[:, k] >= low[k] for k in taking_part], axis=0)


def targets(index: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """Regression targets ``index_k / (n_k - 1)`` in [0, 1], ``(N, F)`` float32 (0 for a single-valued factor)."""
    return (np.asarray(index) / np.maximum(np.asarray(sizes) - 1, 1)).astype(np.float32)


def r2_per_factor(predicted: np.ndarray, target: np.ndarray, sizes: Sequence[int]) -> np.ndarray:
    """``R^2_k = 1 - MSE_k / Var_k``, ``Var_k`` the variance of factor ``k``'s targets over the full grid."""
    grid_var = np.array([np.var(np.linspace(0, 1, n)) for n in sizes])
    return 1 - ((np.asarray(predicted) - np.asarray(target)) ** 2).mean(0) / grid_var


def collapse_ratio(predicted: np.ndarray, true: np.ndarray, train_max: float) -> float:
    """How far out-of-distribution predictions move beyond the training range, relative to the truth:
    ``(mean(pred) - train_max) / (mean(true) - train_max)``; 1 = extrapolates, 0 = stops at the edge."""
    return float((np.mean(predicted) - train_max) / (np.mean(true) - train_max))


# ----------------------------------------------------------------------------- models
class CNN(nn.Module):
    """Three stride-2 convolutions and a small head; ``coords=True`` adds CoordConv's x/y input channels."""

    def __init__(self, n_out: int, size: int, coords: bool = False, width: int = 32) -> None:
        super().__init__()
        self.coords = coords
        channels = 1 + 2 * coords
        self.features = nn.Sequential(
            nn.Conv2d(channels, width // 2, 3, 2, 1), nn.ReLU(), nn.Conv2d(width // 2, width, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(width, width, 3, 2, 1), nn.ReLU(), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(width * (size // 8) ** 2, 64), nn.ReLU(), nn.Linear(64, n_out))

    def forward(self, x):
        if self.coords:
            b, _, h, w = x.shape
            ys = torch.linspace(-1, 1, h).view(1, 1, h, 1).expand(b, 1, h, w)
            xs = torch.linspace(-1, 1, w).view(1, 1, 1, w).expand(b, 1, h, w)
            x = torch.cat([x, xs, ys], 1)
        return self.head(self.features(x))


class SmallResNet(nn.Module):
    """A ResNet with a stride-2 stem, three stages of one basic block each (16, 32, 64 channels) and
    global average pooling."""

    def __init__(self, n_out: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, 2, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.stages = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.head = nn.Linear(64, n_out)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


def make_model(name: str, n_out: int, size: int) -> nn.Module:
    """``"mlp"``, ``"cnn"``, ``"coordconv"`` or ``"resnet"`` for ``(B, 1, size, size)`` inputs."""
    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(size * size, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, n_out))
    if name in ("cnn", "coordconv"):
        return CNN(n_out, size, coords=name == "coordconv")
    if name == "resnet":
        return SmallResNet(n_out)
    raise ValueError(f"model must be 'mlp', 'cnn', 'coordconv' or 'resnet', got {name!r}")


class PCAReadout(nn.Module):
    """An unsupervised representation (PCA of the training images, fitted without labels) with an MLP
    readout; only the readout is trained on the targets."""

    def __init__(self, images: np.ndarray, n_components: int, n_out: int) -> None:
        super().__init__()
        flat = torch.as_tensor(images.reshape(len(images), -1), dtype=torch.float32)
        self.register_buffer("mean", flat.mean(0))
        _, _, vt = torch.linalg.svd(flat - self.mean, full_matrices=False)
        self.register_buffer("components", vt[:n_components].T.contiguous())
        self.readout = nn.Sequential(nn.Linear(n_components, 128), nn.ReLU(), nn.Linear(128, n_out))

    def forward(self, x):
        return self.readout((x.flatten(1) - self.mean) @ self.components)


def fit_regressor(model: nn.Module, images: np.ndarray, y: np.ndarray, *, epochs: int, seed: int = 0,
                  batch_size: int = 128, lr: float = 1e-3) -> nn.Module:
    """Train ``model`` by mean squared error with Adam on ``(N, H, W)`` images and ``(N, F)`` targets."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    t = torch.as_tensor(y, dtype=torch.float32)
    optimiser = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimiser.zero_grad()
            F.mse_loss(model(x[batch]), t[batch]).backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, images: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Model outputs for ``(N, H, W)`` images: ``(N, F)`` float64."""
    x = torch.as_tensor(images, dtype=torch.float32).unsqueeze(1)
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double().numpy()
