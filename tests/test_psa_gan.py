"""Tests of iclr_lib.psa_gan: data windows, the progressive networks, losses, baselines and metrics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iclr_lib import psa_gan as pg


@pytest.fixture(scope="module")
def m4(mirror):
    return pg.load_m4_hourly()


def _sine_series(n: int = 12, length: int = 400, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(length)
    return [10 + 5 * np.sin(2 * np.pi * t / 24 + rng.uniform(0, 6)) + rng.normal(0, 0.3, length) for _ in range(n)]


def test_m4_hourly_has_414_series_with_the_test_horizon(m4):
    assert len(m4) == 414
    assert sorted({len(s) for s in m4}) == [748, 1008]
    assert all(np.isfinite(s).all() and s.min() > 0 for s in m4)


def test_split_by_series_is_disjoint_and_validated():
    train, held = pg.split_series(414, 84, seed=0)
    assert len(train) == 330 and len(held) == 84 and not set(train) & set(held)
    with pytest.raises(ValueError, match="n_held_out"):
        pg.split_series(10, 10)


def test_windows_are_min_max_scaled_with_time_features():
    sampler = pg.WindowSampler(_sine_series(), 64)
    x, t = sampler.sample(32, np.random.default_rng(0))
    assert x.shape == (32, 1, 64) and t.shape == (32, 4, 64)
    assert torch.allclose(x.amin(-1), torch.zeros(32, 1)) and torch.allclose(x.amax(-1), torch.ones(32, 1))
    # the daily features repeat every 24 steps
    assert torch.allclose(t[:, [0, 2], :24], t[:, [0, 2], 24:48], atol=1e-5)   # (sin, cos) of the daily phase
    assert np.allclose(pg.minmax_scale(np.full((2, 5), 3.0)), 0.5)
    with pytest.raises(ValueError, match="at least"):
        pg.WindowSampler([np.ones(10)], 64)


def test_self_attention_with_gamma_zero_is_the_identity():
    sa = pg.SelfAttention(16)
    x = torch.randn(3, 16, 32)
    assert torch.equal(sa(x), x)
    with torch.no_grad():
        sa.gamma.fill_(0.5)
    assert not torch.allclose(sa(x), x)


def test_self_attention_is_softmax_attention_with_the_official_sizes():
    sa = pg.SelfAttention(16)
    assert (sa.query.out_channels, sa.key.out_channels, sa.value.out_channels, sa.out.in_channels) == (1, 1, 1, 1)
    assert not any("parametrizations" in name for name, _ in sa.named_parameters())   # no spectral norm here
    with torch.no_grad():
        sa.gamma.fill_(0.7)
    wide = pg.SelfAttention(16, key_dim=4, value_dim=3)
    with torch.no_grad():
        wide.gamma.fill_(-0.3)
    x = torch.randn(3, 16, 20)
    for layer in (sa, wide):   # against the textbook formula with convolutions and bmm
        q, k, v = layer.query(x), layer.key(x), layer.value(x)
        weights = torch.softmax(q.transpose(1, 2) @ k / q.shape[1] ** 0.5, dim=-1)
        expected = x + layer.gamma * layer.out(v @ weights.transpose(1, 2))
        assert torch.allclose(layer(x), expected, atol=1e-5)
    with pytest.raises(ValueError, match="key_dim"):
        pg.SelfAttention(16, key_dim=0)


def test_pointwise_is_a_1x1_convolution_and_pooling_is_exact():
    for c_in, c_out, bias in ((16, 1, True), (1, 16, True), (5, 7, False)):
        conv = torch.nn.Conv1d(c_in, c_out, 1, bias=bias)
        x = torch.randn(4, c_in, 24)
        assert torch.allclose(pg.pointwise(conv, x), conv(x), atol=1e-5)
    t = torch.randn(3, 4, 64)
    for length in (8, 16, 64, 12):
        assert torch.allclose(pg._pool_to(t, length), torch.nn.functional.adaptive_avg_pool1d(t, length), atol=1e-6)


def test_spectrally_normalised_weights_have_unit_largest_singular_value():
    block = pg.MainBlock(8, 16)
    block.train()
    x = torch.randn(4, 8, 32)
    for _ in range(30):           # power iterations run in training-mode forward passes
        block(x)
    block.eval()
    weight = block.conv.weight.reshape(16, -1)
    assert torch.linalg.matrix_norm(weight, ord=2).item() == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_output_length_is_8_times_2_to_the_stage(depth):
    G = pg.Generator(depth, channels=8)
    D = pg.Discriminator(depth, channels=8)
    L = 8 * 2 ** depth
    z, t = torch.randn(2, 4, L), torch.randn(2, 4, L)
    for stage in range(depth + 1):
        out = G(z, t, stage)
        assert out.shape == (2, 1, 8 * 2 ** stage)
        assert D(out, t, stage).shape == (2,)
    with pytest.raises(ValueError, match="stage"):
        G(z, t, depth + 1)


def test_fade_alpha_zero_is_the_old_path_and_one_the_new():
    torch.manual_seed(0)
    G = pg.Generator(2, channels=8).eval()      # eval: spectral norm stops its power iterations
    z, t = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
    with torch.no_grad():
        old = torch.nn.functional.interpolate(G(z, t, stage=1), scale_factor=2, mode="nearest")
        assert torch.allclose(G(z, t, stage=2, alpha=0.0), old, atol=1e-6)
        assert torch.allclose(G(z, t, stage=2, alpha=1.0), G(z, t, stage=2))
        D = pg.Discriminator(2, channels=8).eval()
        x = torch.randn(2, 1, 32)
        # at alpha = 0 the discriminator sees only the pooled input through the previous stage's path
        assert torch.allclose(D(x, t, 2, alpha=0.0), D(torch.nn.functional.avg_pool1d(x, 2), t, 1), atol=1e-5)
    with pytest.raises(ValueError, match="alpha"):
        pg.fade(z, z, 1.5)


def test_lsgan_and_moment_losses():
    d_real, d_fake = torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0])
    loss_d, loss_g = pg.lsgan_losses(d_real, d_fake)
    assert loss_d.item() == 0.0 and loss_g.item() == pytest.approx(0.5)
    other = torch.tensor([0.2, 1.7, -0.4])
    assert pg.lsgan_generator_loss(other).item() == pg.lsgan_losses(other, other)[1].item() == pytest.approx(
        0.5 * ((other - 1) ** 2).mean().item())
    x = torch.rand(5, 1, 16)
    assert pg.moment_loss(x, x).item() == 0.0
    shifted = x + 0.3
    assert pg.moment_loss(shifted, x).item() == pytest.approx(0.3, abs=1e-6)   # same std, mean off by 0.3
    with pytest.raises(ValueError, match="shape"):
        pg.moment_loss(x, x[:, :, :8])


def test_schedule_grows_stages_and_fades_them_in():
    cfg = pg.GANConfig(length=64, iterations=400, fade_fraction=0.5)           # 4 stages of 100 steps
    assert pg.schedule(cfg, 0) == (0, 1.0)
    assert pg.schedule(cfg, 100) == (1, 0.0)
    assert pg.schedule(cfg, 150) == (1, 1.0)
    assert pg.schedule(cfg, 125)[1] == pytest.approx(0.5)
    assert pg.schedule(cfg, 399)[0] == 3
    flat = pg.GANConfig(length=64, iterations=400, progressive=False)
    assert pg.schedule(flat, 0) == (3, 1.0)
    with pytest.raises(ValueError, match="length"):
        pg.GANConfig(length=48)


def test_training_runs_and_the_averaged_generator_samples_full_windows():
    sampler = pg.WindowSampler(_sine_series(), 32)
    cfg = pg.GANConfig(length=32, iterations=40, batch_size=16, channels=8)
    result = pg.train_psagan(sampler, cfg)
    assert [h["stage"] for h in result.history] == [0, 1, 2]
    assert sorted(result.stage_samples) == [0, 1, 2] and result.stage_samples[1].shape == (4, 16)
    _, t = sampler.sample(10, np.random.default_rng(1))
    samples = pg.generate(result.generator, t)
    assert samples.shape == (10, 32) and np.isfinite(samples).all()
    again = pg.train_psagan(sampler, cfg)
    assert np.array_equal(samples, pg.generate(again.generator, t))       # deterministic for a seed
    assert result.last_generator is result.generator                     # nothing selected: the last step
    assert all(p.requires_grad for p in result.discriminator.parameters())   # frozen only inside the G step


def test_one_discriminator_pass_over_real_and_fake_equals_two():
    D = pg.Discriminator(2, channels=8).eval()   # no batch statistics: rows do not interact
    x, t = torch.rand(6, 1, 32), torch.randn(6, 4, 32)
    with torch.no_grad():
        both = D(x, t)
        assert torch.allclose(both[:3], D(x[:3], t[:3]), atol=1e-6) and torch.allclose(both[3:], D(x[3:], t[3:]), atol=1e-6)


def test_soft_min_max_output_scaling_as_the_official_local_scaling():
    x = torch.randn(5, 1, 64) * 30 + 7
    y = pg.soft_min_max_scale(x)
    # sharpness 100 on values spread over tens of units: min and max are (almost) exact
    assert torch.allclose(y.amin(-1), torch.zeros(5, 1), atol=1e-4)
    assert torch.allclose(y.amax(-1), torch.ones(5, 1), atol=1e-4)
    assert torch.allclose(y, (x - x.amin(-1, keepdim=True)) / (x.amax(-1, keepdim=True) - x.amin(-1, keepdim=True)),
                          atol=1e-4)
    assert torch.isfinite(pg.soft_min_max_scale(torch.ones(2, 1, 8))).all()          # constant series
    G = pg.Generator(2, channels=8, scaling="local").eval()
    z, t = torch.randn(3, 4, 32), torch.randn(3, 4, 32)
    with torch.no_grad():
        out = G(z, t)
        assert out.shape == (3, 1, 32) and out.amin() > -0.05 and out.amax() < 1.05
        # the fade-in path is scaled after fading, so alpha = 0 is still the upsampled old output
        old = torch.nn.functional.interpolate(G(z, t, stage=1), scale_factor=2, mode="nearest")
        assert torch.allclose(G(z, t, stage=2, alpha=0.0), old, atol=1e-5)
    with pytest.raises(ValueError, match="scaling"):
        pg.Generator(1, scaling="global")
    with pytest.raises(ValueError, match="scaling"):
        pg.GANConfig(length=16, scaling="minmax")
    sampler = pg.WindowSampler(_sine_series(), 16)
    result = pg.train_psagan(sampler, pg.GANConfig(length=16, iterations=6, batch_size=8, channels=8, scaling="local"))
    samples = pg.generate(result.generator, sampler.sample(4, np.random.default_rng(0))[1])
    assert samples.min() > -0.05 and samples.max() < 1.05


def test_checkpoint_selection_returns_the_lowest_scoring_final_stage_checkpoint():
    sampler = pg.WindowSampler(_sine_series(), 16)
    cfg = pg.GANConfig(length=16, iterations=40, batch_size=16, channels=8, fade_fraction=0.5)
    _, t = sampler.sample(6, np.random.default_rng(1))
    snapshots, scores = [], iter([3.0, 1.0, 2.0, 5.0, 4.0, 6.0])

    def selector(generator):
        assert not generator.training
        snapshots.append(pg.generate(generator, t))
        return next(scores)

    result = pg.train_psagan(sampler, cfg, selector=selector, select_every=4)
    # stage 1 covers steps 20-39 and is faded in after 10 of them: checkpoints at steps 32, 36, 40
    assert [r["iteration"] for r in result.selection] == [32, 36, 40]
    assert np.array_equal(pg.generate(result.generator, t), snapshots[1])     # score 1.0 was the best
    assert not np.array_equal(snapshots[1], snapshots[2])
    assert np.array_equal(pg.generate(result.last_generator, t), snapshots[2])  # the last step, kept too
    assert not result.last_generator.training
    with pytest.raises(ValueError, match="select_every"):
        pg.train_psagan(sampler, cfg, selector=selector, select_every=0)


def test_acf_selector_scores_a_generator_on_its_validation_windows():
    sampler = pg.WindowSampler(_sine_series(), 32)
    real, t = sampler.sample(64, np.random.default_rng(1))
    selector = pg.ACFSelector(real[:, 0].numpy(), t, max_lag=12, seed=3)
    G = pg.Generator(2, channels=8, scaling="local").eval()
    expected = pg.acf_distance(real[:, 0].numpy(), pg.generate(G, t, seed=3), 12)
    assert selector(G) == pytest.approx(expected)
    with pytest.raises(ValueError, match="max_lag"):
        pg.ACFSelector(real[:, 0].numpy(), t, max_lag=32)
    with pytest.raises(ValueError, match="real must be"):
        pg.ACFSelector(real[:10, 0].numpy(), t)


def test_train_many_in_worker_processes_gives_the_one_thread_results():
    sampler = pg.WindowSampler(_sine_series(), 16)
    real, t = sampler.sample(40, np.random.default_rng(1))
    selector = pg.ACFSelector(real[:, 0].numpy(), t, max_lag=6)
    configs = [pg.GANConfig(length=16, iterations=12, batch_size=8, channels=4, seed=s, scaling="local",
                            attention=a) for s, a in ((0, True), (1, False))]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        here = pg.train_many(sampler, configs, selector, select_every=2, workers=1)
    finally:
        torch.set_num_threads(threads)
    there = pg.train_many(sampler, configs, selector, select_every=2, workers=2)
    for a, b in zip(here, there):
        assert a.config == b.config and a.selection == b.selection
        for ga, gb in ((a.generator, b.generator), (a.last_generator, b.last_generator)):
            assert not gb.training
            assert np.allclose(pg.generate(ga, t), pg.generate(gb, t), atol=1e-5)
    with pytest.raises(ValueError, match="workers"):
        pg.train_many(sampler, configs, workers=0)


def test_the_moment_loss_pulls_the_mean_and_spread_towards_the_data():
    torch.manual_seed(0)
    sampler = pg.WindowSampler(_sine_series(), 16)
    real, t = sampler.sample(64, np.random.default_rng(1))
    G = pg.Generator(1, channels=8)
    z = torch.randn(64, 4, 16)

    def gap() -> float:
        with torch.no_grad():
            return pg.moment_loss(G(z, t), real).item()

    before = gap()
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    for _ in range(60):
        loss = pg.moment_loss(G(z, t), real)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert gap() < 0.3 * before


def test_ar1_fit_recovers_its_parameters():
    paths = pg.sample_ar1(0.2, 0.7, 0.1, np.full(400, 0.66), 200, seed=0)
    c, phi, sigma = pg.fit_ar1(paths)
    assert c == pytest.approx(0.2, abs=0.01) and phi == pytest.approx(0.7, abs=0.01) and sigma == pytest.approx(0.1, abs=0.005)


def test_seasonal_ar_fit_recovers_its_coefficients_seeded_and_synthetic():
    coef = np.array([0.05, 0.5, -0.1, 0.35, -0.05])                 # intercept, lags 1, 2, 24, 25
    paths = pg.sample_seasonal_ar(coef, 0.05, 300, n=300, seed=0)
    assert paths.shape == (300, 300) and np.isfinite(paths).all()
    fitted, sigma = pg.fit_seasonal_ar(paths)
    assert np.allclose(fitted, coef, atol=0.01) and sigma == pytest.approx(0.05, abs=0.002)
    # fully synthetic paths start after the burn-in, near the process mean c / (1 - sum of the weights)
    assert paths.mean() == pytest.approx(0.05 / (1 - 0.7), abs=0.01)
    start = np.random.default_rng(1).random((4, 25))
    seeded = pg.sample_seasonal_ar(coef, 0.05, 64, start=start, seed=1)
    assert seeded.shape == (4, 64) and np.allclose(seeded[:, :25], start, atol=1e-6)
    step = coef[0] + coef[1] * start[:, 24] + coef[2] * start[:, 23] + coef[3] * start[:, 1] + coef[4] * start[:, 0]
    assert np.abs(seeded[:, 25] - step).max() < 0.05 * 5                  # one noisy step from the real values
    with pytest.raises(ValueError, match="too short"):
        pg.fit_seasonal_ar(paths[:, :20])
    with pytest.raises(ValueError, match="n"):
        pg.sample_seasonal_ar(coef, 0.05, 64)
    with pytest.raises(ValueError, match="start"):
        pg.sample_seasonal_ar(coef, 0.05, 64, start=start[:, :10])


def test_paired_context_fid_scores_batch_by_batch():
    sampler = pg.WindowSampler(_sine_series(20), 32)
    rng = np.random.default_rng(0)
    enc = pg.train_ts2vec_encoder(sampler.sample(256, rng)[0].squeeze(1).numpy(), steps=20, batch_size=64)
    real = sampler.sample(400, rng)[0].squeeze(1).numpy()
    other = sampler.sample(400, rng)[0].squeeze(1).numpy()
    same = pg.paired_context_fid(enc, real, real, n_batches=4)
    assert same.shape == (4,) and np.allclose(same, 0.0, atol=1e-6)
    scores = pg.paired_context_fid(enc, real, other, n_batches=4)
    embedded_real, embedded_other = pg.embed_windows(enc, real), pg.embed_windows(enc, other)
    assert scores[2] == pytest.approx(pg.frechet_distance(embedded_real[200:300], embedded_other[200:300]), rel=1e-9)
    noise = pg.paired_context_fid(enc, real, pg.sample_noise(400, 32), n_batches=4)
    assert noise.mean() > scores.mean()
    with pytest.raises(ValueError, match="paired"):
        pg.paired_context_fid(enc, real, other[:300])
    with pytest.raises(ValueError, match="dimensions"):
        pg.paired_context_fid(enc, real, other, n_batches=20)          # 20 per batch < 32 dimensions


def test_frechet_distance_zero_on_identical_sets_and_the_1d_closed_form():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 3))
    assert pg.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)
    x, y = rng.normal(1.0, 2.0, (4000, 1)), rng.normal(-0.5, 0.5, (4000, 1))
    m1, m2, s1, s2 = x.mean(), y.mean(), x.std(ddof=1), y.std(ddof=1)
    assert pg.frechet_distance(x, y) == pytest.approx((m1 - m2) ** 2 + (s1 - s2) ** 2, rel=1e-6)
    with pytest.raises(ValueError, match="d"):
        pg.frechet_distance(a, a[:, :2])


def test_autocorrelation_and_acf_distance():
    t = np.arange(96)
    sine = np.stack([np.sin(2 * np.pi * (t + s) / 24) for s in range(20)])
    acf = pg.autocorrelation(sine, 24)
    assert acf[23] > 0.7 and acf[11] < -0.7             # one period later similar, half a period opposite
    assert pg.acf_distance(sine, sine) == 0.0
    assert pg.acf_distance(sine, np.random.default_rng(0).random((20, 96))) > 0.3


def test_frechet_distance_matches_scipy_and_does_not_depend_on_its_sqrtm(monkeypatch):
    """Regression: the old code called ``sqrtm(..., disp=False)``, which fails for 1x1 input on scipy 1.17
    and is a TypeError on 1.18 (``disp`` removed). The distance must agree with scipy's matrix root
    and must not call it."""
    from scipy import linalg

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(200, 5)), rng.normal(0.3, 1.5, size=(150, 5)) @ rng.normal(size=(5, 5))
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    reference = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb)
                 - 2 * np.trace(linalg.sqrtm(ca @ cb)).real)

    def sqrtm_without_disp(A):                                  # scipy 1.18's signature
        raise AssertionError("frechet_distance must not depend on scipy.linalg.sqrtm")

    monkeypatch.setattr(linalg, "sqrtm", sqrtm_without_disp)
    assert pg.frechet_distance(a, b) == pytest.approx(reference, rel=1e-9)
    x, y = rng.normal(size=(50, 1)), rng.normal(2.0, 3.0, size=(60, 1))   # 1x1 covariances
    closed = (x.mean() - y.mean()) ** 2 + (np.std(x, ddof=1) - np.std(y, ddof=1)) ** 2
    assert pg.frechet_distance(x, y) == pytest.approx(closed, rel=1e-9)


def test_context_fid_encoder_separates_shuffled_windows():
    sampler = pg.WindowSampler(_sine_series(20), 32)
    rng = np.random.default_rng(0)
    train = sampler.sample(512, rng)[0].squeeze(1).numpy()
    real_a, real_b = (sampler.sample(256, rng)[0].squeeze(1).numpy() for _ in range(2))
    enc = pg.train_ts2vec_encoder(train, steps=60, batch_size=64)
    shuffled = np.stack([rng.permutation(w) for w in real_b])
    assert pg.context_fid(enc, real_a, real_b) < pg.context_fid(enc, real_a, shuffled)
    assert pg.embed_windows(enc, real_a).shape == (256, 32)


def test_discriminative_score_and_forecast_error():
    sampler = pg.WindowSampler(_sine_series(20), 32)
    rng = np.random.default_rng(0)
    real = sampler.sample(400, rng)[0].squeeze(1).numpy()
    other = sampler.sample(400, rng)[0].squeeze(1).numpy()
    noise = pg.sample_noise(400, 32)
    assert pg.discriminative_score(real, noise, epochs=10) > 0.4
    assert pg.discriminative_score(real, other, epochs=10) < 0.15
    # the same shapes in a narrower range are not told apart by their range alone
    assert pg.discriminative_score(real, 0.2 + 0.6 * other, epochs=10) < 0.15
    on_real = pg.forecast_error(real, other, horizon=8, epochs=20)
    on_noise = pg.forecast_error(noise, other, horizon=8, epochs=20)
    assert on_real < on_noise
    with pytest.raises(ValueError, match="horizon"):
        pg.forecast_error(real, other, horizon=32)


def test_moment_loss_exercise_check_accepts_the_solution_and_rejects_a_wrong_one():
    from iclr_lib.exercises.psa_gan import check_moment_loss

    assert check_moment_loss(pg.moment_loss)
    with pytest.raises(AssertionError, match="pair window"):   # batch-level moments instead of per-window ones
        check_moment_loss(lambda f, r: (f.std() - r.std()).abs() + (f.mean() - r.mean()).abs())
