"""Self-checks for the book's coding exercises.

Each ``check_*`` function takes the reader's implementation, compares it with a reference on small
random inputs and either returns ``True`` or raises ``AssertionError`` saying what went wrong.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import scipy.sparse as sp


def _jaccard_reference(dense: np.ndarray) -> np.ndarray:
    binary = (dense > 0).astype(float)
    n_items = binary.shape[1]
    out = np.zeros((n_items, n_items))
    for a in range(n_items):
        for b in range(n_items):
            union = np.logical_or(binary[:, a], binary[:, b]).sum()
            if a != b and union:
                out[a, b] = np.logical_and(binary[:, a], binary[:, b]).sum() / union
    return out


def check_jaccard_similarity(fn: Callable[[sp.csr_matrix], np.ndarray], trials: int = 3) -> bool:
    """Exercise ex-04-3: ``fn(R)`` must return the item-item Jaccard similarity, zero diagonal.

    ``R`` is an ``(n_users, n_items)`` sparse 0/1 matrix; the answer an ``(n_items, n_items)`` array.
    """
    rng = np.random.default_rng(2003)
    for trial in range(trials):
        dense = (rng.random((rng.integers(5, 15), rng.integers(3, 9))) < 0.35).astype(float)
        dense[:, -1] = 0.0  # an item nobody bought must not divide by zero
        got = fn(sp.csr_matrix(dense))
        got = got.toarray() if sp.issparse(got) else np.asarray(got, dtype=float)
        want = _jaccard_reference(dense)
        if got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected shape {want.shape} (n_items, n_items), got {got.shape}")
        if not np.allclose(np.diag(got), 0.0):
            raise AssertionError("the diagonal must be 0: an item is not recommended because of itself")
        if not np.allclose(got, want, atol=1e-9):
            a, b = np.unravel_index(np.argmax(np.abs(got - want)), want.shape)
            raise AssertionError(f"trial {trial}: similarity of items {a} and {b} is {got[a, b]:.4f}, "
                                 f"expected |A n B| / |A u B| = {want[a, b]:.4f}")
    print("check_jaccard_similarity: correct")
    return True


def check_virtual_neighbours(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-01-4: ``fn(query, pool, k)`` must implement the paper's Eq. 4.

    ``query`` is ``[B, d]``, ``pool`` ``[P, d]`` (torch tensors); the answer ``[B, d]`` is the
    softmax-weighted average of the ``k`` pool rows with the largest dot products with each query.
    """
    import torch

    generator = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        b, p, d = (int(v) for v in torch.randint(3, 12, (3,), generator=generator))
        k = int(torch.randint(1, p, (1,), generator=generator))
        query, pool = torch.randn(b, d, generator=generator), torch.randn(p, d, generator=generator)
        scores = query @ pool.T
        top, idx = scores.topk(k, dim=1)
        want = torch.einsum("bk,bkd->bd", torch.softmax(top, dim=1), pool[idx])
        got = torch.as_tensor(fn(query, pool, k))
        if got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected shape {tuple(want.shape)} [B, d], got {tuple(got.shape)}")
        if not torch.allclose(got, want, atol=1e-5):
            raise AssertionError(f"trial {trial} (k={k}): values differ from softmax over the top-k scores; "
                                 "did you keep only the k best pool rows before the softmax?")
    return True


