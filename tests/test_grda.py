"""Unit tests for iclr_lib.grda: the data (official files, generator, TPT-48), the safe unpickler, the
graph-discriminator loss, the min-max update, and the paper's theory in its exact discrete form."""
from __future__ import annotations

import math
import os
import pickle

import numpy as np
import pytest
import torch

from iclr_lib import grda


@pytest.fixture(scope="module")
def dg15(tmp_path_factory):
    if not os.environ.get("ICLR_LIB_DATA_MIRROR"):
        pytest.skip("no offline mirror")
    os.environ.setdefault("ICLR_LIB_DATA", str(tmp_path_factory.mktemp("cache")))
    return grda.load_dg("dg15")


# ----------------------------------------------------------------------------- data
def test_dg15_has_the_published_statistics(dg15):
    assert dg15.X.shape == (15, 100, 2) and dg15.y.shape == (15, 100)
    assert int(dg15.A.sum()) // 2 == 56
    assert (dg15.y.sum(1) == 50).all()                                  # 50 / 50 in every domain
    assert sorted(dg15.source_domains.tolist()) == [0, 3, 4, 8, 12, 14]
    assert np.allclose(dg15.X.reshape(-1, 2).mean(0), 0, atol=1e-5)     # z-scored as the official code does
    assert dg15.node_embedding.shape == (15, 2)


def test_dg60_has_the_published_statistics(dg15):
    dg60 = grda.load_dg("dg60")
    assert dg60.X.shape == (60, 100, 2) and int(dg60.A.sum()) // 2 == 545
    assert sorted(dg60.source_domains.tolist()) == [2, 14, 23, 33, 41, 59]


def test_dg_class_centres_lie_on_the_spiral(dg15):
    raw = grda.load_dg("dg15", standardize=False)
    for u in range(15):
        direction = np.array([np.cos(raw.angle[u]), np.sin(raw.angle[u])])
        centre0 = raw.X[u][raw.y[u] == 0].mean(0)
        assert centre0 @ direction > 0.8 * (1 + 0.58 * raw.angle[u]) - 0.3      # class 0 at +r_u (cos, sin)
        assert raw.X[u][raw.y[u] == 1].mean(0) @ direction < 0


def test_official_pickle_equals_the_npz_and_loads_with_the_safe_unpickler(dg15):
    from iclr_lib.data import fetch

    root = fetch("grda_dg", ["toy_d15_spiral_tight_boundary.pkl", "g_encode_15.pkl"], verbose=False)
    raw = grda.load_numpy_pickle(root / "toy_d15_spiral_tight_boundary.pkl")
    assert np.array_equal(raw["A"].astype(int), dg15.A)
    enc = grda.load_numpy_pickle(root / "g_encode_15.pkl")
    assert np.allclose(np.stack([enc[str(u)] for u in range(15)]), dg15.node_embedding)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_the_safe_unpickler_refuses_anything_but_numpy(tmp_path):
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"data": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        grda.load_numpy_pickle(path)
    ok = tmp_path / "ok.pkl"
    ok.write_bytes(pickle.dumps({"a": np.arange(3.0)}))
    assert np.array_equal(grda.load_numpy_pickle(ok)["a"], np.arange(3.0))


