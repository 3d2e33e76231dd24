"""Deep AutoAugment (Zheng, Zhang, Yan, Zhang; ICLR 2022): augmentation policies by regularised
gradient matching.

A policy has ``K`` layers; layer ``k`` is one categorical distribution ``p_k = softmax(theta_k)`` over
all (operation, magnitude) *entries* of the search space, and every image draws one entry per layer.
Layers are searched one at a time on a pretrained, frozen network: the new layer's ``p`` should make
the gradient on augmented training images point where the mean gradient on clean validation images
of the same class points,

    maximise  cos(g_val, g_aug(p)),   g_aug(p) = sum_j p_j G_j,

where ``G_j`` is the gradient of the loss on a training image after the earlier layers and then
entry ``j``. ``g_aug`` is linear in ``p``, so the derivative is exact,
``d cos / d p_j = G_j . t / (|g_aug| |g_val|)`` with ``t = g_val - (g_val . g_aug / |g_aug|^2) g_aug``,
and all ``J`` of them come from one forward-mode pass (a JVP along ``t``).

The pieces, in the order of the chapter:

- Data: :func:`load_cifar10_subset` (the book's JPEG subset of CIFAR-10, from :mod:`iclr_lib.data.cifar`), :func:`stratified_split`.
- Operations on batches of float images in ``[0, 1]``: :data:`OPERATIONS`, :func:`apply_operation`,
  :func:`apply_operations` (grouped by operation); the search space :func:`search_space`.
- :class:`Policy` (layers of logits), :func:`sample_entries`, :func:`apply_policy`.
- The objective: :func:`per_sample_losses`, :func:`flat_gradient`, :func:`class_gradients`,
  :func:`directional_derivatives` (forward mode), :func:`matching_scores` (layer 1: the cosine and the
  exact derivative for every entry), :func:`prefixed_scores` (later layers, the official protocol:
  scores averaged over 16 prefixes, ``g_aug`` from whole-policy samples), :func:`search_layer`
  (:data:`OFFICIAL` and the ablation :data:`SINGLE_PREFIX`), :func:`search_policy` (progressive
  stacking), :func:`policy_cosines` (to compare layers on held-out images).
- Baselines implemented over the same operations: :func:`crop_flip`, :func:`crop_flip_cutout`,
  :func:`rand_augment` / :func:`randaugment_cifar`, :func:`trivial_augment_wide` /
  :func:`trivialaugment_cifar`, :func:`cutout`, :func:`uniform_policy`, :func:`policy_augment`.
- Evaluation: :class:`SmallResNet`, :func:`train_classifier`, :func:`accuracy`.

Shapes: images ``(B, 3, H, W)`` float in ``[0, 1]``; labels ``(B,)`` int64; a policy's logits ``(K, J)``.
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

from .data.cifar import load_cifar10_subset
from .nets import BasicBlock

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
FILL = 0.5   # PIL's fill colour (128, 128, 128) for pixels moved in from outside the image


# ----------------------------------------------------------------------------- data
def stratified_split(labels: torch.Tensor, sizes_per_class: dict[str, int], seed: int = 0) -> dict[str, torch.Tensor]:
    """Disjoint index sets with ``sizes_per_class[name]`` examples of every class each; the rest of the
    examples go to the set called ``"rest"``. Deterministic for a ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {name: [] for name in [*sizes_per_class, "rest"]}
    for c in torch.unique(labels):
        idx = torch.nonzero(labels == c).squeeze(1)
        idx = idx[torch.randperm(len(idx), generator=gen)]
        start = 0
        for name, n in sizes_per_class.items():
            if start + n > len(idx):
                raise ValueError(f"class {int(c)} has {len(idx)} examples, fewer than the {start + n} requested")
            parts[name].append(idx[start:start + n])
            start += n
        parts["rest"].append(idx[start:])
    return {name: torch.sort(torch.cat(p)).values for name, p in parts.items()}


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``uint8 (B, 3, H, W)`` -> float in ``[0, 1]``."""
    return images.float().div_(255.0)


# ----------------------------------------------------------------------------- operations
def _randint(n: int, high: int, gen: torch.Generator | None) -> torch.Tensor:
    return torch.randint(0, high, (n,), generator=gen)


def _affine(x: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Apply per-image affine maps ``matrix (B, 2, 3)`` (output coords -> input coords, normalised to
    [-1, 1]) with nearest-neighbour sampling; pixels from outside are :data:`FILL`."""
    grid = F.affine_grid(matrix, list(x.shape), align_corners=False)
    ones = torch.ones_like(x[:, :1])
    out = F.grid_sample(torch.cat([x, ones], 1), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    inside = out[:, 3:]
    return out[:, :3] + (1.0 - inside) * FILL


def _shear(x, v, axis):
    m = torch.zeros(len(x), 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, axis, 1 - axis] = v
    return _affine(x, m)


def _translate(x, v, axis):           # v: fraction of the image size
    m = torch.zeros(len(x), 2, 3)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, axis, 2] = -2.0 * v
    return _affine(x, m)


