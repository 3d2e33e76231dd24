"""DIVA: the dataset derivative of a learning task (Dukler et al., ICLR 2022), on a linearised model.

Every sample ``i`` of a training set gets a weight ``alpha_i`` (1 = in the set, 0 = removed). The
paper's model is a pretrained network linearised around its weights; like the paper's experiments we
keep only the last layer, so the model is **weighted ridge regression** on fixed features ``Z`` with
one-hot targets ``Y``::

    w(alpha) = C Z^T D Y,        C = (Z^T D Z + lam I)^-1,   D = diag(alpha)          (eq. 5-6)

Everything then has a closed form, computed here in float64 torch so that autograd gives the same
derivative as the formulas:

- :func:`loo_predictions`: the prediction for sample ``i`` of the model trained without it, for
  every ``i`` at the cost of one fit (Prop. 3), valid at ``alpha_i = 0``;
- :func:`loo_loss` and :func:`validation_loss`: the two objectives ``L(alpha)``;
- :func:`dataset_derivative`: ``dL/dalpha`` by autograd; :func:`validation_derivative_closed_form`
  the paper's closed form; :func:`finite_difference_derivative` the brute-force check;
- features of a linearised network with ``d >> n``: :func:`jacobian_kernel` and :func:`kernel_features`
  (the dual form as ``n`` primal features);
- the paper's uses: :func:`reweight` (:func:`select_reweight` tunes it on a validation split), :func:`detection_scores` / :func:`detection_report`
  (harmful or mislabelled samples) and :func:`extend` (which pool samples to add).

Shapes: ``Z`` is ``(n, d)`` (append the constant feature with :func:`add_bias`), ``Y`` is
``(n, k)`` one-hot (or soft) targets, ``alpha`` is ``(n,)``; ``lam > 0``. Positive
``dL/dalpha_i`` means that giving sample ``i`` more weight *raises* the loss: the sample is harmful.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

Loss = Literal["mse", "ce"]
_LOSSES = ("mse", "ce")


# ----------------------------------------------------------------------------- pretrained features
class SmallCNN(nn.Module):
    """A LeNet-sized CNN; ``features`` is the penultimate layer we linearise at.

    ``forward(x)``: ``(batch, in_channels, image_size, image_size)`` float in [0, 1] -> ``(batch, n_classes)``
    logits; ``features(x)`` -> ``(batch, feature_dim)`` (after the ReLU, so non-negative). The defaults
    are for 28 x 28 digits; ``in_channels=3, image_size=32`` for CIFAR-10.
    """

    def __init__(self, n_classes: int = 5, feature_dim: int = 128, in_channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.in_channels, self.image_size = in_channels, image_size
        side = ((image_size - 4) // 2 - 4) // 2                     # two 5x5 convolutions, each with 2x2 pooling
        if side < 1:
            raise ValueError(f"image_size must be at least 16, got {image_size}")
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5), nn.ReLU(), nn.MaxPool2d(2),      # 28 px: 16 x 12 x 12
            nn.Conv2d(16, 32, 5), nn.ReLU(), nn.MaxPool2d(2),               # 28 px: 32 x 4 x 4
            nn.Flatten(), nn.Linear(32 * side * side, feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _as_image_batch(images: np.ndarray) -> torch.Tensor:
    """uint8 images ``(n, H, W)`` (one channel) or ``(n, C, H, W)`` -> float32 ``(n, C, H, W)`` in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[2] != images.shape[3]:
        raise ValueError(f"images must be (n, H, H) or (n, C, H, H), got shape {images.shape}")
    return torch.as_tensor(images, dtype=torch.float32) / 255.0


def _batch_for(model: SmallCNN, images: np.ndarray) -> torch.Tensor:
    x = _as_image_batch(images)
    if x.shape[1:] != (model.in_channels, model.image_size, model.image_size):
        raise ValueError(f"images must be (n, {model.in_channels}, {model.image_size}, {model.image_size}) for this "
                         f"model, got shape {np.asarray(images).shape}")
    return x


