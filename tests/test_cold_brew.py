"""Unit tests of iclr_lib.cold_brew: closed forms, brute-force equalities and PyG references."""
from __future__ import annotations

import pytest
import torch

from iclr_lib import cold_brew as cb
from iclr_lib.exercises.cold_brew import check_virtual_neighbours


def ring_with_chords(n: int = 12) -> torch.Tensor:
    """A small undirected graph (both directions listed) with varied degrees."""
    pairs = [(i, (i + 1) % n) for i in range(n)] + [(0, 5), (0, 7), (0, 3), (2, 9), (4, 8)]
    src = [a for a, b in pairs] + [b for a, b in pairs]
    dst = [b for a, b in pairs] + [a for a, b in pairs]
    return torch.tensor([src, dst])


def dense_adjacency(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n)
    a[edge_index[1], edge_index[0]] = 1.0
    a.fill_diagonal_(0.0)
    return a


# ----------------------------------------------------------------------------- FCR
def test_fcr_matches_the_papers_examples():
    assert cb.feature_contribution_ratio(86.96, 69.02, 78.18) == pytest.approx(32.86, abs=0.01)
    assert cb.feature_contribution_ratio(61.08, 83.33, 52.08) == pytest.approx(171.2, abs=0.05)


def test_fcr_branches_and_edges():
    assert cb.feature_contribution_ratio(80.0, 80.0, 60.0) == pytest.approx(100.0)  # MLP = GNN
    assert cb.feature_contribution_ratio(80.0, 60.0, 80.0) == pytest.approx(0.0)    # LP = GNN
    assert cb.feature_contribution_ratio(80.0, 90.0, 80.0) == pytest.approx(200.0)
    with pytest.raises(ValueError, match="label propagation"):
        cb.feature_contribution_ratio(70.0, 60.0, 75.0)


# ----------------------------------------------------------------------------- graph helpers
def test_normalized_adjacency_equals_the_dense_formula():
    n = 12
    edge_index = ring_with_chords(n)
    a_hat = dense_adjacency(edge_index, n) + torch.eye(n)
    d = a_hat.sum(1).rsqrt()
    want = d[:, None] * a_hat * d[None, :]
    got = cb.normalized_adjacency(edge_index, n).to_dense()
    torch.testing.assert_close(got, want)
    # duplicated self-loops in the input are not counted twice
    with_loops = torch.cat([edge_index, torch.arange(n).repeat(2, 1)], dim=1)
    torch.testing.assert_close(cb.normalized_adjacency(with_loops, n).to_dense(), want)


def test_mean_adjacency_rows_average_the_neighbours():
    n = 12
    edge_index = ring_with_chords(n)
    a = dense_adjacency(edge_index, n)
    torch.testing.assert_close(cb.mean_adjacency(edge_index, n).to_dense(), a / a.sum(1, keepdim=True))


def test_degree_and_bad_edge_index():
    edge_index = ring_with_chords(12)
    assert cb.node_degrees(edge_index, 12).tolist()[0] == 5
    with pytest.raises(ValueError, match=r"\[2, M\]"):
        cb.node_degrees(edge_index.T, 12)
    with pytest.raises(ValueError, match="outside"):
        cb.node_degrees(edge_index, 5)


# ----------------------------------------------------------------------------- layers
def test_se_layer_with_zero_embedding_is_a_plain_gcn_layer_and_matches_pyg():
    from torch_geometric.nn import GCNConv

    torch.manual_seed(0)
    n, edge_index = 12, ring_with_chords(12)
    x = torch.randn(n, 5)
    adj = cb.normalized_adjacency(edge_index, n)
    se = cb.SEGCNLayer(5, 3, num_nodes=n)
    plain = cb.SEGCNLayer(5, 3)
    with torch.no_grad():
        se.structural.zero_()
        plain.weight.copy_(se.weight)
        se.bias.copy_(torch.randn(3))
        plain.bias.copy_(se.bias)
    torch.testing.assert_close(se(x, adj), plain(x, adj))
    pyg = GCNConv(5, 3)
    with torch.no_grad():
        pyg.lin.weight.copy_(plain.weight.T)
        pyg.bias.copy_(plain.bias)
    torch.testing.assert_close(plain(x, adj), pyg(x, edge_index), atol=1e-5, rtol=1e-5)