def _rotate(x, degrees):
    a = torch.deg2rad(degrees)
    m = torch.zeros(len(x), 2, 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = torch.cos(a), -torch.sin(a), torch.sin(a), torch.cos(a)
    return _affine(x, m)


def _grey(x):                          # ITU-R 601-2 luma, as PIL's convert("L")
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3])


def _blend(degenerate, x, factor):     # PIL ImageEnhance: degenerate + factor * (x - degenerate)
    return (degenerate + factor.view(-1, 1, 1, 1) * (x - degenerate)).clamp(0.0, 1.0)


def _autocontrast(x):
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), x)


def _equalize(x):
    """Per-channel histogram equalisation on 256 levels, as PIL's ``ImageOps.equalize``."""
    b, c, h, w = x.shape
    q = (x * 255.0).round().long().clamp(0, 255).view(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long).scatter_add_(1, q, torch.ones_like(q))
    last = 255 - torch.flip(hist > 0, dims=[1]).long().argmax(1)              # highest level present
    step = (h * w - hist.gather(1, last[:, None]).squeeze(1)) // 255
    before = torch.cumsum(hist, 1) - hist                                     # pixels below each level
    lut = ((before + (step // 2)[:, None]) // step.clamp_min(1)[:, None]).clamp(0, 255)
    out = torch.where(step[:, None] > 0, lut.gather(1, q), q)
    return out.view(b, c, h, w).float() / 255.0


def _posterize(x, bits):
    q = (x * 255.0).round().long().clamp(0, 255)
    mask = (256 - 2 ** (8 - bits.floor().long().clamp(0, 8))).view(-1, 1, 1, 1)   # int(bits), as PIL-based code
    return (q & mask).float() / 255.0


def _sharpness(x, factor):
    kernel = torch.tensor([[1.0, 1.0, 1.0], [1.0, 5.0, 1.0], [1.0, 1.0, 1.0]]) / 13.0
    smooth = F.conv2d(x, kernel.expand(3, 1, 3, 3), padding=1, groups=3)
    degenerate = x.clone()
    degenerate[:, :, 1:-1, 1:-1] = smooth[:, :, 1:-1, 1:-1]                   # PIL keeps the border
    return _blend(degenerate, x, factor)


def _flip(x, gen):
    flip = torch.rand(len(x), generator=gen) < 0.5
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)


def cutout(x: torch.Tensor, size: int = 16, gen: torch.Generator | None = None) -> torch.Tensor:
    """Cutout: a ``size x size`` square (clipped at the border) at a uniformly random centre is set to
    :data:`FILL` in every image."""
    b, _, h, w = x.shape
    cy, cx = _randint(b, h, gen), _randint(b, w, gen)
    ys, xs = torch.arange(h).view(1, h, 1), torch.arange(w).view(1, 1, w)
    inside = ((ys - cy.view(-1, 1, 1)).abs() * 2 < size) & ((xs - cx.view(-1, 1, 1)).abs() * 2 < size)
    return torch.where(inside[:, None], torch.full_like(x, FILL), x)


def random_crop(x: torch.Tensor, padding: int = 4, gen: torch.Generator | None = None) -> torch.Tensor:
    """Zero-pad by ``padding`` pixels and crop a random window of the original size from every image."""
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4)
    oy, ox = _randint(b, 2 * padding + 1, gen), _randint(b, 2 * padding + 1, gen)
    rows = (oy.view(-1, 1) + torch.arange(h)).view(b, 1, h, 1).expand(b, c, h, w + 2 * padding)
    out = padded.gather(2, rows)
    cols = (ox.view(-1, 1) + torch.arange(w)).view(b, 1, 1, w).expand(b, c, h, w)
    return out.gather(3, cols)


def crop_flip(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """The standard CIFAR augmentation: random crop with 4-pixel padding, then a random horizontal flip."""
    return _flip(random_crop(x, 4, gen), gen)


#: name -> (function of (images, magnitudes, generator), magnitude range of the DeepAA CIFAR space or None).
#: Signed ranges are symmetric: a negative magnitude shears/translates/rotates the other way.
OPERATIONS: dict[str, tuple[Callable, tuple[float, float] | None]] = {
    "Identity": (lambda x, m, g: x, None),
    "ShearX": (lambda x, m, g: _shear(x, m, 0), (-0.3, 0.3)),
    "ShearY": (lambda x, m, g: _shear(x, m, 1), (-0.3, 0.3)),
    "TranslateX": (lambda x, m, g: _translate(x, m, 0), (-0.45, 0.45)),
    "TranslateY": (lambda x, m, g: _translate(x, m, 1), (-0.45, 0.45)),
    "Rotate": (lambda x, m, g: _rotate(x, m), (-30.0, 30.0)),
    "AutoContrast": (lambda x, m, g: _autocontrast(x), None),
    "Invert": (lambda x, m, g: 1.0 - x, None),
    "Equalize": (lambda x, m, g: _equalize(x), None),
    "Solarize": (lambda x, m, g: torch.where(x * 255.0 >= m.view(-1, 1, 1, 1), 1.0 - x, x), (0.0, 256.0)),
    "Posterize": (lambda x, m, g: _posterize(x, m), (4.0, 8.0)),
    "Contrast": (lambda x, m, g: _blend(_grey(x).mean(dim=(1, 2, 3), keepdim=True), x, m), (0.1, 1.9)),
    "Color": (lambda x, m, g: _blend(_grey(x).expand_as(x), x, m), (0.1, 1.9)),
    "Brightness": (lambda x, m, g: _blend(torch.zeros_like(x), x, m), (0.1, 1.9)),
    "Sharpness": (lambda x, m, g: _sharpness(x, m), (0.1, 1.9)),
    "RandFlip": (lambda x, m, g: _flip(x, g), None),
    "RandCutout": (lambda x, m, g: cutout(x, 16, g), None),
    "RandCrop": (lambda x, m, g: random_crop(x, 4, g), None),
}
#: the magnitude of each ranged operation that leaves images unchanged (removed from the space)
IDENTITY_MAGNITUDE = {"ShearX": 0.0, "ShearY": 0.0, "TranslateX": 0.0, "TranslateY": 0.0, "Rotate": 0.0,
                      "Solarize": 256.0, "Posterize": 8.0, "Contrast": 1.0, "Color": 1.0, "Brightness": 1.0,
                      "Sharpness": 1.0}


def apply_operation(name: str, images: torch.Tensor, magnitudes: torch.Tensor | float | None = None,
                    gen: torch.Generator | None = None) -> torch.Tensor:
    """Apply operation ``name`` to ``images (B, 3, H, W)`` in ``[0, 1]`` with per-image ``magnitudes (B,)``
    (or one number) in the operation's own units (see :data:`OPERATIONS`)."""
    if name not in OPERATIONS:
        raise KeyError(f"unknown operation {name!r}; known: {', '.join(OPERATIONS)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    m = torch.as_tensor(0.0 if magnitudes is None else magnitudes, dtype=torch.float32).expand(len(images))
    return OPERATIONS[name][0](images, m.contiguous(), gen)


def apply_operations(images: torch.Tensor, op_names: Sequence[str], op_ids: torch.Tensor, magnitudes: torch.Tensor,
                     gen: torch.Generator | None = None) -> torch.Tensor:
    """Image ``b`` gets operation ``op_names[op_ids[b]]`` with ``magnitudes[b]``; the work is grouped by
    operation (one batched call per operation present)."""
    out = images.clone()
    for k in torch.unique(op_ids).tolist():
        rows = torch.nonzero(op_ids == k).squeeze(1)
        if op_names[k] != "Identity":
            out[rows] = apply_operation(op_names[k], images[rows], magnitudes[rows], gen)
    return out


@dataclass(frozen=True)
class SearchSpace:
    """The entries of one policy layer: ``ops[j]`` (an index into ``op_names``) with ``magnitudes[j]``.
    ``labels[j]`` is a readable name such as ``"Rotate(-25.0)"``."""

    op_names: tuple[str, ...]
    ops: torch.Tensor
    magnitudes: torch.Tensor
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def identity(self) -> int:
        return self.labels.index("Identity")


def search_space(op_names: Sequence[str] | None = None, levels: int = 13) -> SearchSpace:
    """DeepAA's CIFAR search space: every operation at ``levels`` evenly spaced magnitudes over its range,
    without the level that is the identity (and only once for operations without a magnitude).
    The official 18 operations with 13 levels give 11 * 12 + 7 = 139 entries."""
    op_names = tuple(OPERATIONS if op_names is None else op_names)
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    ops, mags, labels = [], [], []
    for k, name in enumerate(op_names):
        rng_ = OPERATIONS[name][1]
        if rng_ is None:
            ops.append(k), mags.append(0.0), labels.append(name)
            continue
        for m in np.linspace(rng_[0], rng_[1], levels):
            if math.isclose(m, IDENTITY_MAGNITUDE[name], abs_tol=1e-9):
                continue
            ops.append(k), mags.append(float(m)), labels.append(f"{name}({m:g})")
    return SearchSpace(op_names, torch.tensor(ops), torch.tensor(mags, dtype=torch.float32), tuple(labels))


# ----------------------------------------------------------------------------- policies
@dataclass
class Policy:
    """``logits (K, J)``: layer ``k`` draws entry ``j`` with probability ``softmax(logits[k])[j]``."""

    space: SearchSpace
    logits: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 0))

    def __post_init__(self) -> None:
        if self.logits.numel() == 0:
            self.logits = torch.zeros(0, len(self.space))
        if self.logits.ndim != 2 or self.logits.shape[1] != len(self.space):
            raise ValueError(f"logits must have shape (K, {len(self.space)}), got {tuple(self.logits.shape)}")

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=1)

    def __len__(self) -> int:
        return self.logits.shape[0]

    def with_layer(self, logits: torch.Tensor) -> "Policy":
        return Policy(self.space, torch.cat([self.logits, logits.detach().view(1, -1)]))

    def operation_mass(self) -> np.ndarray:
        """``(K, n_ops)``: each layer's probability summed over the magnitudes of every operation."""
        out = torch.zeros(len(self), len(self.space.op_names))
        out.index_add_(1, self.space.ops, self.probs)
        return out.numpy()


