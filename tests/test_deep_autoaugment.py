"""Tests of iclr_lib.deep_autoaugment: data, batched operations, the search space, policies, the exact
policy derivative, the search loop and the evaluation pieces."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageEnhance, ImageOps
from scipy.stats import chisquare

from iclr_lib import deep_autoaugment as daa


def _images(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g).float() / 255.0


def _to_pil(image: torch.Tensor) -> Image.Image:
    return Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy())


def _from_pil(im: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255.0


def test_cifar_subset_shapes_and_balance(mirror):
    train_x, train_y, test_x, test_y = daa.load_cifar10_subset()
    assert train_x.shape == (10000, 3, 32, 32) and train_x.dtype == torch.uint8
    assert test_x.shape == (5000, 3, 32, 32)
    assert torch.bincount(train_y).tolist() == [1000] * 10 and torch.bincount(test_y).tolist() == [500] * 10


def test_stratified_split_is_disjoint_and_balanced():
    labels = torch.arange(10).repeat(30)
    parts = daa.stratified_split(labels, {"a": 5, "b": 10}, seed=1)
    assert torch.bincount(labels[parts["a"]]).tolist() == [5] * 10
    assert torch.bincount(labels[parts["rest"]]).tolist() == [15] * 10
    union = torch.cat(list(parts.values()))
    assert len(union) == 300 and len(torch.unique(union)) == 300
    with pytest.raises(ValueError, match="fewer"):
        daa.stratified_split(labels, {"a": 31})


def test_the_official_space_has_139_entries_without_identity_levels():
    space = daa.search_space()
    assert len(space.op_names) == 18 and len(space) == 11 * 12 + 7 == 139
    assert space.labels.count("Identity") == 1
    for name, identity in daa.IDENTITY_MAGNITUDE.items():
        mags = space.magnitudes[space.ops == space.op_names.index(name)]
        assert len(mags) == 12 and not torch.isclose(mags, torch.tensor(identity)).any(), name


def test_deterministic_operations_at_their_identity_magnitude_leave_images_unchanged():
    x = _images()
    for name, identity in daa.IDENTITY_MAGNITUDE.items():
        out = daa.apply_operation(name, x, identity)
        assert torch.allclose(out, x, atol=1e-6), name


def test_operations_match_pil_where_pil_is_the_definition():
    x = _images(3)
    for k in range(3):
        pil = _to_pil(x[k])
        assert torch.equal(daa.apply_operation("Equalize", x[k:k + 1])[0], _from_pil(ImageOps.equalize(pil)))
        assert torch.equal(daa.apply_operation("Posterize", x[k:k + 1], 5.0)[0], _from_pil(ImageOps.posterize(pil, 5)))
        assert torch.allclose(daa.apply_operation("Solarize", x[k:k + 1], 128.0)[0],
                              _from_pil(ImageOps.solarize(pil, 128)), atol=1e-6)
        for op, enhancer in (("Brightness", ImageEnhance.Brightness), ("Color", ImageEnhance.Color),
                             ("Sharpness", ImageEnhance.Sharpness)):
            ours = daa.apply_operation(op, x[k:k + 1], 1.6)[0]
            theirs = _from_pil(enhancer(pil).enhance(1.6))
            assert (ours - theirs).abs().max() <= 2.5 / 255, op     # PIL rounds to 8 bits


def test_geometric_operations_move_content_as_documented():
    x = _images(2)
    moved = daa.apply_operation("TranslateX", x, 4 / 32)
    assert torch.equal(moved[..., 4:], x[..., :-4])                 # content moves right by 4 pixels
    assert torch.all(moved[..., :4] == daa.FILL)
    assert torch.equal(daa.apply_operation("TranslateY", x, -4 / 32)[..., :-4, :], x[..., 4:, :])
    rotated = daa.apply_operation("Rotate", x, 90.0)
    assert torch.equal(rotated, torch.rot90(x, 1, dims=(2, 3))) or torch.equal(rotated, torch.rot90(x, -1, dims=(2, 3)))
    assert torch.allclose(daa.apply_operation("Invert", daa.apply_operation("Invert", x)), x, atol=1e-6)


def test_crop_cutout_and_flip():
    x = _images(8)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(daa.random_crop(x, 0, g), x)
    cropped = daa.random_crop(x, 4, g)
    padded = torch.nn.functional.pad(x, (4,) * 4)
    for k in range(len(x)):             # every crop is one 32x32 window of the padded image
        assert any(torch.equal(cropped[k], padded[k, :, i:i + 32, j:j + 32]) for i in range(9) for j in range(9))
    cut = daa.cutout(x, 16, g)
    changed = (cut != x).any(1)
    for k in range(len(x)):
        rows, cols = torch.nonzero(changed[k], as_tuple=True)
        assert rows.max() - rows.min() < 16 and cols.max() - cols.min() < 16
    flipped = daa.crop_flip(x, torch.Generator().manual_seed(3))
    assert flipped.shape == x.shape


def test_one_hot_identity_policy_leaves_images_bit_identical():
    space = daa.search_space()
    logits = torch.full((3, len(space)), -1e9)
    logits[:, space.identity] = 0.0
    x = _images()
    assert torch.equal(daa.apply_policy(x, daa.Policy(space, logits), torch.Generator().manual_seed(0)), x)


def test_sampled_entry_frequencies_match_the_policy():
    space = daa.search_space()
    probs = torch.softmax(torch.randn(1, len(space), generator=torch.Generator().manual_seed(0)), 1)
    n = 200_000
    draws = daa.sample_entries(probs, n, torch.Generator().manual_seed(1))[0]
    observed = torch.bincount(draws, minlength=len(space)).numpy()
    assert chisquare(observed, probs[0].double().numpy() * n).pvalue > 1e-3
    skewed = probs[0].double().numpy().copy()
    skewed[:10] *= 1.5
    assert chisquare(observed, skewed / skewed.sum() * n).pvalue < 1e-6   # the test has power


def test_policy_validation_and_operation_mass():
    space = daa.search_space()
    with pytest.raises(ValueError, match="logits"):
        daa.Policy(space, torch.zeros(2, 5))
    policy = daa.uniform_policy(space, 2)
    mass = policy.operation_mass()
    assert mass.shape == (2, 18) and np.allclose(mass.sum(1), 1.0)
    assert np.isclose(mass[0, space.op_names.index("Rotate")], 12 / 139)


def test_randaugment_and_trivialaugment_are_batched_and_deterministic():
    x = _images(16)
    for fn in (daa.rand_augment, daa.trivial_augment_wide):
        a = fn(x, gen=torch.Generator().manual_seed(0))
        b = fn(x, gen=torch.Generator().manual_seed(0))
        assert torch.equal(a, b) and a.shape == x.shape and a.min() >= 0 and a.max() <= 1
        assert not torch.equal(a, x)


def _tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    model = daa.SmallResNet(width=2).double()
    for m in model.modules():            # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def test_the_exact_policy_derivative_equals_autograd():
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    J = 7
    augmented = torch.rand(J, 3, 8, 8, generator=g, dtype=torch.float64)
    val = torch.rand(5, 3, 8, 8, generator=g, dtype=torch.float64)
    params = dict(model.named_parameters())
    g_val = daa.flat_gradient(model, params, daa.per_sample_losses(model, params, val, torch.full((5,), 3)).mean())
    probs = torch.softmax(torch.randn(J, generator=g, dtype=torch.float64), 0)
    cos, scores = daa.matching_scores(model, augmented, 3, g_val, probs)
    # reference: every entry's gradient explicitly, then autograd through cos(g_val, sum_j p_j G_j)
    G = torch.stack([daa.flat_gradient(model, params, daa.per_sample_losses(model, params, augmented[j:j + 1],
                                                                           torch.tensor([3]))[0]) for j in range(J)])
    p = probs.clone().requires_grad_(True)
    g_aug = p @ G
    reference = torch.dot(g_val, g_aug) / (g_aug.norm() * g_val.norm())
    (grad_p,) = torch.autograd.grad(reference, p)
    assert abs(cos - reference.item()) < 1e-10
    assert torch.allclose(scores, grad_p, atol=1e-5, rtol=0)
    assert grad_p.abs().max() > 1e-3                          # the derivative is not trivially zero


def test_search_layer_moves_the_policy_and_refuses_a_training_mode_network():
    space = daa.search_space(["Identity", "Invert", "RandFlip"], levels=3)
    model = daa.SmallResNet(width=4).eval()
    x, y = _images(20, 16), torch.arange(20) % 2
    layer = daa.search_layer(model, daa.Policy(space), x, y, x, y, steps=3, samples_per_step=2, lr=0.5,
                             identity_logit=0.0)
    assert len(layer.history) == 3 and not torch.allclose(layer.logits, torch.zeros(3))
    with pytest.raises(ValueError, match="eval mode"):
        daa.search_layer(model.train(), daa.Policy(space), x, y, x, y, steps=1)
    policy, layers = daa.search_policy(model.eval(), space, x, y, x, y, max_layers=2, stop_identity=0.0, steps=1,
                                       samples_per_step=2)
    assert len(policy) == 0 and len(layers) == 1            # stopped at once: the layer counted as Identity


def test_policy_cosines_of_the_identity_layer_is_the_clean_gradient_cosine():
    space = daa.search_space(["Identity", "Invert", "RandFlip"], levels=3)
    model = daa.SmallResNet(width=4).eval()
    x, y = _images(12, 16), torch.arange(12) % 2
    identity = torch.tensor([1.0, 0.0, 0.0])
    got = daa.policy_cosines(model, daa.Policy(space), {"id": identity, "mix": torch.full((3,), 1 / 3)}, x, y, x, y,
                             samples=5, seed=3)
    picks = torch.randint(0, 12, (5,), generator=torch.Generator().manual_seed(3))
    params = dict(model.named_parameters())
    g_val = daa.class_gradients(model, x, y)
    want = np.mean([torch.nn.functional.cosine_similarity(
        daa.flat_gradient(model, params, daa.per_sample_losses(model, params, x[i:i + 1], y[i:i + 1])[0]),
        g_val[int(y[i])], dim=0).item() for i in picks])
    assert abs(got["id"] - want) < 1e-5 and got["mix"] != got["id"]


def test_training_learns_a_separable_task_and_accuracy_counts():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(200) % 2
    x = torch.rand(200, 3, 16, 16, generator=g) * 0.3
    x[y == 1, 0] += 0.6                                     # class 1 is red
    result = daa.train_classifier(x, y, augment=daa.crop_flip, epochs=4, width=4, batch_size=32, lr=0.05)
    assert daa.accuracy(result.model, x, y) > 0.9 and len(result.history) == 4
    with pytest.raises(ValueError, match="labels"):
        daa.train_classifier(x, y[:10])


def test_policy_derivative_exercise_check_accepts_the_solution_and_rejects_the_plain_gradient():
    from iclr_lib.exercises.deep_autoaugment import check_policy_derivative

    def solution(G, g_val, probs):
        g_aug = probs @ G
        t = g_val - torch.dot(g_val, g_aug) / g_aug.norm() ** 2 * g_aug
        return G @ t / (g_aug.norm() * g_val.norm())

    assert check_policy_derivative(solution)
    with pytest.raises(AssertionError, match="project"):   # forgetting the projection: G @ g_val / norms
        check_policy_derivative(lambda G, g_val, probs: G @ g_val / ((probs @ G).norm() * g_val.norm()))


def _one_hot_logits(J: int, j: int) -> torch.Tensor:
    logits = torch.full((J,), -torch.inf)
    logits[j] = 0.0
    return logits


def test_prefixed_scores_with_a_fixed_prefix_reduce_to_the_layer_one_scores():
    """With a deterministic earlier layer (Invert) every prefix is the same image, so the 16-prefix mean
    equals one prefix; with the searched layer one-hot on entry j, the whole-policy samples all give
    G_j, so the official g_aug equals sum_j p_j G_j at that p."""
    space = daa.search_space(["Identity", "Invert", "AutoContrast"], levels=3)     # deterministic entries
    model = _tiny_model()
    g = torch.Generator().manual_seed(2)
    image = torch.rand(3, 8, 8, generator=g, dtype=torch.float64)
    params = dict(model.named_parameters())
    val = torch.rand(4, 3, 8, 8, generator=g, dtype=torch.float64)
    g_val = daa.flat_gradient(model, params, daa.per_sample_losses(model, params, val, torch.full((4,), 1)).mean())
    earlier = daa.Policy(space, _one_hot_logits(3, space.labels.index("Invert")).view(1, -1))
    inverted = (1.0 - image).expand(3, -1, -1, -1)
    logits = torch.randn(3, generator=g, dtype=torch.float64)
    # entries: g_aug = mean over prefixes of sum_j p_j G_j; with identical prefixes that is matching_scores
    for prefixes in (1, 5):
        cos, scores = daa.prefixed_scores(model, image, 1, g_val, earlier, logits, prefixes=prefixes, gradient="entries",
                                          gen=torch.Generator().manual_seed(7))
        aug = daa.apply_entries(inverted, space, torch.arange(3))
        ref_cos, ref = daa.matching_scores(model, aug, 1, g_val, torch.softmax(logits, 0))
        assert abs(cos - ref_cos) < 1e-10 and torch.allclose(scores, ref, atol=1e-10), (prefixes, scores, ref)
    # policy samples: the searched layer one-hot on Invert -> every sample is Invert(Invert(x)) = x
    j = space.labels.index("Invert")
    cos, scores = daa.prefixed_scores(model, image, 1, g_val, earlier, _one_hot_logits(3, j).double(), prefixes=4,
                                      gradient="policy samples", gradient_samples=2, gen=torch.Generator().manual_seed(7))
    aug = daa.apply_entries(inverted, space, torch.arange(3))
    ref_cos, ref = daa.matching_scores(model, aug, 1, g_val, torch.nn.functional.one_hot(torch.tensor(j), 3).double())
    assert abs(cos - ref_cos) < 1e-10 and torch.allclose(scores, ref, atol=1e-10)
    assert scores.abs().max() > 1e-4
    with pytest.raises(ValueError, match="gradient"):
        daa.prefixed_scores(model, image, 1, g_val, earlier, logits, gradient="one")


def test_directional_derivatives_do_not_depend_on_the_chunk_size():
    model = _tiny_model()
    g = torch.Generator().manual_seed(4)
    images = torch.rand(7, 3, 8, 8, generator=g, dtype=torch.float64)
    tangent = torch.randn(sum(p.numel() for p in model.parameters()), generator=g, dtype=torch.float64)
    whole = daa.directional_derivatives(model, images, 2, tangent, chunk=7)
    assert torch.allclose(daa.directional_derivatives(model, images, 2, tangent, chunk=3), whole, atol=1e-12)
    params = dict(model.named_parameters())             # against autograd, image by image
    ref = torch.stack([torch.dot(daa.flat_gradient(model, params, daa.per_sample_losses(
        model, params, images[i:i + 1], torch.tensor([2]))[0]), tangent) for i in range(7)])
    assert torch.allclose(whole, ref, atol=1e-8)


def test_search_policy_keeps_every_layer_continues_from_a_start_and_overrides_layer_one():
    space = daa.search_space(["Identity", "Invert", "RandFlip"], levels=3)
    model = daa.SmallResNet(width=4).eval()
    x, y = _images(20, 16), torch.arange(20) % 2
    policy, layers = daa.search_policy(model, space, x, y, x, y, max_layers=2, stop_identity=None, steps=2,
                                       samples_per_step=2, prefixes=2, gradient_samples=1,
                                       first_layer=dict(steps=3))
    assert len(policy) == 2 and [len(l.history) for l in layers] == [3, 2]
    more, added = daa.search_policy(model, space, x, y, x, y, max_layers=3, start=policy, stop_identity=None, steps=1,
                                    samples_per_step=2, **daa.SINGLE_PREFIX)
    assert len(more) == 3 and len(added) == 1 and torch.equal(more.logits[:2], policy.logits)
    with pytest.raises(ValueError, match="prefixes"):
        daa.search_layer(model, policy, x, y, x, y, steps=1, samples_per_step=2, prefixes=0)
    with pytest.raises(ValueError, match="same search space"):
        daa.search_policy(model, space, x, y, x, y, start=daa.Policy(daa.search_space(["Identity", "Invert"], 3)))
    assert daa.OFFICIAL == {"prefixes": 16, "gradient": "policy samples", "gradient_samples": 4, "std_ddof": 0}


def test_the_baseline_pipelines_keep_shape_and_range_and_a_policy_augment_is_apply_policy():
    x = _images(6, 32)
    for fn in (daa.crop_flip_cutout, daa.randaugment_cifar(1, 3), daa.randaugment_cifar(3, 15), daa.trivialaugment_cifar):
        out = fn(x, torch.Generator().manual_seed(5))
        assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1 and not torch.equal(out, x)
    assert (daa.crop_flip_cutout(x, torch.Generator().manual_seed(1)) == daa.FILL).any()
    space = daa.search_space()
    policy = daa.uniform_policy(space, 2)
    assert torch.equal(daa.policy_augment(policy)(x, torch.Generator().manual_seed(3)),
                       daa.apply_policy(x, policy, torch.Generator().manual_seed(3)))


def test_policy_cosines_per_image_are_paired_and_average_to_the_summary():
    space = daa.search_space(["Identity", "Invert", "RandFlip"], levels=3)
    model = daa.SmallResNet(width=4).eval()
    x, y = _images(12, 16), torch.arange(12) % 2
    cands = {"id": torch.tensor([1.0, 0.0, 0.0]), "mix": torch.full((3,), 1 / 3)}
    mean = daa.policy_cosines(model, daa.Policy(space), cands, x, y, x, y, samples=4, seed=2)
    each = daa.policy_cosines(model, daa.Policy(space), cands, x, y, x, y, samples=4, seed=2, per_image=True)
    assert each["id"].shape == (4,) and all(abs(each[k].mean() - mean[k]) < 1e-12 for k in cands)
