"""Unit tests for iclr_lib.diva: closed forms against brute force, derivatives against finite
differences, and the uses (detection, reweighting, Extend) on scikit-learn's bundled digits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.datasets import load_digits

from iclr_lib import diva as dv
from iclr_lib.exercises.diva import check_dual_ridge


@pytest.fixture(scope="module")
def digits():
    """300 digits (raw 8x8 pixels in [0, 1] plus a constant), 10 classes, float64."""
    data = load_digits()
    Z = dv.add_bias(torch.as_tensor(data.data[:300] / 16.0, dtype=torch.float64))
    return Z, dv.one_hot(data.target[:300], 10), data.target[:300]


@pytest.fixture(scope="module")
def small():
    """A random, well-conditioned regression problem: n=100, d=8, k=3."""
    g = torch.Generator().manual_seed(0)
    Z = dv.add_bias(torch.randn(100, 7, generator=g, dtype=torch.float64))
    Y = dv.one_hot(torch.randint(0, 3, (100,), generator=g).numpy(), 3)
    alpha = torch.rand(100, generator=g, dtype=torch.float64) * 2
    alpha[3] = 0.0
    return Z, Y, alpha


def test_ridge_fit_solves_the_weighted_normal_equations(small):
    Z, Y, alpha = small
    w = dv.ridge_fit(Z, Y, alpha, 0.3)
    gradient = Z.T @ (alpha[:, None] * (Z @ w - Y)) + 0.3 * w        # d/dw of the objective, / 2
    assert torch.allclose(gradient, torch.zeros_like(gradient), atol=1e-10)


def test_zero_weight_removes_a_sample_and_integer_weight_duplicates_it(small):
    Z, Y, _ = small
    alpha = torch.ones(100, dtype=torch.float64)
    alpha[0], alpha[1] = 0.0, 2.0
    rows = torch.tensor([1, 1, *range(2, 100)])                # sample 0 dropped, sample 1 twice
    expected = dv.ridge_fit(Z[rows], Y[rows], None, 0.1)
    assert torch.allclose(dv.ridge_fit(Z, Y, alpha, 0.1), expected, atol=1e-12)


def test_closed_form_loo_equals_refits_with_a_zero_weight(small, digits):
    Z, Y, alpha = small
    assert torch.allclose(dv.loo_predictions(Z, Y, alpha, 0.1), dv.brute_force_loo_predictions(Z, Y, alpha, 0.1),
                          atol=1e-8, rtol=0)
    Zd, Yd, _ = digits
    alpha_d = torch.as_tensor(np.random.default_rng(1).uniform(0, 2, len(Zd)))
    alpha_d[5] = 0.0
    assert (dv.loo_predictions(Zd, Yd, alpha_d, 1e-2) - dv.brute_force_loo_predictions(Zd, Yd, alpha_d, 1e-2)).abs().max() <= 1e-8


def test_loo_prediction_of_a_zero_weight_sample_is_the_fitted_value(small):
    Z, Y, alpha = small
    fitted = Z @ dv.ridge_fit(Z, Y, alpha, 0.1)
    assert torch.allclose(dv.loo_predictions(Z, Y, alpha, 0.1)[3], fitted[3], atol=1e-12)


def test_wrong_loo_formula_would_be_caught(small):
    """The brute-force reference really distinguishes LOO from the in-sample fit."""
    Z, Y, alpha = small
    fitted = Z @ dv.ridge_fit(Z, Y, alpha, 0.1)
    assert (fitted - dv.brute_force_loo_predictions(Z, Y, alpha, 0.1)).abs().max() > 1e-3


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_validation_derivative_closed_form_autograd_and_finite_differences_agree(small, loss):
    Z, Y, alpha = small
    alpha = alpha.clamp(min=0.1)                                # finite differences need alpha_i > step
    Z_val, Y_val = Z[:30] + 0.1, Y[:30]
    autograd = dv.dataset_derivative(Z, Y, alpha, 0.2, loss, validation=(Z_val, Y_val))
    closed = dv.validation_derivative_closed_form(Z, Y, alpha, 0.2, Z_val, Y_val, loss)
    assert torch.allclose(closed, autograd, rtol=1e-8, atol=1e-14)
    probe = [0, 7, 42, 99]
    finite = dv.finite_difference_derivative(lambda a: dv.validation_loss(Z, Y, a, 0.2, Z_val, Y_val, loss), alpha, probe)
    assert ((autograd[probe] - finite).abs().max() / finite.abs().max()) <= 1e-5


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_loo_derivative_matches_finite_differences_including_at_zero_weight(small, loss):
    Z, Y, alpha = small
    gradient = dv.dataset_derivative(Z, Y, alpha, 0.2, loss)
    probe = [1, 50, 98]
    finite = dv.finite_difference_derivative(lambda a: dv.loo_loss(Z, Y, a, 0.2, loss), alpha, probe)
    assert ((gradient[probe] - finite).abs().max() / finite.abs().max()) <= 1e-5
    # one-sided at alpha_3 = 0 (the Extend setting): (L(h e_3) - L(0)) / h
    h = 1e-7
    bumped = alpha.clone()
    bumped[3] = h
    one_sided = (dv.loo_loss(Z, Y, bumped, 0.2, loss) - dv.loo_loss(Z, Y, alpha, 0.2, loss)) / h
    assert abs(float(one_sided - gradient[3])) <= 1e-4 * float(gradient.abs().max())


def test_derivative_ranks_the_true_effect_of_removing_samples(digits):
    Z, Y, _ = digits
    Z_train, Y_train, Z_val, Y_val = Z[:200], Y[:200], Z[200:], Y[200:]
    predicted = -dv.dataset_derivative(Z_train, Y_train, None, 1e-1, "ce", validation=(Z_val, Y_val))
    actual = dv.removal_effects(Z_train, Y_train, 1e-1, Z_val, Y_val, "ce")
    assert spearmanr(predicted, actual)[0] > 0.9


def test_mislabel_detection_on_digits(digits):
    Z, _, labels = digits
    noisy, flipped = dv.inject_label_noise(labels, 0.2, 10, np.random.default_rng(0))
    assert flipped.sum() == 60 and np.all(noisy[flipped] != labels[flipped]) and np.all(noisy[~flipped] == labels[~flipped])
    scores = dv.detection_scores(Z, dv.one_hot(noisy, 10), 1e-1)
    report = dv.detection_report(scores, flipped)
    assert report.auc >= 0.85 and 0.0 < report.f1 <= 1.0
    # an uninformative score is at chance
    assert abs(dv.detection_report(np.zeros(len(flipped)), flipped).auc - 0.5) < 1e-12


def test_reweight_lowers_the_loo_loss_and_keeps_weights_non_negative(digits):
    Z, _, labels = digits
    noisy, _ = dv.inject_label_noise(labels, 0.2, 10, np.random.default_rng(1))
    Y = dv.one_hot(noisy, 10)
    history = dv.reweight(Z, Y, 1e-1, steps=3, step_size=0.5)
    assert len(history) == 4 and all(bool((a >= 0).all()) for a in history)
    losses = [float(dv.loo_loss(Z, Y, a, 1e-1)) for a in history]
    assert losses[-1] < losses[0]
    assert float((history[1] - history[0]).abs().max()) == pytest.approx(0.5, abs=1e-12)


def test_extend_prefers_correct_labels_from_a_noisy_pool(digits):
    Z, Y, labels = digits
    pool_labels, flipped = dv.inject_label_noise(labels[100:], 0.4, 10, np.random.default_rng(2))
    order = dv.extend(Z[:100], Y[:100], Z[100:], dv.one_hot(pool_labels, 10), 1e-1, n_add=50, per_round=10)
    assert len(order) == 50 and len(set(order.tolist())) == 50
    assert flipped[order].mean() < 0.5 * flipped.mean()


def test_select_lambda_picks_the_grid_minimum(digits):
    Z, Y, _ = digits
    grid = [1e-3, 1e-1, 10.0]
    best, losses = dv.select_lambda(Z, Y, grid)
    assert best == grid[int(np.argmin(losses))] and len(losses) == 3


def test_split_target_task_is_disjoint_and_stratified():
    labels = np.repeat(np.arange(5), 100)
    split = dv.split_target_task(labels, 20, 200, 50, np.random.default_rng(0))
    everything = np.concatenate(list(split.values()))
    assert len(everything) == len(np.unique(everything)) == 500
    assert np.all(np.bincount(labels[split["train"]]) == 20)
    assert np.all(np.bincount(labels[split["train"][:25]]) == 5)            # prefixes stay stratified
    with pytest.raises(ValueError, match="n_train_per_class"):
        dv.split_target_task(labels, 101, 10, 10, np.random.default_rng(0))


def test_feature_extractor_learns_and_returns_float64_features():
    rng = np.random.default_rng(0)
    images = np.zeros((60, 28, 28), dtype=np.uint8)
    labels = np.repeat([0, 1], 30)
    images[labels == 0, 5:10, 5:23] = 255                    # class 0: a horizontal bar
    images[labels == 1, 5:23, 12:17] = 255                   # class 1: a vertical bar
    images = np.clip(images + rng.integers(0, 40, images.shape), 0, 255).astype(np.uint8)
    model = dv.train_feature_extractor(images, labels, epochs=15, seed=0, feature_dim=16)
    with torch.no_grad():
        predicted = model(torch.as_tensor(images, dtype=torch.float32)[:, None] / 255.0).argmax(1).numpy()
    assert (predicted == labels).mean() == 1.0
    features = dv.extract_features(model, images)
    assert features.shape == (60, 16) and features.dtype == torch.float64 and bool((features >= 0).all())


@pytest.mark.parametrize("bad, match", [
    (dict(lam=0.0), "lam must be > 0"),
    (dict(alpha=-torch.ones(100, dtype=torch.float64)), "alpha must be >= 0"),
    (dict(alpha=torch.ones(5, dtype=torch.float64)), "alpha must have shape"),
    (dict(Z=torch.ones(100, 3)), "Z must be a float64"),
])
def test_bad_inputs_get_clear_errors(small, bad, match):
    Z, Y, alpha = small
    kwargs = {"Z": Z, "Y": Y, "alpha": alpha, "lam": 0.1, **bad}
    with pytest.raises(ValueError, match=match):
        dv.ridge_fit(**kwargs)
    with pytest.raises(ValueError, match="loss must be"):
        dv.sample_losses(Y, Y, "hinge")
    with pytest.raises(ValueError, match="images must be"):
        dv.extract_features(dv.SmallCNN(), np.zeros((2, 8, 8)))


def test_dual_ridge_exercise_check_accepts_the_solution_and_rejects_a_wrong_one():
    def dual_ridge_fit(Z, Y, alpha, lam):
        gram = alpha[:, None] * (Z @ Z.T)
        return Z.T @ torch.linalg.solve(gram + lam * torch.eye(len(Z), dtype=Z.dtype), alpha[:, None] * Y)

    assert check_dual_ridge(dual_ridge_fit)
    with pytest.raises(AssertionError, match="differ"):
        check_dual_ridge(lambda Z, Y, alpha, lam: Z.T @ torch.linalg.solve(Z @ Z.T + lam * torch.eye(len(Z), dtype=Z.dtype), Y))


def test_batched_lambda_selection_equals_one_selection_per_seed():
    """Vectorised seeds: one batched solve gives each training set's LOO curve and lambda."""
    gen = torch.Generator().manual_seed(4)
    S, n, d, k = 4, 30, 8, 3
    Z = torch.randn(S, n, d, generator=gen, dtype=torch.float64)
    Y = dv.one_hot(torch.randint(0, k, (S * n,), generator=gen).numpy(), k).reshape(S, n, k)
    grid = [1e-3, 1e-1, 1.0, 10.0]
    lams, losses = dv.select_lambda_batched(Z, Y, grid)
    for s in range(S):
        lam_s, curve_s = dv.select_lambda(Z[s], Y[s], grid)
        assert lams[s] == lam_s
        np.testing.assert_allclose(losses[s], curve_s, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"\(S, n, d\)"):
        dv.select_lambda_batched(Z[0], Y[0], grid)
    with pytest.raises(ValueError, match="grid"):
        dv.select_lambda_batched(Z, Y, [0.0])