def uniform_policy(space: SearchSpace, layers: int) -> Policy:
    """Every entry equally likely in every layer (the random-policy baseline)."""
    return Policy(space, torch.zeros(layers, len(space)))


def sample_entries(probs: torch.Tensor, n: int, gen: torch.Generator | None = None) -> torch.Tensor:
    """``n`` independent draws from each row of ``probs (K, J)``: ``(K, n)`` entry indices."""
    return torch.multinomial(probs, n, replacement=True, generator=gen)


def apply_entries(images: torch.Tensor, space: SearchSpace, entries: torch.Tensor,
                  gen: torch.Generator | None = None) -> torch.Tensor:
    """Image ``b`` gets entry ``entries[b]`` of ``space``."""
    return apply_operations(images, space.op_names, space.ops[entries], space.magnitudes[entries], gen)


def apply_policy(images: torch.Tensor, policy: Policy, gen: torch.Generator | None = None) -> torch.Tensor:
    """Every image draws one entry per layer; the layers are applied in order."""
    if len(policy) == 0:
        return images
    entries = sample_entries(policy.probs, len(images), gen)
    for k in range(len(policy)):
        images = apply_entries(images, policy.space, entries[k], gen)
    return images


# ----------------------------------------------------------------------------- RandAugment, TrivialAugment
#: The 14 operations of RandAugment and TrivialAugment (no flip/crop/cutout; those come around them).
RA_OPERATIONS = ("Identity", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate", "AutoContrast",
                 "Equalize", "Solarize", "Posterize", "Contrast", "Color", "Brightness", "Sharpness")