def test_generator_matches_the_official_statistics_and_is_deterministic(dg15):
    gen = grda.make_dg(15, seed=3)
    assert gen.X.shape == dg15.X.shape and (gen.y.sum(1) == 50).all()
    assert np.array_equal(gen.X, grda.make_dg(15, seed=3).X)
    edges = [int(grda.make_dg(15, seed=s).A.sum()) // 2 for s in range(20)]
    assert 40 <= np.mean(edges) <= 72                     # the official draw has 56
    raw = grda.make_dg(15, seed=3, standardize=False)
    offsets = raw.X[:, :50] - (1 + 0.58 * raw.angle)[:, None, None] * np.stack(
        [np.cos(raw.angle), np.sin(raw.angle)], 1)[:, None, :]
    assert (np.linalg.norm(offsets, axis=-1) <= 1 + 1e-9).all()    # truncated to the unit disc


def test_tpt48_split_reproduces_the_papers_hop_counts(tmp_path, monkeypatch):
    if not os.environ.get("ICLR_LIB_DATA_MIRROR"):
        pytest.skip("no offline mirror")
    monkeypatch.setenv("ICLR_LIB_DATA", str(tmp_path))
    data = grda.load_tpt48()
    assert data.X.shape == (48, 133, 6) and data.y.shape == (48, 133, 6) and data.task == "regression"
    hops = data.hops_from_sources()
    assert [int((hops == h).sum()) for h in (1, 2)] == [10, 6] and int((hops >= 3).sum()) == 8
    assert data.eval_mask.sum(1).tolist() == [12] * 48
    assert np.allclose(data.X[0, 1, :5], data.X[0, 0, 1:])               # sliding windows


def test_data_validation_names_the_problem():
    A = np.array([[0, 1], [0, 0]])
    with pytest.raises(ValueError, match="symmetric"):
        grda.DomainGraphData("x", np.zeros((2, 3, 2), np.float32), np.zeros((2, 3), int), A, np.array([0]))
    with pytest.raises(ValueError, match="source_domains"):
        grda.DomainGraphData("x", np.zeros((2, 3, 2), np.float32), np.zeros((2, 3), int), A + A.T, np.array([5]))


# ----------------------------------------------------------------------------- losses and sampling
def _two_cliques(n: int = 6) -> np.ndarray:
    A = np.zeros((n, n), dtype=int)
    A[: n // 2, : n // 2] = 1
    A[n // 2:, n // 2:] = 1
    np.fill_diagonal(A, 0)
    return A


def test_graph_discriminator_loss_is_small_when_z_hat_reconstructs_A_and_large_when_A_is_permuted():
    A = _two_cliques(6)
    side = torch.tensor([1.0, 1, 1, -1, -1, -1])
    z_hat = torch.zeros(6, 4, 2)
    z_hat[..., 0] = 5 * side[:, None]                      # dot products +25 inside a clique, -25 across
    domains = np.arange(6)
    good = grda.graph_discriminator_loss(z_hat, domains, A)
    assert good < 1e-6
    permuted = A[np.ix_([0, 3, 1, 4, 2, 5], [0, 3, 1, 4, 2, 5])]
    assert grda.graph_discriminator_loss(z_hat, domains, permuted) > 10
    # at z_hat = 0 every pair scores log 2; the loss is N log 2 (the official "D = 15 ln 2" plateau)
    zero = grda.graph_discriminator_loss(torch.zeros(6, 4, 2), domains, A)
    assert torch.isclose(zero, torch.tensor(6 * np.log(2), dtype=zero.dtype))


def test_sample_domains_gives_distinct_domains_and_walks_along_edges(dg15):
    rng = np.random.default_rng(0)
    connected_pairs = []
    for _ in range(200):
        s = grda.sample_domains(dg15.A, 10, rng)
        assert len(set(s.tolist())) == 10
        connected_pairs.append(sum(dg15.A[a, b] for a, b in zip(s[:-1], s[1:])))
    # random walks make consecutive picks neighbours far more often than chance (56 / 105)
    assert np.mean(connected_pairs) / 9 > 56 / 105 + 0.1
    with pytest.raises(ValueError, match="k must be"):
        grda.sample_domains(dg15.A, 16, rng)


def test_node_embedding_pretraining_lowers_the_reconstruction_loss(dg15):
    A_t = torch.as_tensor(dg15.A, dtype=torch.float32)
    Z = grda.pretrain_node_embeddings(dg15.A, steps=500, seed=0)
    random = torch.randn(15, 2, generator=torch.Generator().manual_seed(0))
    assert grda.graph_reconstruction_loss(torch.as_tensor(Z), A_t) < 0.8 * grda.graph_reconstruction_loss(random, A_t)


def test_networks_have_the_official_shapes_and_initialisation():
    enc = grda.init_official(grda.Encoder(2, 2, 16))
    out = enc(torch.zeros(3, 5, 2), torch.zeros(3, 5, 2))
    assert out.shape == (3, 5, 16)
    assert grda.GraphDiscriminator(16)(out).shape == (3, 5, 2)
    assert grda.DomainClassifier(16, 7)(out).shape == (3, 5, 7)
    weights = torch.cat([m.weight.flatten() for m in enc.modules() if isinstance(m, torch.nn.Linear)])
    assert abs(weights.std().item() - 0.01) < 0.002
    assert sum(isinstance(m, torch.nn.Linear) for m in grda.GraphDiscriminator(16).modules()) == 6


def test_the_official_joint_backward_freezes_D_at_lambda_one():
    torch.manual_seed(0)
    e = torch.randn(6, 4, 8, requires_grad=True)
    disc = grda.GraphDiscriminator(8)
    A = _two_cliques(6)
    loss_d = grda.graph_discriminator_loss(disc(e), np.arange(6), A)
    loss_f = e.pow(2).mean()
    params = list(disc.parameters())
    frozen = grda.joint_backward_discriminator_gradient(loss_d, loss_f, 1.0, params)
    assert all(g.abs().max() < 1e-7 for g in frozen)
    half = grda.joint_backward_discriminator_gradient(loss_d, loss_f, 0.5, params)
    direct = torch.autograd.grad(loss_d, params, retain_graph=True)
    assert all(torch.allclose(h, 0.5 * d, atol=1e-7) for h, d in zip(half, direct))


def _tiny(method: str, epochs: int = 3) -> grda.TrainResult:
    data = grda.make_dg(6, seed=0, points_per_class=10, source_domains=[0, 1, 2])
    z = grda.pretrain_node_embeddings(data.A, steps=100)
    cfg = grda.TrainConfig(method=method, nh=8, epochs=epochs, batch_size=5, sample_domains=4, eval_every=1,
                           lr_e=1e-3, lr_d=1e-3)
    return grda.train_domain_adaptation(data, cfg, node_embedding=z)


def test_our_update_trains_D_at_lambda_one():
    torch.manual_seed(0)
    data = grda.make_dg(6, seed=0, points_per_class=10, source_domains=[0, 1, 2])
    z = grda.pretrain_node_embeddings(data.A, steps=100)
    cfg = grda.TrainConfig(method="grda", nh=8, epochs=2, batch_size=5, sample_domains=4, lam=1.0)
    torch.manual_seed(cfg.seed)
    before = [p.clone() for p in grda.init_official(grda.GraphDiscriminator(8)).parameters()]
    result = grda.train_domain_adaptation(data, cfg, node_embedding=z)
    after = list(result.models["discriminator"].parameters())
    assert len(before) == len(after)
    assert max((a - b).abs().max().item() for a, b in zip(after, before)) > 1e-5


@pytest.mark.parametrize("method", grda.METHODS)
def test_training_runs_and_reports_per_domain_metrics(method):
    result = _tiny(method)
    assert result.per_domain.shape == (6,) and 0 <= result.target <= 100
    assert len(result.history) == 3 and result.encodings.shape == (6, 20, 8)
    assert (result.models["discriminator"] is None) == (method == "source_only")


def test_source_only_learns_the_sources():
    data = grda.make_dg(6, seed=1, points_per_class=20, source_domains=[0, 1, 2])
    cfg = grda.TrainConfig(method="source_only", nh=32, epochs=60, batch_size=10, lr_e=1e-3, init_std=None)
    result = grda.train_domain_adaptation(data, cfg, node_embedding=grda.pretrain_node_embeddings(data.A, steps=200))
    assert result.per_domain[data.source_domains].min() >= 95


def test_training_is_deterministic_for_a_seed():
    a, b = _tiny("grda"), _tiny("grda")
    assert np.array_equal(a.per_domain, b.per_domain)


def test_bad_configs_are_rejected_with_the_argument_named():
    with pytest.raises(ValueError, match="method"):
        grda.TrainConfig(method="gan")
    with pytest.raises(ValueError, match="lam"):
        grda.TrainConfig(lam=-1)
    data = grda.make_dg(4, seed=0, points_per_class=5)
    with pytest.raises(ValueError, match="node_embedding"):
        grda.train_domain_adaptation(data, grda.TrainConfig(epochs=1, nh=4, batch_size=5))
    with pytest.raises(ValueError, match="sample_domains"):
        grda.train_domain_adaptation(data, grda.TrainConfig(epochs=1, nh=4, batch_size=5, sample_domains=9),
                                     node_embedding=np.zeros((4, 2)))


# ----------------------------------------------------------------------------- the theory
def test_encoder_objective_is_bounded_by_the_binary_entropy_of_alpha_bar():
    g = torch.Generator().manual_seed(0)
    A = torch.as_tensor(_two_cliques(6), dtype=torch.float64)
    prior = torch.full((6,), 1 / 6, dtype=torch.float64)
    bound = grda.entropy_bound(prior, A)
    for _ in range(50):
        p = torch.rand(6, 5, generator=g, dtype=torch.float64).softmax(1)
        alpha, _ = grda.pair_alignment(p, prior, A)
        value = grda.encoder_objective(p, prior, A)
        assert value <= bound + 1e-12
        assert alpha.max() - alpha.min() > 1e-3 and value < bound - 1e-6      # strict when alpha varies
    same = torch.full((6, 5), 0.2, dtype=torch.float64)                       # an encoder that ignores u
    assert torch.isclose(grda.encoder_objective(same, prior, A), bound)


def test_equilibria_clique_chain_and_star():
    clique = np.ones((4, 4), dtype=int) - np.eye(4, dtype=int)
    p = grda.equilibrium_encoder(clique, n_codes=5, steps=3000, seed=1)
    assert np.abs(p - p.mean(0)).max() < 0.02                       # every domain gets the same p(e|u): DANN
    chain = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    p = grda.equilibrium_encoder(chain, n_codes=5, steps=3000, seed=1)
    assert np.abs(p[1] - (p[0] + p[2]) / 2).max() < 0.02            # the middle is the average of the ends
    assert np.abs(p[0] - p[2]).max() > 0.1                          # the ends need not align
    star = np.zeros((4, 4), dtype=int)
    star[0, 1:] = star[1:, 0] = 1
    p = grda.equilibrium_encoder(star, n_codes=5, steps=3000, seed=1)
    assert np.abs(p[0] - p[1:].mean(0)).max() < 0.02                # the centre is the average of the leaves


def test_exercise_self_check_accepts_the_reference_and_rejects_an_unbalanced_loss():
    from iclr_lib.exercises.grda import check_graph_discriminator_loss

    assert check_graph_discriminator_loss(grda.graph_discriminator_loss)

    def unbalanced(z_hat, domains, A):
        idx = torch.as_tensor(np.asarray(domains))
        iu, ju = torch.triu_indices(len(idx), len(idx), 1)
        logits = (z_hat[idx[iu]] * z_hat[idx[ju]]).sum(-1)
        labels = torch.as_tensor(np.asarray(A), dtype=logits.dtype)[idx[iu], idx[ju]][:, None].expand_as(logits)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) * z_hat.shape[0]

    with pytest.raises(AssertionError, match="separately"):
        check_graph_discriminator_loss(unbalanced)


def test_readers_without_the_npz_conversions_rebuild_them_from_the_official_files(monkeypatch, tmp_path):
    """Online readers have no npz (the conversions exist only in the mirror): the loaders fall back to
    the original pickles (read with the safe unpickler) and text files, and get identical arrays."""
    if not os.environ.get("ICLR_LIB_DATA_MIRROR"):
        pytest.skip("no offline mirror")
    import iclr_lib.data as data_module
    from iclr_lib.data import DataUnavailableError

    monkeypatch.setenv("ICLR_LIB_DATA", str(tmp_path))
    from_npz = grda.load_dg("dg15"), grda.load_tpt48()
    real_fetch = data_module.fetch

    def fetch_without_npz(dataset, files=None, **kwargs):
        if files and any(str(f).endswith(".npz") for f in files):
            raise DataUnavailableError(f"{dataset}: npz conversions are mirror-only")
        return real_fetch(dataset, files, **kwargs)

    monkeypatch.setattr(data_module, "fetch", fetch_without_npz)
    rebuilt = grda.load_dg("dg15"), grda.load_tpt48()
    for a, b in zip(from_npz, rebuilt):
        for name in ("X", "y", "A", "source_domains", "eval_mask"):
            assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert a.names == b.names
    assert np.allclose(from_npz[0].node_embedding, rebuilt[0].node_embedding)
    assert np.allclose(from_npz[1].positions, rebuilt[1].positions)


# ----------------------------------------------------------------------------- the paper-time configuration
def test_paper_time_config_is_the_official_one_of_commit_dafc621():
    cfg = grda.paper_time_config("grda")
    assert grda.PAPER_TIME_COMMIT == "dafc621"
    assert (cfg.nh, cfg.epochs, cfg.batch_size, cfg.lr_e, cfg.lr_d, cfg.lr_g, cfg.lam, cfg.sample_domains) == \
        (512, 500, 10, 3e-5, 3e-5, 1e-4, 0.5, 10)
    assert (cfg.update, cfg.embedding, cfg.prediction_loss, cfg.paired_batches, cfg.init_std) == \
        ("joint", "learned", "official", True, 0.01)
    cfg60 = grda.paper_time_config("dann", "dg60", nh=64, seed=2)
    assert (cfg60.lr_e, cfg60.lr_g, cfg60.sample_domains, cfg60.nh, cfg60.seed) == (1e-5, 3e-4, 30, 64, 2)
    with pytest.raises(ValueError, match="dataset"):
        grda.paper_time_config("grda", "tpt48")
    with pytest.raises(ValueError, match="update"):
        grda.TrainConfig(update="both")
    with pytest.raises(ValueError, match="embedding"):
        grda.TrainConfig(embedding="random")


def test_official_nll_loss_is_the_cross_entropy_capped_at_log_1e4():
    logits = torch.tensor([[2.0, -1.0], [0.3, 0.1], [-30.0, 30.0]])
    labels = torch.tensor([0, 1, 0])
    per_point = [grda.official_nll_loss(logits[i:i + 1], labels[i:i + 1]).item() for i in range(3)]
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    assert per_point[0] == pytest.approx(ce[0].item(), abs=1e-3) and per_point[1] == pytest.approx(ce[1].item(), abs=1e-3)
    assert ce[2].item() > 59 and per_point[2] == pytest.approx(-math.log(1e-4), abs=1e-3)


def test_paired_batches_visit_the_same_index_in_every_domain():
    rng = np.random.default_rng(0)
    paired = grda.epoch_order(5, 12, True, rng)
    assert paired.shape == (5, 12) and (paired == paired[0]).all() and sorted(paired[0]) == list(range(12))
    unpaired = grda.epoch_order(5, 12, False, rng)
    assert all(sorted(row) == list(range(12)) for row in unpaired) and not (unpaired == unpaired[0]).all()


def _paper_time_tiny(method: str, **overrides) -> grda.TrainResult:
    data = grda.make_dg(6, seed=0, points_per_class=10, source_domains=[0, 1, 2])
    cfg = grda.paper_time_config(method, **{**dict(nh=8, epochs=3, batch_size=5, sample_domains=4, eval_every=1,
                                                    lr_e=1e-3, lr_d=1e-3, lr_g=1e-3), **overrides})
    return grda.train_domain_adaptation(data, cfg)


def test_joint_update_freezes_D_at_lambda_one_and_trains_it_below():
    # D with PyTorch's default init: the official N(0, 0.01) init starts it at a saddle where it hardly moves
    for lam, moves in ((1.0, False), (0.5, True)):
        result = _paper_time_tiny("grda", lam=lam, disc_init_std=None)
        torch.manual_seed(0)   # rebuild D's start: the networks are built as E, F, embeddings, D from the seed
        grda.init_official(grda.Encoder(2, 2, 8)), grda.init_official(grda.Predictor(8, 2))
        grda.init_official(grda.EmbeddingNet(6, 8, 2))
        before = [p.clone() for p in grda.GraphDiscriminator(8).parameters()]
        change = max((a - b).abs().max().item() for a, b in zip(result.models["discriminator"].parameters(), before))
        assert (change == 0.0) != moves and (not moves or change > 1e-5), (lam, change)


def test_learned_embeddings_are_trained_and_returned():
    result = _paper_time_tiny("source_only", epochs=20)
    gnet = result.models["embedding"]
    assert isinstance(gnet, grda.EmbeddingNet) and result.embedding.shape == (6, 2)
    with torch.no_grad():
        assert np.allclose(gnet().numpy(), result.embedding)
    assert np.abs(result.embedding).max() > 0.05          # moved away from the N(0, 0.01) start near 0
    fixed = _tiny("source_only")
    assert fixed.models["embedding"] is None and fixed.embedding.shape == (6, 2)


def test_dann_relu_logits_are_never_negative():
    out = grda.DomainClassifier(8, 5, relu_logits=True)(torch.randn(3, 4, 8))
    assert out.shape == (3, 4, 5) and (out >= 0).all()
    assert (grda.DomainClassifier(8, 5)(torch.randn(50, 8)) < 0).any()


def test_train_many_in_workers_gives_the_one_process_results():
    data = grda.make_dg(6, seed=0, points_per_class=10, source_domains=[0, 1, 2])
    cfgs = [grda.paper_time_config(m, nh=8, epochs=2, batch_size=5, sample_domains=4, seed=s)
            for m in ("grda", "dann") for s in (0, 1)]
    torch.set_num_threads(1)
    here = grda.train_many(data, cfgs, workers=1)
    there = grda.train_many(data, cfgs, workers=2)
    for a, b in zip(here, there):
        assert a.config == b.config and np.allclose(a.per_domain, b.per_domain)
        assert np.allclose(a.encodings, b.encodings, atol=1e-5)
    with pytest.raises(ValueError, match="workers"):
        grda.train_many(data, cfgs, workers=0)


def test_head_config_changes_only_the_three_later_settings():
    head, paper = grda.head_config("grda", nh=16), grda.paper_time_config("grda", nh=16)
    changed = {k for k in grda.TrainConfig.__dataclass_fields__ if getattr(head, k) != getattr(paper, k)}
    assert changed == {"lr_e", "lr_d", "lam", "embedding"} and (head.lr_e, head.lam) == (1e-4, 1.0)