def train_feature_extractor(images: np.ndarray, labels: np.ndarray, *, epochs: int = 5, seed: int = 0,
                            batch_size: int = 64, lr: float = 1e-3, feature_dim: int = 128) -> SmallCNN:
    """Pretrain :class:`SmallCNN` by cross-entropy (Adam) on uint8 images ``(n, H, H)`` or ``(n, C, H, H)``.

    ``labels`` must be ``0..n_classes-1``. This is the chapter's stand-in for ImageNet pretraining.
    """
    labels = np.asarray(labels)
    x = _as_image_batch(images)
    if labels.shape != (len(x),):
        raise ValueError(f"labels must have shape ({len(x)},), got {labels.shape}")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    y = torch.as_tensor(labels, dtype=torch.long)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = SmallCNN(int(y.max()) + 1, feature_dim, in_channels=x.shape[1], image_size=x.shape[2])
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(batch_size):
            optimiser.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimiser.step()
    return model.eval()


@torch.no_grad()
def extract_features(model: SmallCNN, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """The penultimate features of uint8 ``images`` ``(n, H, H)`` or ``(n, C, H, H)``: ``(n, feature_dim)`` float64."""
    x = _batch_for(model, images)
    model.eval()
    return torch.cat([model.features(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]).double()


@torch.no_grad()
def jacobian_kernel(model: SmallCNN, images: np.ndarray, batch_size: int = 500) -> torch.Tensor:
    """The kernel ``K = J J^T`` ``(n, n)`` float64 of a linearised network's Jacobian features.

    ``J[i]`` is the gradient of the summed logits ``s(x) = sum_c f_c(x)`` with respect to the weights
    and biases of the last two linear layers (the body's ``Linear(m, p)`` and the head ``Linear(p, k)``),
    at the pretrained weights: ``d = p m + p + k p + k`` features (66,309 for the MNIST CNN), far more
    than samples. With ``a`` the layer input, ``h`` its pre-activation, ``r = relu(h)`` and
    ``g = (W_head^T 1) * 1[h > 0]``, the gradients are outer products (``dW = g a^T``, ``dW_head = 1 r^T``),
    so ``K_ij = (g_i.g_j)(a_i.a_j + 1) + k (r_i.r_j + 1)`` without forming ``J``.
    """
    x = _batch_for(model, images)
    linear, head = model.body[-2], model.head
    trunk = model.body[:-2]
    parts = []
    for i in range(0, len(x), batch_size):
        a = trunk(x[i:i + batch_size]).double()                           # (b, m)
        h = a @ linear.weight.double().T + linear.bias.double()           # (b, p)
        g = head.weight.double().sum(0) * (h > 0)                         # (b, p)
        parts.append((a, g, torch.relu(h)))
    a, g, r = (torch.cat(t) for t in zip(*parts))
    k = head.weight.shape[0]
    return (g @ g.T) * (a @ a.T + 1) + k * (r @ r.T + 1)


def kernel_features(K: torch.Tensor, train: np.ndarray, rtol: float = 1e-10) -> torch.Tensor:
    """Features ``(N, r)`` whose ridge regression equals ridge regression in the (possibly huge) space of ``K``.

    ``K`` is ``(N, N)`` over all samples, ``train`` the training rows. With ``K_TT = U diag(s) U^T``
    (eigenvalues below ``rtol * max`` dropped) the features are ``Phi = K[:, T] U diag(s)^-1/2``:
    ``Phi_T Phi_T^T = K_TT`` and ``Phi_x Phi_T^T = K_xT``, and a (weighted) ridge solution lies in the span
    of the training features, so every fitted prediction is the same as with the explicit features.
    This is the dual form of ex-09-3 written as ``r <= n`` primal features, so the closed forms of this
    module (LOO, derivative, Reweight) apply unchanged.
    """
    K = torch.as_tensor(K, dtype=torch.float64)
    train = np.asarray(train)
    if K.ndim != 2 or K.shape[0] != K.shape[1]:
        raise ValueError(f"K must be a square (N, N) kernel, got shape {tuple(K.shape)}")
    s, U = torch.linalg.eigh(K[train][:, train])
    keep = s > rtol * s.max()
    return K[:, train] @ (U[:, keep] / s[keep].sqrt())


# ----------------------------------------------------------------------------- data helpers
def add_bias(Z: torch.Tensor) -> torch.Tensor:
    """Append a constant-1 feature: ``(n, d)`` -> ``(n, d + 1)``.

    The intercept is an ordinary (regularised) weight, so the leave-one-out formula stays exact;
    a separate unpenalised intercept would break it.
    """
    return torch.cat([Z, torch.ones(len(Z), 1, dtype=Z.dtype)], dim=1)


def one_hot(labels: np.ndarray | torch.Tensor, n_classes: int) -> torch.Tensor:
    """``(n,)`` integer labels -> ``(n, n_classes)`` float64 one-hot targets."""
    labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if labels.ndim != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= n_classes)):
        raise ValueError(f"labels must be a 1-D array of integers in [0, {n_classes}), got {labels}")
    return F.one_hot(labels, n_classes).double()