def test_isolated_node_output_is_its_own_transform_plus_its_structural_embedding():
    torch.manual_seed(1)
    n = 12
    isolated = torch.zeros(n, dtype=torch.bool)
    isolated[4] = True
    edge_index = cb.remove_isolated_edges(ring_with_chords(n), isolated)
    layer = cb.SEGCNLayer(6, 4, num_nodes=n)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(4))
    x = torch.randn(n, 6)
    out = layer(x, cb.normalized_adjacency(edge_index, n))
    torch.testing.assert_close(out[4], x[4] @ layer.weight + layer.structural[4] + layer.bias)
    # a connected node is NOT its own transform: its neighbours' rows mix in
    assert not torch.allclose(out[3], x[3] @ layer.weight + layer.structural[3] + layer.bias)


def test_structural_embedding_penalty_and_placement():
    gcn = cb.GCN(5, 8, 3, num_layers=3, num_nodes=10, structural="first")
    assert [layer.structural is not None for layer in gcn.layers] == [True, False, False]
    assert gcn.penalty().item() == pytest.approx(torch.linalg.norm(gcn.layers[0].structural).item())
    everywhere = cb.GCN(5, 8, 3, num_layers=3, num_nodes=10, structural="all")
    assert all(layer.structural is not None for layer in everywhere.layers)
    assert cb.GCN(5, 8, 3).penalty().item() == 0.0
    with pytest.raises(ValueError, match="num_nodes"):
        cb.GCN(5, 8, 3, structural="first")
    with pytest.raises(ValueError, match="structural"):
        cb.GCN(5, 8, 3, num_nodes=10, structural="middle")


def test_gcn_embeddings_concatenate_the_layer_outputs():
    torch.manual_seed(2)
    n, edge_index = 12, ring_with_chords(12)
    gcn = cb.GCN(5, 8, 3, num_layers=2, num_nodes=n, structural="first")
    x, adj = torch.randn(n, 5), cb.normalized_adjacency(edge_index, n)
    emb = gcn.embeddings(x, adj)
    assert emb.shape == (n, 8 + 3)
    torch.testing.assert_close(emb[:, 8:], gcn.eval()(x, adj))


def test_sage_layer_matches_pyg_sageconv():
    from torch_geometric.nn import SAGEConv

    torch.manual_seed(3)
    n, edge_index = 12, ring_with_chords(12)
    x = torch.randn(n, 5)
    ours = cb.SAGELayer(5, 4)
    pyg = SAGEConv(5, 4)
    with torch.no_grad():
        pyg.lin_l.weight.copy_(ours.neigh_linear.weight)
        pyg.lin_l.bias.copy_(ours.neigh_linear.bias)
        pyg.lin_r.weight.copy_(ours.self_linear.weight)
    torch.testing.assert_close(ours(x, cb.mean_adjacency(edge_index, n)), pyg(x, edge_index),
                               atol=1e-5, rtol=1e-5)


def test_sparse_dropout_and_sparse_mlp_input():
    torch.manual_seed(4)
    x = (torch.rand(20, 30) < 0.2).float()
    xs = cb.to_sparse_csr(x)
    torch.testing.assert_close(cb.sparse_dropout(xs, 0.5, training=False).to_dense(), x)
    dropped = cb.sparse_dropout(xs, 0.5, training=True).to_dense()
    kept = dropped != 0
    assert kept.sum() < (x != 0).sum() and (x[kept] != 0).all()
    torch.testing.assert_close(dropped[kept], 2.0 * x[kept])
    mlp = cb.MLP(30, 16, 4, extra_dim=6, sparse_input=True).eval()
    extra = torch.randn(20, 6)
    reference = mlp.rest(torch.cat([x, extra], 1) @ mlp.input.weight.T + mlp.input.bias)
    torch.testing.assert_close(mlp(x, extra), reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="extra"):
        mlp(x)