_RA_MAX = {"ShearX": 0.3, "ShearY": 0.3, "TranslateX": 10 / 32, "TranslateY": 10 / 32, "Rotate": 30.0,
           "Contrast": 0.9, "Color": 0.9, "Brightness": 0.9, "Sharpness": 0.9}
_TA_MAX = {"ShearX": 0.99, "ShearY": 0.99, "TranslateX": 1.0, "TranslateY": 1.0, "Rotate": 135.0,
           "Contrast": 0.99, "Color": 0.99, "Brightness": 0.99, "Sharpness": 0.99}


def _magnitude(name: str, level: torch.Tensor, maxima: dict, posterize_min: int, sign: torch.Tensor) -> torch.Tensor:
    """Map ``level`` in [0, 1] to operation units (the conventions of torchvision's RandAugment /
    TrivialAugmentWide: signed geometric and enhancement ops, Solarize threshold falls, Posterize bits fall)."""
    if name in ("ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"):
        return sign * level * maxima[name]
    if name in ("Contrast", "Color", "Brightness", "Sharpness"):
        return 1.0 + sign * level * maxima[name]
    if name == "Solarize":
        return 256.0 * (1.0 - level)
    if name == "Posterize":
        return (8.0 - level * (8 - posterize_min)).round()
    return torch.zeros_like(level)


def _random_ops(images, levels, n_ops, maxima, posterize_min, gen):
    b = len(images)
    for _ in range(n_ops):
        op_ids = _randint(b, len(RA_OPERATIONS), gen)
        sign = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
        mags = torch.zeros(b)
        for k, name in enumerate(RA_OPERATIONS):
            rows = op_ids == k
            mags[rows] = _magnitude(name, levels[rows], maxima, posterize_min, sign[rows])
        images = apply_operations(images, RA_OPERATIONS, op_ids, mags, gen)
    return images


def rand_augment(images: torch.Tensor, n_ops: int = 2, magnitude: int = 9, bins: int = 31,
                 gen: torch.Generator | None = None) -> torch.Tensor:
    """RandAugment (Cubuk et al., 2020): ``n_ops`` operations drawn uniformly from
    :data:`RA_OPERATIONS`, all at the fixed ``magnitude`` out of ``bins - 1`` (torchvision's default 9/30)."""
    level = torch.full((len(images),), magnitude / (bins - 1))
    return _random_ops(images, level, n_ops, _RA_MAX, 4, gen)