def check_dual_ridge(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-09-3: ``fn(Z, Y, alpha, lam)`` must return the weighted ridge weights of equation (1).

    ``Z`` is ``(n, d)`` float64 with ``d > n``, ``Y`` is ``(n, k)``, ``alpha`` is ``(n,)`` with some zeros;
    the answer must be the ``(d, k)`` tensor that :func:`iclr_lib.diva.ridge_fit` returns.
    """
    import torch

    from .diva import ridge_fit

    generator = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        n, d, k = 6 + 3 * trial, 20 + 5 * trial, 3
        Z = torch.randn(n, d, generator=generator, dtype=torch.float64)
        Y = torch.randn(n, k, generator=generator, dtype=torch.float64)
        alpha = torch.rand(n, generator=generator, dtype=torch.float64) * 2
        alpha[0] = 0.0
        lam = 0.1 * (trial + 1)
        got = fn(Z, Y, alpha, lam)
        want = ridge_fit(Z, Y, alpha, lam)
        if not isinstance(got, torch.Tensor) or got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected a {tuple(want.shape)} (d, k) tensor, got "
                                 f"{getattr(got, 'shape', type(got))}")
        if not torch.allclose(got, want, atol=1e-8, rtol=1e-6):
            raise AssertionError(f"trial {trial}: weights differ from ridge_fit by {(got - want).abs().max():.2e}")
    return True


def check_exact_shapley(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-11-3: ``fn(value, n_players)`` must return the exact Shapley values, ``(n_players,)``.

    ``value`` maps a boolean coalition mask ``(n_players,)`` to a float.
    """
    from .shapley import exact_shapley

    rng = np.random.default_rng(1953)
    for trial in range(trials):
        n = 3 + trial
        table = rng.normal(size=2 ** n)

        def value(mask, table=table, n=n):
            return float(table[int((np.asarray(mask, dtype=bool) * (1 << np.arange(n))).sum())])

        got = np.asarray(fn(value, n), dtype=float)
        want = exact_shapley(value, n)
        if got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected shape {want.shape} (n_players,), got {got.shape}")
        if not np.allclose(got, want, atol=1e-9):
            raise AssertionError(f"trial {trial}: values differ from the Shapley values by {np.abs(got - want).max():.2e}"
                                 " (check the weights |S|! (n - |S| - 1)! / n!)")
    return True


def check_graph_discriminator_loss(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-03-4: ``fn(z_hat, domains, A)`` must return GRDA's balanced graph-discriminator loss.

    ``z_hat`` is ``(N, B, d_out)``, ``domains`` a sequence of distinct domain ids, ``A`` an ``(N, N)`` 0/1
    array; the answer must be the scalar tensor :func:`iclr_lib.grda.graph_discriminator_loss` returns
    (connected and unconnected pairs averaged separately, then their mean, times ``N``).
    """
    import torch

    from .grda import graph_discriminator_loss

    rng = np.random.default_rng(2022)
    for trial in range(trials):
        N, B = 6 + 2 * trial, 4
        upper = np.triu(rng.random((N, N)) < 0.25, 1)            # sparse: balancing matters
        upper[0, 1] = True
        A = (upper | upper.T).astype(int)
        z_hat = torch.as_tensor(rng.normal(size=(N, B, 2)), dtype=torch.float64)
        domains = rng.choice(N, N - 1, replace=False)
        got = fn(z_hat, domains, A)
        want = graph_discriminator_loss(z_hat, domains, A)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"trial {trial}: expected a scalar tensor, got {type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(want.dtype), want, atol=1e-8, rtol=1e-6):
            raise AssertionError(f"trial {trial}: loss {float(got):.6f}, expected {float(want):.6f} "
                                 "(average connected and unconnected pairs separately, then multiply by N)")
    return True


def check_pifa(fn: Callable[[sp.csr_matrix, sp.csr_matrix], object], trials: int = 3) -> bool:
    """Exercise ex-02-3: ``fn(Y, X)`` must return PIFA label embeddings ``(L, V)``.

    ``Y`` is an ``(n, L)`` sparse 0/1 label matrix and ``X`` an ``(n, V)`` sparse feature matrix; the
    answer (dense or sparse) must equal :func:`iclr_lib.giant.pifa_label_embeddings`: rows of ``Y``
    L2-normalised, ``Y^T X``, then rows L2-normalised. A label no instance has stays a zero row.
    """
    from .giant import pifa_label_embeddings

    rng = np.random.default_rng(2022)
    for trial in range(trials):
        n, L, V = (int(v) for v in rng.integers(8, 20, 3))
        Y = sp.csr_matrix((rng.random((n, L)) < 0.2).astype(np.float32))
        X = sp.csr_matrix((rng.random((n, V)) * (rng.random((n, V)) < 0.3)).astype(np.float32))
        got = fn(Y, X)
        got = got.toarray() if sp.issparse(got) else np.asarray(got, dtype=np.float64)
        want = pifa_label_embeddings(Y, X).toarray()
        if got.shape != want.shape:
            raise AssertionError(f"trial {trial}: expected shape {want.shape} (labels, features), got {got.shape}")
        if not np.allclose(got, want, atol=1e-5):
            raise AssertionError(f"trial {trial}: embeddings differ by up to {np.abs(got - want).max():.2e} "
                                 "(normalise the rows of Y first, then the rows of Y^T X)")
    return True


def check_moment_loss(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-06-3: ``fn(fake, real)`` must return PSA-GAN's moment loss for ``(B, 1, L)`` batches.

    The answer must equal :func:`iclr_lib.psa_gan.moment_loss`: the batch mean of
    ``|std_t(fake_b) - std_t(real_b)| + |mean_t(fake_b) - mean_t(real_b)|`` (``torch.std``, unbiased).
    """
    import torch

    from .psa_gan import moment_loss

    gen = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        B, L = 4 + 3 * trial, 16 * (trial + 1)
        fake = torch.rand(B, 1, L, generator=gen, dtype=torch.float64)
        real = 0.5 * torch.rand(B, 1, L, generator=gen, dtype=torch.float64) + 0.2
        got = fn(fake, real)
        want = moment_loss(fake, real)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"trial {trial}: expected a scalar tensor, got {type(got).__name__}")
        if not torch.allclose(got.reshape(()).to(want.dtype), want, atol=1e-8):
            raise AssertionError(f"trial {trial}: loss {float(got):.6f}, expected {float(want):.6f} "
                                 "(pair window b of fake with window b of real; average the absolute gaps over the batch)")
    return True


def check_policy_derivative(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-07-3: ``fn(G, g_val, probs)`` must return DeepAA's exact policy derivative.

    ``G (J, P)`` holds one gradient per entry, ``g_val (P,)`` the validation gradient, ``probs (J,)`` the
    layer's probabilities; the answer is ``d cos(g_val, probs @ G) / d probs``, shape ``(J,)``, i.e.
    ``G @ t / (|g_aug| |g_val|)`` with ``t = g_val - (g_val . g_aug / |g_aug|^2) g_aug``.
    """
    import torch

    gen = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        J, P = 5 + 4 * trial, 20 + 10 * trial
        G = torch.randn(J, P, generator=gen, dtype=torch.float64)
        g_val = torch.randn(P, generator=gen, dtype=torch.float64) + G.mean(0)
        probs = torch.softmax(torch.randn(J, generator=gen, dtype=torch.float64), 0)
        p = probs.clone().requires_grad_(True)
        g_aug = p @ G
        (want,) = torch.autograd.grad(torch.dot(g_val, g_aug) / (g_aug.norm() * g_val.norm()), p)
        got = fn(G, g_val, probs)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != (J,):
            raise AssertionError(f"trial {trial}: expected a tensor of shape ({J},), got {getattr(got, 'shape', type(got))}")
        if not torch.allclose(got.to(want.dtype), want, atol=1e-8):
            raise AssertionError(f"trial {trial}: derivative differs by up to {(got - want).abs().max():.2e} "
                                 "(project g_val off g_aug to get t, then divide by both norms)")
    return True


def check_soft_bce(fn: Callable, trials: int = 3) -> bool:
    """Exercise ex-08-3: ``fn(logits, targets)`` must return Trans-Encoder's soft-target BCE, stably.

    The answer must equal :func:`iclr_lib.trans_encoder.soft_bce`, the batch mean of
    ``-(y log s(x) + (1 - y) log(1 - s(x)))``, also for logits as large as +-60 (where computing
    ``sigmoid`` first and then its logarithm gives ``inf`` or ``nan``).
    """
    import torch

    from .trans_encoder import soft_bce

    gen = torch.Generator().manual_seed(2022)
    for trial in range(trials):
        B = 6 + 5 * trial
        scale = (1.0, 10.0, 60.0)[trial % 3]
        logits = scale * torch.randn(B, generator=gen, dtype=torch.float64)
        targets = torch.rand(B, generator=gen, dtype=torch.float64)
        got, want = fn(logits, targets), soft_bce(logits, targets)
        if not isinstance(got, torch.Tensor) or got.numel() != 1:
            raise AssertionError(f"trial {trial}: expected a scalar tensor, got {type(got).__name__}")
        if not torch.isfinite(got):
            raise AssertionError(f"trial {trial}: the loss is {float(got)} for logits up to {scale:g}; "
                                 "use log s(x) = -softplus(-x) and log(1 - s(x)) = -softplus(x)")
        if not torch.allclose(got.reshape(()).to(want.dtype), want, atol=1e-8, rtol=1e-6):
            raise AssertionError(f"trial {trial}: loss {float(got):.6f}, expected {float(want):.6f} "
                                 "(average over the batch)")
    return True