# ----------------------------------------------------------------------------- virtual neighbours
def test_virtual_neighbours_k1_is_the_best_scoring_row():
    torch.manual_seed(5)
    query, pool = torch.randn(7, 4), torch.randn(30, 4)
    got = cb.virtual_neighbours(query, pool, k=1)
    torch.testing.assert_close(got, pool[(query @ pool.T).argmax(1)])


def test_virtual_neighbours_attention_is_a_top_k_softmax():
    torch.manual_seed(6)
    query, pool = torch.randn(7, 4), torch.randn(30, 4)
    out, attention = cb.virtual_neighbours(query, pool, k=3, return_attention=True)
    torch.testing.assert_close(attention.sum(1), torch.ones(7))
    assert ((attention > 0).sum(1) == 3).all()
    scores = query @ pool.T
    for row in range(7):
        top = scores[row].topk(3).indices
        torch.testing.assert_close(attention[row, top], torch.softmax(scores[row, top], 0))
    torch.testing.assert_close(out, attention @ pool)


def test_virtual_neighbours_do_not_depend_on_pool_order():
    torch.manual_seed(7)
    query, pool = torch.randn(5, 4), torch.randn(25, 4)
    perm = torch.randperm(25)
    torch.testing.assert_close(cb.virtual_neighbours(query, pool, 4), cb.virtual_neighbours(query, pool[perm], 4))


def test_virtual_neighbours_validate_inputs():
    with pytest.raises(ValueError, match="share d"):
        cb.virtual_neighbours(torch.randn(2, 3), torch.randn(5, 4), 1)
    with pytest.raises(ValueError, match="k must be"):
        cb.virtual_neighbours(torch.randn(2, 4), torch.randn(5, 4), 6)


def test_exercise_check_accepts_eq4_and_rejects_a_full_softmax():
    def reference(query, pool, k):
        return cb.virtual_neighbours(query, pool, k)

    def full_softmax(query, pool, k):
        return torch.softmax(query @ pool.T, dim=1) @ pool

    assert check_virtual_neighbours(reference)
    with pytest.raises(AssertionError):
        check_virtual_neighbours(full_softmax)


def test_student_shapes_and_initial_scales():
    torch.manual_seed(8)
    student = cb.ColdBrewStudent(10, 6, 3, hidden_dim=16, k=2)
    assert student.alpha.tolist() == pytest.approx([1e-4, 1e-4])
    assert student.mlp2.extra_dim == 12
    assert student(torch.randn(4, 10), torch.randn(9, 6)).shape == (4, 3)
    without = cb.ColdBrewStudent(10, 6, 3, hidden_dim=16, use_virtual=False)
    assert without.mlp2.extra_dim == 6
    # MLP2's loss must not train MLP1 (the code detaches the guess)
    student(torch.randn(4, 10), torch.randn(9, 6)).sum().backward()
    assert all(p.grad is None for p in student.mlp1.parameters())