def test_jacobian_kernel_equals_the_explicit_jacobian_of_the_summed_logits():
    torch.manual_seed(0)
    model = dv.SmallCNN(n_classes=3, feature_dim=6, in_channels=3, image_size=20).double().eval()
    images = np.random.default_rng(0).integers(0, 256, size=(7, 3, 20, 20)).astype(np.uint8)
    x = torch.as_tensor(images, dtype=torch.float64) / 255.0
    params = [model.body[-2].weight, model.body[-2].bias, model.head.weight, model.head.bias]
    rows = []
    for xi in x:
        grads = torch.autograd.grad(model(xi[None]).sum(), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    J = torch.stack(rows)                                                      # (7, d), d >> 7
    assert J.shape[1] == 6 * 128 + 6 + 3 * 6 + 3                              # 32 x 2 x 2 inputs to the linear layer
    assert torch.allclose(dv.jacobian_kernel(model.float(), images), J @ J.T, rtol=1e-4, atol=1e-6)


def test_kernel_features_give_the_same_ridge_as_the_explicit_high_dimensional_features():
    g = torch.Generator().manual_seed(1)
    Z = torch.randn(60, 400, generator=g, dtype=torch.float64)               # d = 400 >> n = 40 training rows
    Y = dv.one_hot(torch.randint(0, 3, (60,), generator=g).numpy(), 3)
    train, rest = np.arange(40), np.arange(40, 60)
    alpha = torch.rand(40, generator=g, dtype=torch.float64) * 2
    Phi = dv.kernel_features(Z @ Z.T, train)
    assert Phi.shape[1] <= 40
    explicit = Z[rest] @ dv.ridge_fit(Z[train], Y[train], alpha, 0.5)
    dual = Phi[rest] @ dv.ridge_fit(Phi[train], Y[train], alpha, 0.5)
    assert torch.allclose(explicit, dual, atol=1e-8)
    assert torch.allclose(dv.loo_predictions(Z[train], Y[train], alpha, 0.5),
                          dv.loo_predictions(Phi[train], Y[train], alpha, 0.5), atol=1e-8)
    with pytest.raises(ValueError, match="square"):
        dv.kernel_features(Z, train)


def test_select_reweight_picks_the_best_validation_accuracy_with_ties_to_fewer_steps(digits):
    Z, Y, labels = digits
    train, val = slice(0, 200), slice(200, 300)
    lam = 1.0
    out = dv.select_reweight(Z[train], Y[train], lam, Z[val], labels[val], max_steps=3, step_sizes=(0.5, 1.0))
    scores = {(eta, t): dv.accuracy(Z[train], Y[train], a, lam, Z[val], labels[val])
              for eta, h in out["histories"].items() for t, a in enumerate(h)}
    assert out["val_accuracy"] == max(scores.values())
    best = [key for key, v in scores.items() if v == max(scores.values())]
    assert out["steps"] == min(t for _, t in best)
    assert torch.equal(out["alpha"], out["histories"][out["step_size"]][out["steps"]])
    assert all(len(h) == 4 for h in out["histories"].values())
    with pytest.raises(ValueError, match="max_steps"):
        dv.select_reweight(Z[train], Y[train], lam, Z[val], labels[val], max_steps=-1)