def inject_label_noise(labels: np.ndarray, fraction: float, n_classes: int,
                       rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Flip ``round(fraction * n)`` labels, chosen at random, to a different random class.

    Returns ``(noisy_labels, is_flipped)`` with ``is_flipped`` a boolean ``(n,)`` mask.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    labels = np.asarray(labels)
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), int(round(fraction * len(labels))), replace=False)] = True
    noisy = labels.copy()
    shift = rng.integers(1, n_classes, size=int(flipped.sum()))     # never the true class
    noisy[flipped] = (labels[flipped] + shift) % n_classes
    return noisy, flipped


def split_target_task(labels: np.ndarray, n_train_per_class: int, n_pool: int, n_val: int,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Disjoint index arrays ``train`` (stratified, ``n_train_per_class`` per class), ``pool``, ``val``, ``test``.

    ``train`` is ordered so that its first ``m`` samples of each class are also a stratified subset
    (row ``j`` of class ``c`` comes before row ``j + 1``); ``test`` gets everything left over.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    order = rng.permutation(len(labels))
    per_class = [order[labels[order] == c] for c in classes]
    if min(len(p) for p in per_class) < n_train_per_class:
        raise ValueError(f"n_train_per_class={n_train_per_class} exceeds the smallest class size "
                         f"{min(len(p) for p in per_class)}")
    train = np.stack([p[:n_train_per_class] for p in per_class], axis=1).ravel()
    rest = order[~np.isin(order, train)]
    if n_pool + n_val >= len(rest):
        raise ValueError(f"n_pool + n_val = {n_pool + n_val} leaves no test samples out of {len(rest)}")
    return {"train": train, "pool": rest[:n_pool], "val": rest[n_pool:n_pool + n_val],
            "test": rest[n_pool + n_val:]}


# ----------------------------------------------------------------------------- weighted ridge
def _check(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None, lam: float) -> torch.Tensor:
    if not (isinstance(Z, torch.Tensor) and Z.ndim == 2 and Z.dtype == torch.float64):
        raise ValueError(f"Z must be a float64 (n, d) tensor, got {getattr(Z, 'dtype', type(Z))} "
                         f"{tuple(getattr(Z, 'shape', ()))}")
    if not (isinstance(Y, torch.Tensor) and Y.ndim == 2 and len(Y) == len(Z)):
        raise ValueError(f"Y must be an (n, k) tensor with n = {len(Z)} rows, got {tuple(getattr(Y, 'shape', ()))}")
    if not lam > 0:
        raise ValueError(f"lam must be > 0 (it keeps C invertible and the LOO formula exact), got {lam}")
    if alpha is None:
        return torch.ones(len(Z), dtype=torch.float64)
    if alpha.shape != (len(Z),):
        raise ValueError(f"alpha must have shape ({len(Z)},), got {tuple(alpha.shape)}")
    if bool((alpha.detach() < 0).any()):
        raise ValueError("alpha must be >= 0 (a negative weight is not a dataset)")
    return alpha


def _system(Z: torch.Tensor, alpha: torch.Tensor, lam: float) -> torch.Tensor:
    """``C^-1 = Z^T D Z + lam I``, ``(d, d)``."""
    return Z.T @ (alpha[:, None] * Z) + lam * torch.eye(Z.shape[1], dtype=Z.dtype)


def ridge_fit(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None = None, lam: float = 1e-2) -> torch.Tensor:
    """Weighted ridge weights ``w = (Z^T D Z + lam I)^-1 Z^T D Y`` (eq. 6): ``(d, k)``.

    Solved with ``torch.linalg.solve`` (no explicit inverse); differentiable in ``alpha``.
    """
    alpha = _check(Z, Y, alpha, lam)
    return torch.linalg.solve(_system(Z, alpha, lam), Z.T @ (alpha[:, None] * Y))


def loo_predictions(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None = None,
                    lam: float = 1e-2) -> torch.Tensor:
    """Closed-form weighted leave-one-out predictions (Prop. 3): ``(n, k)``.

    Row ``i`` is what the model trained *without* sample ``i`` predicts for ``z_i``::

        f^{-i}(z_i) = (f_i - alpha_i h_i y_i) / (1 - alpha_i h_i),   h_i = z_i^T C z_i,  f = Z w.

    Written this way (not with ``sqrt(alpha)``) it is valid at ``alpha_i = 0``, where it is just ``f_i``.
    """
    alpha = _check(Z, Y, alpha, lam)
    system = _system(Z, alpha, lam)
    fitted = Z @ torch.linalg.solve(system, Z.T @ (alpha[:, None] * Y))
    leverage = (Z * torch.linalg.solve(system, Z.T).T).sum(dim=1)          # h_i = z_i^T C z_i
    weighted = (alpha * leverage)[:, None]
    return (fitted - weighted * Y) / (1.0 - weighted)


def brute_force_loo_predictions(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None = None,
                                lam: float = 1e-2) -> torch.Tensor:
    """The definition of :func:`loo_predictions`: ``n`` refits, each with one ``alpha_i`` set to 0."""
    alpha = _check(Z, Y, alpha, lam)
    rows = []
    for i in range(len(Z)):
        without = alpha.clone()
        without[i] = 0.0
        rows.append(Z[i] @ ridge_fit(Z, Y, without, lam))
    return torch.stack(rows)


def sample_losses(predictions: torch.Tensor, Y: torch.Tensor, loss: Loss = "ce") -> torch.Tensor:
    """Per-sample loss, ``(..., n, k), (..., n, k) -> (..., n)`` (leading batch dimensions allowed).

    ``"mse"``: ``||f - y||^2`` (the ridge's own loss); ``"ce"``: cross-entropy of ``softmax(f)``
    against the (one-hot) target, the loss the paper evaluates with.
    """
    if loss == "mse":
        return ((predictions - Y) ** 2).sum(dim=-1)
    if loss == "ce":
        return -(Y * torch.log_softmax(predictions, dim=-1)).sum(dim=-1)
    raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")


def loo_loss(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None = None, lam: float = 1e-2,
             loss: Loss = "ce", terms: torch.Tensor | None = None) -> torch.Tensor:
    """``L_LOO(alpha)``: the mean leave-one-out loss over the samples selected by ``terms``.

    The terms are *unweighted* (the paper's choice): a sample's weight changes the model, not how
    much its own error counts, so the trivial solution ``alpha = 0`` is not rewarded. ``terms``
    is a boolean ``(n,)`` mask (default: all samples), e.g. the current training set in DIVA Extend.
    """
    per_sample = sample_losses(loo_predictions(Z, Y, alpha, lam), Y, loss)
    if terms is None:
        return per_sample.mean()
    terms = torch.as_tensor(terms, dtype=torch.bool)
    if terms.shape != (len(Z),) or not bool(terms.any()):
        raise ValueError(f"terms must be a boolean ({len(Z)},) mask with at least one True")
    return per_sample[terms].mean()


def validation_loss(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None, lam: float,
                    Z_val: torch.Tensor, Y_val: torch.Tensor, loss: Loss = "ce") -> torch.Tensor:
    """``L_val(alpha)``: the mean loss on ``(Z_val, Y_val)`` of the model trained with weights ``alpha``."""
    return sample_losses(Z_val @ ridge_fit(Z, Y, alpha, lam), Y_val, loss).mean()


# ----------------------------------------------------------------------------- the dataset derivative
def dataset_derivative(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None = None, lam: float = 1e-2,
                       loss: Loss = "ce", *, validation: tuple[torch.Tensor, torch.Tensor] | None = None,
                       terms: torch.Tensor | None = None) -> torch.Tensor:
    """``dL/dalpha`` by autograd, ``(n,)``.

    ``L`` is the validation loss when ``validation=(Z_val, Y_val)`` is given, else the LOO loss
    (with its optional ``terms`` mask).
    """
    alpha = _check(Z, Y, alpha, lam).detach().clone().requires_grad_(True)
    if validation is None:
        objective = loo_loss(Z, Y, alpha, lam, loss, terms)
    else:
        objective = validation_loss(Z, Y, alpha, lam, validation[0], validation[1], loss)
    (gradient,) = torch.autograd.grad(objective, alpha)
    return gradient


def validation_derivative_closed_form(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None, lam: float,
                                      Z_val: torch.Tensor, Y_val: torch.Tensor, loss: Loss = "ce") -> torch.Tensor:
    """The paper's closed form of ``dL_val/dalpha`` (eq. 10 with consistent shapes), ``(n,)``.

    With ``dw/dalpha_i = C z_i r_i^T`` and ``G = dL_val/dF_val`` (``(n_val, k)``)::

        dL_val/dalpha_i = sum_k [Z C Z_val^T G]_ik R_ik,      R = Y - Z w  (residuals).
    """
    alpha = _check(Z, Y, alpha, lam).detach()
    system = _system(Z, alpha, lam)
    w = torch.linalg.solve(system, Z.T @ (alpha[:, None] * Y))
    scores = Z_val @ w
    if loss == "mse":
        G = 2.0 * (scores - Y_val) / len(Z_val)
    elif loss == "ce":
        G = (torch.softmax(scores, dim=1) * Y_val.sum(dim=1, keepdim=True) - Y_val) / len(Z_val)
    else:
        raise ValueError(f"loss must be one of {_LOSSES}, got {loss!r}")
    residuals = Y - Z @ w
    return ((Z @ torch.linalg.solve(system, Z_val.T @ G)) * residuals).sum(dim=1)


def finite_difference_derivative(objective, alpha: torch.Tensor, indices: Sequence[int],
                                 step: float = 1e-5) -> torch.Tensor:
    """Central differences ``(L(alpha + h e_i) - L(alpha - h e_i)) / 2h`` for the given ``indices``.

    ``objective`` maps an ``(n,)`` float64 ``alpha`` to a scalar tensor. Keep ``alpha_i >= step``.
    """
    out = []
    for i in indices:
        plus, minus = alpha.clone(), alpha.clone()
        plus[i] += step
        minus[i] -= step
        out.append((objective(plus) - objective(minus)) / (2 * step))
    return torch.stack(out).detach()


def removal_effects(Z: torch.Tensor, Y: torch.Tensor, lam: float, Z_val: torch.Tensor, Y_val: torch.Tensor,
                    loss: Loss = "ce") -> torch.Tensor:
    """The true change of ``L_val`` when each sample is removed (``alpha_i``: 1 -> 0), by refitting: ``(n,)``.

    To first order it is ``-dL_val/dalpha_i``; this is what the derivative is meant to predict.
    """
    ones = torch.ones(len(Z), dtype=torch.float64)
    base = validation_loss(Z, Y, ones, lam, Z_val, Y_val, loss)
    effects = []
    for i in range(len(Z)):
        alpha = ones.clone()
        alpha[i] = 0.0
        effects.append(validation_loss(Z, Y, alpha, lam, Z_val, Y_val, loss) - base)
    return torch.stack(effects)


# ----------------------------------------------------------------------------- model selection and metrics
def select_lambda(Z: torch.Tensor, Y: torch.Tensor, grid: Sequence[float], loss: Loss = "ce") -> tuple[float, list[float]]:
    """Choose the ridge ``lam`` by the closed-form LOO loss on the training set (no validation data).

    Returns ``(best_lam, loo_losses)`` with one loss per grid value.
    """
    if len(grid) == 0:
        raise ValueError("grid must contain at least one lam value")
    losses = [float(loo_loss(Z, Y, None, lam, loss)) for lam in grid]
    return float(grid[int(np.argmin(losses))]), losses


def select_lambda_batched(Z: torch.Tensor, Y: torch.Tensor, grid: Sequence[float],
                          loss: Loss = "ce") -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_lambda` for many training sets at once: the seeds become a batch dimension.

    ``Z`` is ``(S, n, d)`` float64 and ``Y`` ``(S, n, k)``: ``S`` training sets of the same size (one
    per seed or split). All ``S x len(grid)`` ridge models at ``alpha = 1`` are solved as one batched
    linear system, and their closed-form LOO losses (Prop. 3) are compared per training set.
    Returns ``(lams (S,), losses (S, len(grid)))``, equal to calling :func:`select_lambda` on each set.
    """
    if not (isinstance(Z, torch.Tensor) and Z.ndim == 3 and Z.dtype == torch.float64):
        raise ValueError(f"Z must be a float64 (S, n, d) tensor, got {getattr(Z, 'dtype', type(Z))} "
                         f"{tuple(getattr(Z, 'shape', ()))}")
    if not (isinstance(Y, torch.Tensor) and Y.ndim == 3 and Y.shape[:2] == Z.shape[:2]):
        raise ValueError(f"Y must be an (S, n, k) tensor with (S, n) = {tuple(Z.shape[:2])}, "
                         f"got {tuple(getattr(Y, 'shape', ()))}")
    lams = torch.as_tensor(list(grid), dtype=torch.float64)
    if lams.numel() == 0 or not bool((lams > 0).all()):
        raise ValueError(f"grid must hold at least one lam, all > 0, got {list(grid)}")
    k = Y.shape[-1]
    eye = torch.eye(Z.shape[-1], dtype=Z.dtype)
    system = (Z.mT @ Z)[:, None] + lams[None, :, None, None] * eye          # (S, L, d, d)
    rhs = torch.cat([Z.mT @ Y, Z.mT], dim=-1)[:, None]                       # (S, 1, d, k + n)
    solved = torch.linalg.solve(system, rhs)                                 # (S, L, d, k + n)
    fitted = Z[:, None] @ solved[..., :k]                                    # (S, L, n, k)
    leverage = (Z[:, None] * solved[..., k:].mT).sum(dim=-1, keepdim=True)   # h_i = z_i^T C z_i
    loo = (fitted - leverage * Y[:, None]) / (1.0 - leverage)               # equation (2), alpha = 1
    losses = sample_losses(loo, Y[:, None], loss).mean(dim=-1)               # (S, L)
    return lams[losses.argmin(dim=1)].numpy(), losses.numpy()


def accuracy(Z: torch.Tensor, Y: torch.Tensor, alpha: torch.Tensor | None, lam: float,
             Z_test: torch.Tensor, y_test: np.ndarray) -> float:
    """Test accuracy of the weighted ridge classifier (predicted class = argmax of the scores)."""
    predicted = (Z_test @ ridge_fit(Z, Y, alpha, lam)).argmax(dim=1).numpy()
    return float(np.mean(predicted == np.asarray(y_test)))


# ----------------------------------------------------------------------------- uses of the derivative
def reweight(Z: torch.Tensor, Y: torch.Tensor, lam: float, steps: int = 3, step_size: float = 0.5,
             loss: Loss = "ce", alpha: torch.Tensor | None = None) -> list[torch.Tensor]:
    """DIVA Reweight: a few steps of ``alpha <- max(0, alpha - eta g / max|g|)``, ``g = dL_LOO/dalpha``.

    The gradient is scaled so that ``step_size`` is the largest change of any weight in one step
    (the paper gives no step size; its advice is 1-3 steps, as more overfit the LOO loss).
    Returns the weights after each step: ``[alpha_0, alpha_1, ..., alpha_steps]``.
    """
    if steps < 0 or step_size <= 0:
        raise ValueError(f"steps must be >= 0 and step_size > 0, got {steps} and {step_size}")
    alpha = _check(Z, Y, alpha, lam).detach().clone()
    history = [alpha.clone()]
    for _ in range(steps):
        g = dataset_derivative(Z, Y, alpha, lam, loss)
        alpha = torch.clamp(alpha - step_size * g / g.abs().max(), min=0.0)
        history.append(alpha.clone())
    return history


def select_reweight(Z: torch.Tensor, Y: torch.Tensor, lam: float, Z_val: torch.Tensor, y_val: np.ndarray, *,
                    max_steps: int = 6, step_sizes: Sequence[float] = (0.25, 0.5, 1.0),
                    loss: Loss = "ce") -> dict:
    """DIVA Reweight with its number of steps and step size chosen on a validation split.

    Runs :func:`reweight` for every ``step_size`` up to ``max_steps`` and picks the ``(step_size, steps)``
    with the highest validation accuracy; ties go to fewer steps, then the smaller step (``steps = 0``,
    no reweighting, is a candidate). The test data play no part. Returns ``{"step_size", "steps",
    "alpha", "val_accuracy", "histories"}`` with ``histories[eta]`` the weights after each step.
    """
    if max_steps < 0 or not step_sizes:
        raise ValueError(f"max_steps must be >= 0 and step_sizes non-empty, got {max_steps}, {step_sizes}")
    histories = {float(eta): reweight(Z, Y, lam, steps=max_steps, step_size=eta, loss=loss) for eta in step_sizes}
    scores = {(eta, t): accuracy(Z, Y, a, lam, Z_val, y_val) for eta, h in histories.items() for t, a in enumerate(h)}
    eta, t = max(scores, key=lambda key: (scores[key], -key[1], -key[0]))
    return {"step_size": eta, "steps": t, "alpha": histories[eta][t], "val_accuracy": scores[eta, t],
            "histories": histories}


def detection_scores(Z: torch.Tensor, Y: torch.Tensor, lam: float, loss: Loss = "ce") -> torch.Tensor:
    """Harmfulness of every training sample: ``dL_LOO/dalpha`` at ``alpha = 1``, ``(n,)``; larger = more harmful."""
    return dataset_derivative(Z, Y, None, lam, loss)


def training_loss_scores(Z: torch.Tensor, Y: torch.Tensor, lam: float, loss: Loss = "ce") -> torch.Tensor:
    """The baseline detector: each sample's loss under the model trained on all of them, ``(n,)``."""
    return sample_losses(Z @ ridge_fit(Z, Y, None, lam), Y, loss).detach()


@dataclass(frozen=True)
class DetectionReport:
    """Mislabel detection quality of ``scores`` (flag ``scores >= threshold``) against the true flips."""

    precision: float
    recall: float
    f1: float
    auc: float
    n_flagged: int


def detection_report(scores: torch.Tensor | np.ndarray, is_noisy: np.ndarray, threshold: float = 0.0) -> DetectionReport:
    """Precision, recall and F1 of the set ``{i: score_i >= threshold}`` and the ranking's ROC AUC."""
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

    scores = np.asarray(scores, dtype=float)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    if scores.shape != is_noisy.shape:
        raise ValueError(f"scores {scores.shape} and is_noisy {is_noisy.shape} must have the same shape")
    flagged = scores >= threshold
    precision, recall, f1, _ = precision_recall_fscore_support(is_noisy, flagged, average="binary", zero_division=0)
    return DetectionReport(float(precision), float(recall), float(f1), float(roc_auc_score(is_noisy, scores)),
                           int(flagged.sum()))


def extend(Z_core: torch.Tensor, Y_core: torch.Tensor, Z_pool: torch.Tensor, Y_pool: torch.Tensor, lam: float,
           n_add: int, per_round: int = 10, loss: Loss = "ce") -> np.ndarray:
    """DIVA Extend: the order in which to add pool samples to a core training set.

    The core has weight 1 and the pool weight 0. Each round computes ``dL_LOO/dalpha`` over the current
    training set (LOO terms = samples with weight 1) and adds the ``per_round`` pool samples with the
    most negative derivative (adding them lowers the LOO loss most). Returns ``n_add`` pool indices.
    """
    if not 0 < n_add <= len(Z_pool) or per_round < 1:
        raise ValueError(f"need 0 < n_add <= {len(Z_pool)} and per_round >= 1, got {n_add} and {per_round}")
    Z = torch.cat([Z_core, Z_pool])
    Y = torch.cat([Y_core, Y_pool])
    n_core = len(Z_core)
    alpha = torch.cat([torch.ones(n_core, dtype=torch.float64), torch.zeros(len(Z_pool), dtype=torch.float64)])
    chosen: list[int] = []
    while len(chosen) < n_add:
        g = dataset_derivative(Z, Y, alpha, lam, loss, terms=alpha > 0)[n_core:].clone()
        g[chosen] = torch.inf
        best = torch.argsort(g)[: min(per_round, n_add - len(chosen))].tolist()
        chosen.extend(best)
        alpha[[n_core + j for j in best]] = 1.0
    return np.asarray(chosen)