# ----------------------------------------------------------------------------- splits
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_split_groups_are_disjoint_and_isolated_nodes_keep_no_edges(mode):
    torch.manual_seed(9)
    n = 200
    src = torch.randint(0, n, (600,))
    dst = (src + torch.randint(1, 40, (600,))) % n
    edge_index = torch.cat([torch.stack([src, dst]), torch.stack([dst, src])], 1)
    split = cb.make_cold_start_split(edge_index, n, mode, official_num_train=40, seed=3)
    groups = split.head.int() + split.tail.int() + split.isolated.int()
    assert groups.max() <= 1
    assert (split.train.int() + split.val.int() + split.test.int() == 1).all()
    assert not (split.val & split.isolated).any()
    touches = split.isolated[split.edge_index[0]] | split.isolated[split.edge_index[1]]
    assert (split.edge_index[0][touches] == split.edge_index[1][touches]).all()
    low, high = split.degree[split.isolated | split.tail].max(), split.degree[split.head].min()
    assert low <= high
    if mode == "paper":
        assert not (split.train & split.isolated).any()
        assert split.info["isolated"] == split.info["tail"] == split.info["head"] == 20
        assert split.degree[split.isolated].max() <= split.degree[split.tail].min()
    else:
        assert split.train[:40].all() and not split.train[40:].any()


def test_split_is_deterministic_for_a_seed_and_validates():
    edge_index = ring_with_chords(40)
    a = cb.make_cold_start_split(edge_index, 40, seed=1)
    b = cb.make_cold_start_split(edge_index, 40, seed=1)
    assert torch.equal(a.isolated, b.isolated) and torch.equal(a.train, b.train)
    with pytest.raises(ValueError, match="mode"):
        cb.make_cold_start_split(edge_index, 40, "strict")
    with pytest.raises(ValueError, match="group_fraction"):
        cb.make_cold_start_split(edge_index, 40, group_fraction=0.4)


def test_official_median_rule_matches_a_hand_example():
    # degrees 1..10: medians 5.5 -> {1..5}, 3 -> {1, 2, 3}, 2 -> {1, 2}, 1.5 -> {1}
    values = torch.arange(1, 11).numpy()
    assert cb._median_rule(values, 3, low=True).tolist() == [0, 1]
    assert cb._median_rule(values, 4, low=True).tolist() == [0]
    # ties keep every node at the median: the "6 %" set is half the graph here
    tied = torch.tensor([1, 1, 1, 1, 1, 2, 3, 4, 5, 6]).numpy()
    assert cb._median_rule(tied, 4, low=True).tolist() == [0, 1, 2, 3, 4]
    assert cb._median_rule(values, 5, low=False).tolist() == [9]


# ----------------------------------------------------------------------------- training, LP
def test_fit_classifier_restores_the_best_validation_epoch():
    torch.manual_seed(10)
    n = 60
    x = torch.randn(n, 4)
    y = (x[:, 0] > 0).long()
    train = torch.zeros(n, dtype=torch.bool)
    train[:30] = True
    val = ~train
    model = torch.nn.Linear(4, 2)
    log = cb.fit_classifier(model, lambda m, i: m(x[i]), y, train, val, epochs=25, lr=0.05)
    assert log.best_epoch == max(range(25), key=lambda e: (log.val_accuracy[e], -e))
    final = float((model(x[val]).argmax(1) == y[val]).float().mean()) * 100
    assert final == pytest.approx(max(log.val_accuracy))


def test_label_propagation_reaches_its_closed_form_and_stays_in_components():
    n = 8
    pairs = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)]  # two chains
    edge_index = torch.tensor([[a for a, b in pairs] + [b for a, b in pairs],
                               [b for a, b in pairs] + [a for a, b in pairs]])
    adj = cb.normalized_adjacency(edge_index, n)
    y = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    train = torch.zeros(n, dtype=torch.bool)
    train[[0, 7]] = True
    out = cb.label_propagation(adj, y, train, 2, alpha=0.5, steps=200)
    seed = torch.zeros(n, 2)
    seed[0, 0] = seed[7, 1] = 1.0
    closed = 0.5 * torch.linalg.solve(torch.eye(n) - 0.5 * adj.to_dense(), seed)
    torch.testing.assert_close(out, closed, atol=1e-5, rtol=1e-5)
    assert (out[:4, 1] == 0).all() and (out[4:, 0] == 0).all()
    assert out.argmax(1).tolist() == y.tolist()