def trivial_augment_wide(images: torch.Tensor, bins: int = 31, gen: torch.Generator | None = None) -> torch.Tensor:
    """TrivialAugment Wide (Mueller and Hutter, 2021): one operation drawn uniformly from
    :data:`RA_OPERATIONS` at a magnitude drawn uniformly from ``bins`` levels over the wide ranges."""
    level = _randint(len(images), bins, gen).float() / (bins - 1)
    return _random_ops(images, level, 1, _TA_MAX, 2, gen)


def crop_flip_cutout(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Crop + flip, then Cutout 16 (the CIFAR default of AutoAugment, RandAugment and TrivialAugment)."""
    return cutout(crop_flip(x, gen), 16, gen)


def randaugment_cifar(n_ops: int = 2, magnitude: int = 9) -> Callable:
    """RandAugment's CIFAR pipeline as ``f(images, gen)``: crop + flip, RandAugment(N, M), Cutout 16."""
    def augment(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return cutout(rand_augment(crop_flip(x, gen), n_ops, magnitude, gen=gen), 16, gen)
    return augment


def trivialaugment_cifar(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """TrivialAugment's CIFAR pipeline: crop + flip, TrivialAugment Wide, Cutout 16."""
    return cutout(trivial_augment_wide(crop_flip(x, gen), gen=gen), 16, gen)


def policy_augment(policy: Policy) -> Callable:
    """A DeepAA (or uniform) policy as ``f(images, gen)``, used alone: no default augmentation."""
    def augment(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        return apply_policy(x, policy, gen)
    return augment


# ----------------------------------------------------------------------------- networks
class SmallResNet(nn.Module):
    """A small ResNet for 32 x 32 images: a stem, three residual stages of widths ``w, 2w, 4w`` (the
    last two halve the resolution), global average pooling and a linear classifier. Inputs are images
    in ``[0, 1]``; the per-channel CIFAR normalisation is the first (fixed) step."""

    MEAN = (0.4914, 0.4822, 0.4465)
    STD = (0.2470, 0.2435, 0.2616)

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.stages = nn.Sequential(BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 4 * width, 2))
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem((x - self.mean) / self.std))
        return self.head(h.mean(dim=(2, 3)))


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    seconds: float


def train_classifier(images: torch.Tensor, labels: torch.Tensor, augment: Callable | None = None, epochs: int = 20,
                     width: int = 16, batch_size: int = 128, lr: float = 0.1, weight_decay: float = 5e-4,
                     seed: int = 0, progress: bool = False, desc: str = "training") -> TrainResult:
    """Train a :class:`SmallResNet` from scratch with SGD (momentum 0.9, Nesterov), a cosine learning rate
    and ``augment(images, gen)`` applied to the whole training set at the start of every epoch.

    Args:
        images: float ``(N, 3, 32, 32)`` in ``[0, 1]``; labels ``(N,)``.
        augment: ``None`` for no augmentation, else a function ``(images, torch.Generator) -> images``.
    """
    from tqdm.auto import tqdm

    if images.ndim != 4 or len(images) != len(labels):
        raise ValueError(f"images (N, 3, H, W) and labels (N,) must match, got {tuple(images.shape)} and {tuple(labels.shape)}")
    start = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = SmallResNet(width, int(labels.max()) + 1)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    steps = epochs * math.ceil(len(images) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15,
                                                anneal_strategy="cos")
    history = []
    for epoch in tqdm(range(epochs), disable=not progress, desc=desc, leave=False):
        model.train()
        x = images if augment is None else augment(images, gen)
        order = torch.randperm(len(x), generator=gen)
        total, correct = 0.0, 0
        for s in range(0, len(x), batch_size):
            b = order[s:s + batch_size]
            logits = model(x[b])
            loss = F.cross_entropy(logits, labels[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
            correct += (logits.argmax(1) == labels[b]).sum().item()
        history.append({"epoch": epoch + 1, "loss": total / len(x), "train_accuracy": correct / len(x)})
    model.eval()
    return TrainResult(model, history, time.perf_counter() - start)


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` (in eval mode) on ``images``."""
    model.eval()
    correct = sum((model(images[s:s + batch_size]).argmax(1) == labels[s:s + batch_size]).sum().item()
                  for s in range(0, len(images), batch_size))
    return correct / len(images)


# ----------------------------------------------------------------------------- the objective
def per_sample_losses(model: nn.Module, params: dict, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every image, ``(B,)``, with the model's parameters replaced by ``params``
    (buffers as they are: BatchNorm must be in eval mode)."""
    from torch.func import functional_call

    return F.cross_entropy(functional_call(model, params, (images,)), labels, reduction="none")


def flat_gradient(model: nn.Module, params: dict, loss: torch.Tensor) -> torch.Tensor:
    """The gradient of the scalar ``loss`` w.r.t. ``params``, flattened to ``(P,)``."""
    grads = torch.autograd.grad(loss, list(params.values()))
    return torch.cat([g.reshape(-1) for g in grads])


def _unflatten(vector: torch.Tensor, params: dict) -> dict:
    out, start = {}, 0
    for name, p in params.items():
        out[name] = vector[start:start + p.numel()].view_as(p)
        start += p.numel()
    return out


def _frozen_params(model: nn.Module) -> dict:
    return {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}


def directional_derivatives(model: nn.Module, images: torch.Tensor, label: int, tangent: torch.Tensor,
                            chunk: int = 556) -> torch.Tensor:
    """``(N,)``: the derivative of every image's loss along the weight direction ``tangent (P,)``,
    ``G_n . tangent``, by forward mode (``torch.func.jvp``), ``chunk`` images at a time; no per-image
    gradient is ever formed."""
    from torch.func import jvp

    primals = {k: v.detach() for k, v in model.named_parameters()}
    tangents = _unflatten(tangent, primals)
    out = []
    for s in range(0, len(images), chunk):
        part = images[s:s + chunk]
        labels = torch.full((len(part),), int(label), dtype=torch.int64)
        _, d = jvp(lambda p: per_sample_losses(model, p, part, labels), (primals,), (tangents,))
        out.append(d.detach())
    return torch.cat(out)


def _tangent(g_val: torch.Tensor, g_aug: torch.Tensor) -> tuple[float, torch.Tensor, torch.Tensor]:
    """``cos(g_val, g_aug)``, the tangent ``t = g_val - (g_val . g_aug / |g_aug|^2) g_aug`` and the
    normaliser ``|g_aug| |g_val|`` of the exact derivative."""
    norm_aug, norm_val = g_aug.norm(), g_val.norm()
    dot = torch.dot(g_val, g_aug)
    return float(dot / (norm_aug * norm_val)), g_val - dot / norm_aug ** 2 * g_aug, norm_aug * norm_val


def matching_scores(model: nn.Module, augmented: torch.Tensor, label: int, g_val: torch.Tensor,
                    probs: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Gradient matching for one training image.

    Args:
        model: the frozen network, in eval mode.
        augmented: ``(J, 3, H, W)``: the image after the earlier layers and then each entry ``j``.
        label: its class; ``g_val (P,)`` the mean gradient on clean validation images of that class.
        probs: ``(J,)`` the current layer's probabilities.

    Returns:
        ``(cos, scores)``: ``cos(g_val, g_aug)`` with ``g_aug = sum_j probs_j G_j``, and ``scores (J,)``,
        the exact ``d cos / d probs_j = G_j . t / (|g_aug| |g_val|)``, all from one JVP along ``t``.
    """
    params = _frozen_params(model)
    labels = torch.full((len(augmented),), int(label), dtype=torch.int64)
    g_aug = flat_gradient(model, params, (probs.detach() * per_sample_losses(model, params, augmented, labels)).sum())
    cos, tangent, norm = _tangent(g_val, g_aug)
    return cos, directional_derivatives(model, augmented, label, tangent, chunk=len(augmented)) / norm


def prefixed_scores(model: nn.Module, image: torch.Tensor, label: int, g_val: torch.Tensor, policy: Policy,
                    logits: torch.Tensor, prefixes: int = 16, gradient: str = "policy samples",
                    gradient_samples: int = 4, gen: torch.Generator | None = None,
                    chunk: int = 556) -> tuple[float, torch.Tensor]:
    """Gradient matching for one training image when earlier layers exist (the official stage-2 search).

    * The score of entry ``j`` is ``G_j . t / (|g_aug| |g_val|)`` averaged over ``prefixes`` random
      prefixes from the earlier layers: ``prefixes * J`` images (every prefix, then every entry), one
      JVP along ``t``.
    * ``gradient="policy samples"`` (official): ``g_aug`` is the mean gradient over
      ``gradient_samples * J`` copies of the image, each augmented by the *whole* policy, the earlier
      layers and then the layer being searched (``softmax(logits)``). ``gradient="entries"``:
      ``g_aug = mean_r sum_j p_j G_{r, j}`` over the same prefixes that are scored.

    Args:
        image: ``(3, H, W)``; ``policy`` the earlier, frozen layers; ``logits (J,)`` the layer searched.

    Returns:
        ``(cos(g_val, g_aug), scores (J,))``.
    """
    if gradient not in ("policy samples", "entries"):
        raise ValueError(f"gradient must be 'policy samples' or 'entries', got {gradient!r}")
    space = policy.space
    J = len(space)
    params = _frozen_params(model)
    prefixed = apply_policy(image.expand(prefixes, -1, -1, -1), policy, gen)
    augmented = apply_entries(prefixed.repeat_interleave(J, 0), space, torch.arange(J).repeat(prefixes), gen)
    if gradient == "policy samples":
        samples = apply_policy(image.expand(gradient_samples * J, -1, -1, -1), policy.with_layer(logits), gen)
        weights = torch.full((len(samples),), 1.0 / len(samples))
    else:
        samples = augmented
        weights = torch.softmax(logits, 0).repeat(prefixes) / prefixes
    g_aug = torch.zeros_like(g_val)
    for s in range(0, len(samples), chunk):
        part = samples[s:s + chunk]
        losses = per_sample_losses(model, params, part, torch.full((len(part),), int(label)))
        g_aug += flat_gradient(model, params, (weights[s:s + chunk] * losses).sum())
    cos, tangent, norm = _tangent(g_val, g_aug)
    scores = directional_derivatives(model, augmented, label, tangent, chunk) / norm
    return cos, scores.view(prefixes, J).mean(0)


@dataclass
class LayerSearch:
    """One searched layer: its ``logits (J,)`` and per-step ``history`` (mean cosine, P(Identity))."""

    logits: torch.Tensor
    history: list[dict]
    seconds: float


def class_gradients(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> list[torch.Tensor]:
    """``C`` vectors ``(P,)``: the mean loss gradient over the (clean validation) images of each class.
    The network is frozen, so these are computed once per search."""
    params = _frozen_params(model)
    out = []
    for c in range(int(labels.max()) + 1):
        rows = labels == c
        out.append(flat_gradient(model, params, per_sample_losses(model, params, images[rows], labels[rows]).mean()))
    return out


#: The official stage-2 protocol (``DeepAA_search.py``: ``EXP_G=16``, ``EXP_gT_factor=4``, ``tf.math.reduce_std``).
OFFICIAL = {"prefixes": 16, "gradient": "policy samples", "gradient_samples": 4, "std_ddof": 0}
#: The chapter's first version, kept as an ablation: one prefix per image, ``g_aug`` from that prefix's
#: entries weighted by the probabilities, and the sample standard deviation.
SINGLE_PREFIX = {"prefixes": 1, "gradient": "entries", "gradient_samples": 0, "std_ddof": 1}


def search_layer(model: nn.Module, policy: Policy, search_x: torch.Tensor, search_y: torch.Tensor,
                 val_x: torch.Tensor, val_y: torch.Tensor, steps: int = 50, samples_per_step: int = 16,
                 lr: float = 0.025, identity_logit: float = 8.0, aggregate: str | None = None,
                 prefixes: int = 16, gradient: str = "policy samples", gradient_samples: int = 4, std_ddof: int = 0,
                 seed: int = 0, progress: bool = False) -> LayerSearch:
    """Search one new layer on top of ``policy`` (its layers are frozen) by regularised gradient matching.

    Every step draws ``samples_per_step`` training images (each of a random class) and scores every
    entry on each of them against the mean gradient of the clean validation images of its class:

    * the first layer (no prefix): :func:`matching_scores`, ``g_aug = sum_j p_j G_j`` exactly;
    * later layers: :func:`prefixed_scores`, scores averaged over ``prefixes`` prefixes, ``g_aug`` from
      ``gradient_samples * J`` whole-policy samples (``gradient="policy samples"``, official) or from
      the scored prefixes' entries (``gradient="entries"``; with one prefix this is the ablation
      :data:`SINGLE_PREFIX`).

    Scores are aggregated over the images by their mean (the first layer) or mean minus standard
    deviation (later layers; ``std_ddof=0`` is the population std of the official code, 1 the sample
    std); the logits take an Adam step on ``-sum_j s_j softmax(logits)_j``. Initial logits:
    ``identity_logit`` for Identity, 0 elsewhere.
    """
    from tqdm.auto import tqdm

    if model.training:
        raise ValueError("the network must be frozen in eval mode (BatchNorm uses running statistics)")
    aggregate = aggregate or ("mean" if len(policy) == 0 else "mean-std")
    if aggregate not in ("mean", "mean-std"):
        raise ValueError(f"aggregate must be 'mean' or 'mean-std', got {aggregate!r}")
    if gradient not in ("policy samples", "entries"):
        raise ValueError(f"gradient must be 'policy samples' or 'entries', got {gradient!r}")
    if prefixes < 1 or (gradient == "policy samples" and gradient_samples < 1):
        raise ValueError(f"need prefixes >= 1 and gradient_samples >= 1, got {prefixes} and {gradient_samples}")
    if steps < 1 or samples_per_step < 2:
        raise ValueError(f"need steps >= 1 and samples_per_step >= 2, got {steps} and {samples_per_step}")
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    space = policy.space
    logits = torch.zeros(len(space))
    logits[space.identity] = identity_logit
    logits.requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=lr)
    g_val = class_gradients(model, val_x, val_y)
    all_entries = torch.arange(len(space))
    history = []
    for _ in tqdm(range(steps), disable=not progress, desc=f"layer {len(policy) + 1}", leave=False):
        probs = torch.softmax(logits, 0).detach()
        picks = torch.randint(0, len(search_x), (samples_per_step,), generator=gen)
        scores, cosines = [], []
        for image, label in zip(search_x[picks], search_y[picks].tolist()):
            if len(policy) > 0:
                cos, s = prefixed_scores(model, image, label, g_val[label], policy, logits.detach(), prefixes,
                                         gradient, gradient_samples, gen)
            else:
                augmented = apply_entries(image.expand(len(space), -1, -1, -1), space, all_entries, gen)
                cos, s = matching_scores(model, augmented, label, g_val[label], probs)
            cosines.append(cos), scores.append(s)
        S = torch.stack(scores)
        agg = S.mean(0) if aggregate == "mean" else S.mean(0) - S.std(0, correction=std_ddof)
        loss = -(agg * torch.softmax(logits, 0)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({"cosine": float(np.mean(cosines)), "p_identity": float(probs[space.identity])})
    return LayerSearch(logits.detach(), history, time.perf_counter() - start)


def policy_cosines(model: nn.Module, policy: Policy, candidates: dict[str, torch.Tensor], images: torch.Tensor,
                   labels: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor, samples: int = 32,
                   seed: int = 0, per_image: bool = False) -> dict[str, float] | dict[str, np.ndarray]:
    """The mean gradient-matching cosine of candidate next layers (name -> probabilities ``(J,)``) on top
    of ``policy``, over the same ``samples`` images drawn from ``images`` (use images the search did not
    see) against the class gradients of ``val_x``. One forward pass per image serves every candidate.
    With ``per_image`` the cosines of every image, ``(samples,)`` per candidate, paired across candidates."""
    gen = torch.Generator().manual_seed(seed)
    space = policy.space
    g_val = class_gradients(model, val_x, val_y)
    params = _frozen_params(model)
    picks = torch.randint(0, len(images), (samples,), generator=gen)
    prefixed = apply_policy(images[picks], policy, gen)
    cosines: dict[str, list[float]] = {name: [] for name in candidates}
    for image, label in zip(prefixed, labels[picks].tolist()):
        augmented = apply_entries(image.expand(len(space), -1, -1, -1), space, torch.arange(len(space)), gen)
        losses = per_sample_losses(model, params, augmented, torch.full((len(space),), label))
        for name, p in candidates.items():
            grads = torch.autograd.grad((p * losses).sum(), list(params.values()), retain_graph=True)
            g_aug = torch.cat([g.reshape(-1) for g in grads])
            cosines[name].append(float(F.cosine_similarity(g_aug, g_val[label], dim=0)))
    if per_image:
        return {name: np.asarray(v) for name, v in cosines.items()}
    return {name: float(np.mean(v)) for name, v in cosines.items()}


def search_policy(model: nn.Module, space: SearchSpace, search_x: torch.Tensor, search_y: torch.Tensor,
                  val_x: torch.Tensor, val_y: torch.Tensor, max_layers: int = 3, stop_identity: float | None = 0.9,
                  progress: bool = False, first_layer: dict | None = None, start: Policy | None = None,
                  **layer_kwargs) -> tuple[Policy, list[LayerSearch]]:
    """Progressive stacking: search layer 1, freeze it, search layer 2 on top, ...; stop after
    ``max_layers`` layers or when a new layer's probability of Identity is at least ``stop_identity``
    (that layer is then not added; ``None`` keeps every layer, as the official code, which searches a
    fixed number). ``layer_kwargs`` go to :func:`search_layer`; ``first_layer`` overrides
    some of them for layer 1 (it is far cheaper than later ones). ``start`` continues the search on top
    of given layers (they count towards ``max_layers``). Returns the policy and every layer searched
    here (the rejected one included)."""
    policy, layers = (Policy(space) if start is None else start), []
    if policy.space is not space:
        raise ValueError("start must be a policy over the same search space")
    seed = layer_kwargs.pop("seed", 0)
    for k in range(len(policy), max_layers):
        kwargs = {**layer_kwargs, **(first_layer or {})} if k == 0 else layer_kwargs
        layer = search_layer(model, policy, search_x, search_y, val_x, val_y, seed=seed + k, progress=progress,
                             **kwargs)
        layers.append(layer)
        if stop_identity is not None and torch.softmax(layer.logits, 0)[space.identity] >= stop_identity:
            break
        policy = policy.with_layer(layer.logits)
    return policy, layers