def test_deep_gcn_collapses_without_structural_embeddings(mirror):
    """The paper's deep-GCN finding on Cora, fixed seed: 16 layers, SE in every layer."""
    from dataclasses import replace

    data = cb.load_planetoid("Cora")
    split = cb.make_cold_start_split(data.edge_index, data.num_nodes, "paper", seed=0)
    config = replace(cb.DATASET_CONFIGS["Cora"], epochs=60, lr=0.01, patience=None)
    x, adj = cb.to_sparse_csr(data.x), cb.normalized_adjacency(split.edge_index, data.num_nodes)
    accs = {}
    for structural in ("none", "all"):
        model, _ = cb.train_gcn(data, split, config, structural=structural, num_layers=16, seed=0)
        accs[structural] = cb.accuracy_by_group(model(x, adj), data.y, split)["overall"]
    assert accs["all"] >= 55.0 and accs["none"] <= 35.0, accs


# ----------------------------------------------------------------------------- official baselines and scoring
def test_block_res_mlp_is_the_official_residual_block():
    """in_proj, x + Linear-LayerNorm-GELU-Dropout-Linear (width int(1.5 d) + 2), out_proj."""
    torch.manual_seed(0)
    model = cb.BlockResMLP(10, 3, dim_model=8, num_blocks=1, dropout=0.1).eval()
    assert model.blocks[0][0].out_features == int(8 * 1.5) + 2
    assert not isinstance(model.blocks[0][-1], torch.nn.Dropout)        # the last block ends without dropout
    two = cb.BlockResMLP(10, 3, dim_model=8, num_blocks=2)
    assert isinstance(two.blocks[0][-1], torch.nn.Dropout) and not isinstance(two.blocks[1][-1], torch.nn.Dropout)
    x = torch.rand(5, 10) * (torch.rand(5, 10) > 0.7)
    with torch.no_grad():
        h = model.in_proj(x)
        by_hand = model.out_proj(h + model.blocks[0](h))
        torch.testing.assert_close(model(x), by_hand)                     # dense input, converted to CSR inside
        torch.testing.assert_close(model(cb.to_sparse_csr(x)), by_hand)
    with pytest.raises(ValueError, match="columns"):
        model(torch.zeros(2, 9))
    with pytest.raises(ValueError, match="skip_period"):
        cb.BlockResMLP(10, 3, skip_period=1)


def test_fit_classifier_stops_after_patience_epochs_without_a_better_validation_score():
    torch.manual_seed(0)
    x, y = torch.randn(40, 4), torch.randint(0, 2, (40,))
    train = torch.zeros(40, dtype=torch.bool)
    train[:20] = True
    model = torch.nn.Linear(4, 2)
    # lr 0: the validation accuracy never changes, so the first epoch stays best and training stops
    log = cb.fit_classifier(model, lambda m, i: m(x[i]), y, train, ~train, epochs=500, lr=0.0, patience=7)
    assert log.best_epoch == 0 and len(log.val_accuracy) == 8
    assert len(cb.fit_classifier(model, lambda m, i: m(x[i]), y, train, ~train, epochs=30, lr=0.0).val_accuracy) == 30
    with pytest.raises(ValueError, match="patience"):
        cb.fit_classifier(model, lambda m, i: m(x[i]), y, train, ~train, epochs=5, patience=0)


def _tiny_graph_problem(n: int = 12):
    edge_index = ring_with_chords(n)
    split = cb.make_cold_start_split(edge_index, n, "paper", group_fraction=0.25, train_fraction=0.3,
                                     val_fraction=0.2, seed=0)
    return edge_index, split


def test_dropout_on_scoring_is_eval_scoring_without_dropout_and_noisier_with_it():
    n = 12
    _, split = _tiny_graph_problem(n)
    torch.manual_seed(0)
    x, y = torch.rand(n, 6), torch.randint(0, 3, (n,))
    adj = cb.normalized_adjacency(split.edge_index, n)
    plain = cb.GCN(6, 8, 3, dropout=0.0)
    with torch.no_grad():
        plain.eval()
        expected = cb.accuracy_by_group(plain(x, adj), y, split)
    assert cb.dropout_on_accuracy(plain, x, adj, y, split, passes=3) == pytest.approx(expected, nan_ok=True)
    assert not plain.training                                              # the model's mode is restored
    noisy = cb.GCN(6, 8, 3, dropout=0.9)
    noisy.train()
    with torch.no_grad():
        torch.manual_seed(1)
        a = noisy(x, adj)
        b = noisy(x, adj)
    assert not torch.equal(a, b), "training mode must draw a new dropout mask on each pass"
    assert noisy.training
    with pytest.raises(ValueError, match="passes"):
        cb.dropout_on_accuracy(plain, x, adj, y, split, passes=0)


def test_official_protocol_curve_logs_every_epoch_in_both_modes():
    n = 12
    edge_index, split = _tiny_graph_problem(n)
    from torch_geometric.data import Data
    torch.manual_seed(0)
    data = Data(x=torch.rand(n, 6), edge_index=edge_index, y=torch.randint(0, 3, (n,)))
    config = cb.ColdBrewConfig(hidden_dim=8, epochs=7, structural_weight=0.1)
    curve = cb.official_protocol_curve(data, split, config, structural="first", seed=0)
    assert set(curve) == {"dropout_on", "eval"} and all(len(v) == 7 for v in curve.values())
    assert all(0.0 <= v <= 100.0 for v in curve["eval"] + curve["dropout_on"])


def test_run_many_checks_jobs_and_run_models_checks_the_teacher():
    from torch_geometric.data import Data
    n = 12
    edge_index, split = _tiny_graph_problem(n)
    data = Data(x=torch.rand(n, 6), edge_index=edge_index, y=torch.randint(0, 3, (n,)))
    config = cb.ColdBrewConfig(hidden_dim=8, epochs=3)
    with pytest.raises(ValueError, match="needs"):
        cb.run_many(data, [{"mode": "paper", "seed": 0}])
    with pytest.raises(ValueError, match="kind"):
        cb.run_many(data, [{"mode": "paper", "seed": 0, "config": config, "kind": "nope"}])
    with pytest.raises(ValueError, match="teacher"):
        cb.run_models(data, split, config, models=("GCN", "Cold Brew"))          # the teacher is GCN+SE
    from dataclasses import replace
    out = cb.run_models(data, split, replace(config, teacher_structural="none"), models=("GCN", "Cold Brew"))
    assert set(out) == {"GCN", "Cold Brew"}


def test_run_many_in_workers_gives_the_one_thread_numbers(mirror):
    """Two one-thread worker processes reproduce one-thread runs in this process exactly."""
    data = cb.load_planetoid("Cora")
    config = cb.ColdBrewConfig(epochs=15, patience=5)
    jobs = [{"mode": "paper", "seed": s, "config": config, "models": ["GCN", "GCN+SE", "BlockResMLP", "Cold Brew",
                                                                      "Cold Brew w/o VN"], "dropout_on_passes": 2}
            for s in (0, 1)]
    here = cb.run_many(data, jobs, workers=1)
    there = cb.run_many(data, jobs, workers=2)
    assert here == there
    assert set(here[0]) == {"GCN", "GCN+SE", "BlockResMLP", "Cold Brew", "Cold Brew w/o VN",
                            "GCN" + cb.DROPOUT_ON, "GCN+SE" + cb.DROPOUT_ON}
    variants = cb.run_many(data, [{"kind": "variants", "mode": "paper", "seed": 0, "config": config,
                                   "variants": {"recipe": {}, "again": {}, "no SE teacher": {"teacher_structural": "none"}}}])[0]
    assert variants["recipe"] == variants["again"]                 # same teacher, same MLP1, same seed
    assert set(variants) == {"recipe", "again", "no SE teacher"}
