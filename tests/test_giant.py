"""Tests of iclr_lib.giant: parsing, PIFA against PECOS, the label tree, the XR recipe, downstream."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from iclr_lib import giant

TEXTS = "\n".join([
    "p1", "graph neural networks for citation graphs", "ML",
    "p2", "citation graphs and neural networks", "ML",
    "p3", "database query optimisation for joins", "DB",
    "p4", "query processing in relational databases", "DB",
])
CITES = "\n".join(["p1\tp2", "p2\tp1", "p3\tp4", "p3\tp3", "p9\tp1", "p4\tp2"])


@pytest.fixture(scope="module")
def tiny():
    return giant.parse_citeseer_tag(TEXTS, CITES)


@pytest.fixture(scope="module")
def citeseer(mirror):
    return giant.load_citeseer_tag()


def _toy_graph(n: int = 120, groups: int = 4, seed: int = 0):
    """Nodes in ``groups`` topics; texts share topic words; edges mostly within a topic."""
    from torch_geometric.data import Data

    rng = np.random.default_rng(seed)
    topic = np.arange(n) % groups
    vocab = [[f"t{g}w{k}" for k in range(12)] for g in range(groups)]
    common = [f"c{k}" for k in range(20)]
    texts = [" ".join(list(rng.choice(vocab[t], 6)) + list(rng.choice(common, 4))) for t in topic]
    edges = set()
    while len(edges) < 2 * n:
        i, j = rng.integers(0, n, 2)
        if i != j and (topic[i] == topic[j] or rng.random() < 0.1):
            edges.add((min(i, j), max(i, j)))
    e = np.array(sorted(edges)).T
    edge_index = torch.as_tensor(np.hstack([e, e[::-1]]), dtype=torch.long)
    return Data(edge_index=edge_index, y=torch.as_tensor(topic), num_nodes=n, texts=texts)


def test_parse_keeps_known_distinct_pairs_undirected(tiny):
    assert tiny.num_nodes == 4 and tiny.y.tolist() == [4, 4, 2, 2]
    edges = {tuple(p) for p in tiny.edge_index.T.tolist()}
    # p1-p2 (twice, once each way), p3-p4 and p2-p4 survive; the self-loop and unknown p9 do not
    assert edges == {(0, 1), (1, 0), (2, 3), (3, 2), (1, 3), (3, 1)}
    assert tiny.texts[2].startswith("database") and tiny.paper_ids == ["p1", "p2", "p3", "p4"]


def test_parse_rejects_malformed_input():
    with pytest.raises(ValueError, match="3 lines"):
        giant.parse_citeseer_tag("p1\ntext", "")
    with pytest.raises(ValueError, match="unknown class"):
        giant.parse_citeseer_tag("p1\ntext\nPhysics", "")


def test_citeseer_statistics(citeseer):
    assert citeseer.num_nodes == 3186 and citeseer.edge_index.shape[1] == 2 * 4225
    degree = torch.bincount(citeseer.edge_index[0], minlength=citeseer.num_nodes)
    assert int((degree == 0).sum()) == 86
    counts = dict(zip(citeseer.class_names, torch.bincount(citeseer.y).tolist()))
    assert counts == {"Agents": 562, "AI": 239, "DB": 685, "IR": 641, "ML": 569, "HCI": 490}


def test_tfidf_rows_are_unit_norm_with_sorted_indices():
    data = _toy_graph()
    X = giant.tfidf_features(data.texts, min_df=1)
    assert X.dtype == np.float32 and X.has_sorted_indices
    assert np.allclose(sp.linalg.norm(X, axis=1), 1, atol=1e-6)


def test_lsa_features_are_the_projection_on_the_components():
    X = giant.tfidf_features(_toy_graph().texts, min_df=1)
    feats, comps = giant.lsa_features(X, dim=8)
    assert feats.shape == (120, 8) and comps.shape == (8, X.shape[1])
    assert np.allclose(feats, X @ comps.T, atol=1e-4)
    assert np.allclose(comps @ comps.T, np.eye(8), atol=1e-4)                  # orthonormal rows
    singular = np.linalg.svd(X.toarray(), compute_uv=False)[:8]                 # the exact truncated SVD
    assert np.allclose(np.linalg.norm(feats, axis=0), singular, rtol=1e-4)
    with pytest.raises(ValueError, match="dim"):
        giant.lsa_features(X, dim=0)


def test_pifa_equals_pecos():
    giant.patch_pecos()
    from pecos.xmc import LabelEmbeddingFactory

    rng = np.random.default_rng(0)
    Y = sp.random(50, 30, density=0.1, format="csr", random_state=1, dtype=np.float32)
    Y.data[:] = 1
    X = sp.random(50, 40, density=0.2, format="csr", random_state=2, dtype=np.float32)
    ours = giant.pifa_label_embeddings(Y, X)
    theirs = LabelEmbeddingFactory.create(Y, X, method="pifa")
    assert abs(ours - theirs).max() < 1e-5
    Xd = rng.normal(size=(50, 7)).astype(np.float32)
    assert np.allclose(giant.pifa_label_embeddings(Y, Xd), LabelEmbeddingFactory.create(Y, Xd, method="pifa"),
                       atol=1e-5)
    with pytest.raises(ValueError, match="same number of rows"):
        giant.pifa_label_embeddings(Y, X[:10])


def test_pifa_is_the_normalised_mean_of_the_positive_instances():
    Y = sp.csr_matrix(np.array([[1, 0], [1, 1], [0, 1]], dtype=np.float32))
    X = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
    Z = giant.pifa_label_embeddings(Y, X)
    # label 0: rows 0 and 1, each with Y-row weight 1 and 1/sqrt(2)
    want0 = np.array([1, 1 / np.sqrt(2)]) / np.linalg.norm([1, 1 / np.sqrt(2)])
    assert np.allclose(Z[0], want0, atol=1e-6)


def test_label_tree_and_level_consistency():
    data = _toy_graph(160)
    X = giant.tfidf_features(data.texts, min_df=1)
    Y = giant.neighbourhood_matrix(data.edge_index, data.num_nodes)
    chain = giant.build_label_tree(giant.pifa_label_embeddings(Y, X), nr_splits=4, max_leaf_size=10)
    assert chain[-1].shape[0] == 160
    for parent, child in zip(chain[:-1], chain[1:]):
        assert child.shape[1] == parent.shape[0]
    for C in chain:
        assert (C.getnnz(1) == 1).all() and set(np.unique(C.data)) == {1.0}
    targets = giant.level_targets(Y, chain)
    assert (targets[-1] != Y).nnz == 0
    membership = giant.cluster_membership(chain)
    assert np.array_equal(membership[-1], np.arange(160))
    for t, M in enumerate(membership):
        assert M.max() < targets[t].shape[1]
        if t > 0:   # a label's parent cluster is the parent of its cluster
            parent = chain[-len(targets) + t].indices
            assert np.array_equal(parent[M], membership[t - 1])
    for t in range(1, len(targets)):
        coarse = (targets[t] @ chain[-len(targets) + t]).tocsr()
        coarse.data[:] = 1
        assert (coarse != targets[t - 1]).nnz == 0          # Y^(t-1) = 1[Y^(t) C_t > 0]


def test_neighbourhood_matrix_and_validation(tiny):
    Y = giant.neighbourhood_matrix(tiny.edge_index, tiny.num_nodes)
    assert (Y != Y.T).nnz == 0 and set(Y.data) == {1.0} and Y.nnz == 6
    with pytest.raises(ValueError, match=r"\(2, E\)"):
        giant.neighbourhood_matrix(np.zeros((3, 2)), 4)


def test_precision_recall_at_k_by_hand():
    Y = sp.csr_matrix(np.array([[1, 1, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]], dtype=np.float32))
    S = np.array([[0.9, 0.1, 0.8, 0.0], [0.5, 0.4, 0.3, 0.2], [1, 2, 3, 4]])
    p, r = giant.precision_recall_at_k(Y, S, k=2)
    # row 0: top-2 = {0, 2}, one hit of 2 true; row 1: top-2 = {0, 1}, no hit; row 2 has no labels
    assert p == pytest.approx((1 / 2 + 0) / 2) and r == pytest.approx((1 / 2 + 0) / 2)
    with pytest.raises(ValueError, match="shape"):
        giant.precision_recall_at_k(Y, S[:, :3], k=2)


def test_popularity_ranking_counts_labels():
    Y = sp.csr_matrix(np.array([[1, 0, 1], [0, 0, 1]], dtype=np.float32))
    assert giant.popularity_ranking(Y, 4).shape == (4, 3)
    assert giant.popularity_ranking(Y, 1)[0].tolist() == [1, 0, 2]


def test_xr_linear_beats_popularity_on_held_out_citeseer(citeseer):
    X = giant.tfidf_features(citeseer.texts)
    Y = giant.neighbourhood_matrix(citeseer.edge_index, citeseer.num_nodes)
    rng = np.random.default_rng(0)
    order = rng.permutation(citeseer.num_nodes)
    train, test = order[:2600], order[2600:]
    chain = giant.build_label_tree(giant.pifa_label_embeddings(Y[train], X[train]))
    model = giant.train_xr_linear(X[train], Y[train], chain)
    scores = model.predict(X[test], beam_size=10, only_topk=10)
    _, r_xr = giant.precision_recall_at_k(Y[test], scores, 10)
    _, r_pop = giant.precision_recall_at_k(Y[test], giant.popularity_ranking(Y[train], len(test)), 10)
    assert r_xr >= 3 * r_pop, (r_xr, r_pop)
    # on the rows with neighbours, our P@k and R@k are PECOS's own metrics
    from pecos.utils import smat_util

    rows = Y[test].getnnz(1) > 0
    metrics = smat_util.Metrics.generate(Y[test][rows], scores[rows], topk=10)
    for k in (1, 5, 10):
        p, r = giant.precision_recall_at_k(Y[test][rows], scores[rows], k)
        assert p == pytest.approx(metrics.prec[k - 1]) and r == pytest.approx(metrics.recall[k - 1])


# ----------------------------------------------------------------------------- libpecos under numpy 2
def _needs_patch() -> bool:
    try:
        sp.sputils.get_index_dtype, sp.sputils.upcast
    except AttributeError:
        return True
    return np.lib.NumpyVersion(np.__version__) >= "2.0.0"


def test_patch_pecos_patches_exactly_when_numpy_2_or_new_scipy():
    from pecos.utils import smat_util

    patched = giant.patch_pecos()
    assert patched == _needs_patch()
    assert giant.patch_pecos() == patched  # idempotent
    assert (smat_util.cs_matrix is giant._cs_matrix) == patched


def test_pecos_sparse_helpers_work_after_the_patch():
    """Under numpy 2 / scipy >= 1.14 these raised (AttributeError: sputils.get_index_dtype; ValueError:
    np.array(copy=False)) before the patch; they must give the matrices PECOS means."""
    giant.patch_pecos()
    from pecos.utils import smat_util

    A = sp.random(20, 15, density=0.2, format="csr", random_state=0, dtype=np.float32)
    B = smat_util.csr_matrix((A.data, A.indices.astype(np.int64), A.indptr.astype(np.int64)), shape=A.shape)
    assert (B != A).nnz == 0 and B.indices.dtype == np.int64  # kept: PECOS does not check contents here
    C = smat_util.csc_matrix((A.data, A.indices, A.indptr), shape=A.shape[::-1], dtype=np.float64)
    assert C.dtype == np.float64 and (C.T != A).nnz == 0
    stacked = smat_util.vstack_csr([A, A])
    assert stacked.shape == (40, 15) and (stacked[20:] != A).nnz == 0


def test_sputils_replacements_equal_scipys_own():
    from scipy.sparse import _sputils

    cases = [np.arange(5, dtype=np.int32), np.arange(5, dtype=np.int64), np.array([2**40]),
             np.array([], dtype=np.int64), np.arange(3, dtype=np.uint64), np.array([-(2**33)])]
    for a in cases:
        for contents in (False, True):
            assert giant._get_index_dtype((a,), check_contents=contents) == \
                _sputils.get_index_dtype((a,), check_contents=contents), (a, contents)
    assert giant._get_index_dtype((), maxval=2**31) == _sputils.get_index_dtype((), maxval=2**31) == np.int64
    for dtypes in [(np.float32,), (np.float32, np.float64), (np.int32, np.float32), (np.bool_, np.int8),
                   (np.float16,), (np.complex64, np.float64)]:
        assert np.dtype(giant._upcast(*dtypes)) == np.dtype(_sputils.upcast(*dtypes)), dtypes


def test_cs_matrix_replacement_keeps_pecos_copy_semantics():
    A = sp.random(6, 5, density=0.5, format="csr", random_state=0, dtype=np.float32)
    shared = giant._cs_matrix((A.data, A.indices, A.indptr), sp.csr_matrix, shape=A.shape, copy=False)
    assert np.shares_memory(shared.data, A.data)
    copied = giant._cs_matrix((A.data, A.indices, A.indptr), sp.csr_matrix, shape=A.shape, copy=True)
    assert not np.shares_memory(copied.data, A.data) and (copied != A).nnz == 0


def test_squared_hinge_closed_form_and_mask():
    s = torch.tensor([[2.0, 0.5, -3.0, 0.0]])
    y = torch.tensor([[1, 1, 0, 0]])
    # (1-2)+ = 0; (1-0.5)^2 = 0.25; (1-3)+ = 0; (1+0)^2 = 1
    assert giant.squared_hinge_loss(s, y).item() == pytest.approx(1.25 / 4)
    mask = torch.tensor([[True, True, False, False]])
    assert giant.squared_hinge_loss(s, y, mask).item() == pytest.approx(0.25 / 2)
    # per-instance means, then the batch mean (PECOS): row 2 has one active entry with loss 4
    s2, y2 = torch.cat([s, torch.tensor([[-1.0, 0, 0, 0]])]), torch.cat([y, torch.tensor([[1, 0, 0, 0]])])
    mask2 = torch.cat([mask, torch.tensor([[True, False, False, False]])])
    assert giant.squared_hinge_loss(s2, y2, mask2).item() == pytest.approx((0.25 / 2 + 4.0) / 2)


def test_shortlist_teacher_forced_and_matcher_aware():
    C = sp.csr_matrix(np.array([[1, 0], [1, 0], [0, 1], [0, 1]], dtype=np.float32))   # 4 children, 2 parents
    true_parents = sp.csr_matrix(np.array([[1, 0]], dtype=np.float32))
    beam = sp.csr_matrix(np.array([[0, 1]], dtype=np.float32))
    assert giant.shortlist(true_parents, beam, C, "tfn").toarray().tolist() == [[1, 1, 0, 0]]
    assert giant.shortlist(true_parents, beam, C, "man").toarray().tolist() == [[0, 0, 1, 1]]
    assert giant.shortlist(true_parents, beam, C, "tfn+man").toarray().tolist() == [[1, 1, 1, 1]]
    assert giant.shortlist(true_parents, beam, C, "none") is None
    with pytest.raises(ValueError, match="predictions"):
        giant.shortlist(true_parents, None, C, "man")


def test_beam_predictions_keep_the_top_scores():
    B = giant.beam_predictions(np.array([[0.1, 0.9, 0.5], [3.0, 2.0, 1.0]]), beam=2).toarray()
    assert B.tolist() == [[0, 1, 1], [1, 1, 0]]


def test_untrained_encoder_outputs_the_lsa_features():
    X = giant.tfidf_features(_toy_graph().texts, min_df=1)
    feats, comps = giant.lsa_features(X, dim=8)
    enc = giant.TfidfEncoder(comps, hidden=16)
    assert np.allclose(giant.embed(enc, X), feats, atol=1e-4)
    dense = torch.as_tensor(X.toarray())
    assert torch.allclose(enc(dense), torch.as_tensor(feats), atol=1e-4)


def _toy_pipeline(seed: int = 0, **xr):
    data = _toy_graph(160, seed=seed)
    X = giant.tfidf_features(data.texts, min_df=1)
    feats, comps = giant.lsa_features(X, dim=16)
    Y = giant.neighbourhood_matrix(data.edge_index, data.num_nodes)
    chain = giant.build_label_tree(giant.pifa_label_embeddings(Y, X), nr_splits=4, max_leaf_size=10)
    targets = giant.level_targets(Y, chain)
    torch.manual_seed(0)
    enc = giant.TfidfEncoder(comps, hidden=32)
    cfg = giant.XRConfig(**{"steps_per_level": 40, "batch_size": 32, "beam": 2, **xr})
    return data, X, targets, chain, giant.train_xr_encoder(enc, X, targets, chain, cfg)


def test_xr_training_lowers_the_loss_at_every_level():
    _, _, targets, _, result = _toy_pipeline()
    assert result.levels == list(range(len(targets)))
    for losses in result.loss_history:
        assert np.mean(losses[-5:]) < np.mean(losses[:5])
    # the shortlist of the finer levels is much smaller than the number of clusters
    assert result.shortlist_size[-1] < targets[-1].shape[1] / 2
    assert result.shortlist_size[0] == targets[0].shape[1]


def test_xr_children_start_from_their_parents_rows():
    _, _, targets, chain, result = _toy_pipeline(steps_per_level=1, lr=0.0, head_lr=0.0)
    parent = chain[-1].indices
    assert torch.equal(result.heads[-1].weight, result.heads[-2].weight[torch.as_tensor(parent)])


def test_training_never_changes_the_lsa_components_it_started_from():
    X = giant.tfidf_features(_toy_graph().texts, min_df=1)
    _, comps = giant.lsa_features(X, dim=8)
    for layout in (comps, np.asfortranarray(comps)):
        before = layout.copy()
        enc = giant.TfidfEncoder(layout, hidden=16)
        giant.train_link_prediction_encoder(enc, X, _toy_graph().edge_index, steps=5, batch_size=16, lr=0.1)
        assert np.array_equal(layout, before)


def test_xr_training_is_deterministic_for_a_seed():
    first = giant.embed(_toy_pipeline()[-1].encoder, _toy_pipeline()[1])
    again = giant.embed(_toy_pipeline()[-1].encoder, _toy_pipeline()[1])
    assert np.array_equal(first, again)


def test_xr_leaf_only_and_validation():
    data, X, targets, chain, result = _toy_pipeline(levels=(-1,))
    assert result.levels == [len(targets) - 1] and len(result.heads) == 1
    enc = giant.TfidfEncoder(giant.lsa_features(X, dim=4)[1])
    with pytest.raises(ValueError, match="rows"):
        giant.train_xr_encoder(enc, X[:10], targets, chain)
    with pytest.raises(ValueError, match="negatives"):
        giant.XRConfig(negatives="random")
    with pytest.raises(ValueError, match="entries"):
        giant.train_xr_encoder(enc, X, targets, chain, giant.XRConfig(steps_per_level=(1, 2, 3, 4, 5, 6)))


def test_self_supervision_never_reads_node_labels():
    data = _toy_graph(160)
    config = giant.GiantConfig(lsa_dim=16, nr_splits=4, max_leaf_size=10, hidden=32,
                               xr=giant.XRConfig(steps_per_level=10, batch_size=32, beam=2))
    first = giant.giant_features(data, config)["features"]
    shuffled = data.clone()
    shuffled.y = data.y[torch.randperm(data.num_nodes, generator=torch.Generator().manual_seed(1))]
    assert np.array_equal(first, giant.giant_features(shuffled, config)["features"])
    del shuffled.y
    assert np.array_equal(first, giant.giant_features(shuffled, config)["features"])


def test_link_prediction_encoder_learns():
    data = _toy_graph()
    X = giant.tfidf_features(data.texts, min_df=1)
    enc = giant.TfidfEncoder(giant.lsa_features(X, dim=16)[1], hidden=32)
    _, losses = giant.train_link_prediction_encoder(enc, X, data.edge_index, steps=80, batch_size=64, lr=5e-3)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    with pytest.raises(ValueError, match="edge_index"):
        giant.train_link_prediction_encoder(enc, X, np.zeros((2, 0), dtype=int))


def test_link_prediction_is_deterministic_for_a_seed():
    data = _toy_graph()
    X = giant.tfidf_features(data.texts, min_df=1)
    comps = giant.lsa_features(X, dim=16)[1]
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        enc, _ = giant.train_link_prediction_encoder(giant.TfidfEncoder(comps, hidden=32), X, data.edge_index,
                                                     steps=30, batch_size=64, lr=5e-3)
        runs.append(giant.embed(enc, X))
    assert np.array_equal(*runs)


def test_label_split_is_balanced_and_disjoint():
    y = np.repeat(np.arange(3), 100)
    train, val, test = giant.label_split(y, per_class=20, num_val=50, seed=0)
    assert np.bincount(y[train]).tolist() == [20, 20, 20] and len(val) == 50 and len(test) == 190
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    with pytest.raises(ValueError, match="per_class"):
        giant.label_split(y, per_class=100)


@pytest.mark.parametrize("model", ["mlp", "sage"])
def test_node_classification_learns_separable_features(model):
    data = _toy_graph(200)
    y = data.y.numpy()
    rng = np.random.default_rng(0)
    features = np.eye(4)[y] * 3 + rng.normal(size=(200, 4))
    split = giant.label_split(y, per_class=10, num_val=40)
    out = giant.node_classification(features, y, data.edge_index, split, model=model, hidden=16, epochs=60)
    assert out["test"] >= 90 and 1 <= out["best_epoch"] <= 60
    with pytest.raises(ValueError, match="model"):
        giant.node_classification(features, y, data.edge_index, split, model="gat")


def test_pifa_exercise_check_accepts_the_solution_and_rejects_a_wrong_one():
    from iclr_lib.exercises.giant import check_pifa

    assert check_pifa(giant.pifa_label_embeddings)
    with pytest.raises(AssertionError, match="normalise"):
        check_pifa(lambda Y, X: (Y.T @ X).toarray())            # forgets both normalisations


class _HashingTextEncoder(torch.nn.Module):
    """A stand-in for a pre-trained transformer: it reads raw strings (hashed bag of words)."""

    def __init__(self, dim: int = 8, buckets: int = 64) -> None:
        super().__init__()
        self.buckets = buckets
        self.embedding = torch.nn.EmbeddingBag(buckets, dim, mode="mean")

    def forward(self, texts: list[str]) -> torch.Tensor:
        import zlib

        ids = [torch.tensor([zlib.crc32(w.encode()) % self.buckets for w in t.split()]) for t in texts]
        offsets = torch.tensor([0] + [len(i) for i in ids[:-1]]).cumsum(0)
        return self.embedding(torch.cat(ids), offsets)


def test_any_encoder_of_raw_texts_can_be_fine_tuned():
    data, X, targets, chain, _ = _toy_pipeline(steps_per_level=1)
    torch.manual_seed(0)
    enc = _HashingTextEncoder()
    before = enc.embedding.weight.detach().clone()
    result = giant.train_xr_encoder(enc, list(data.texts), targets, chain,
                                    giant.XRConfig(steps_per_level=5, batch_size=16, beam=2))
    assert not torch.equal(before, result.encoder.embedding.weight)
    assert giant.embed(result.encoder, list(data.texts)).shape == (160, 8)


def test_graphsage_on_the_receptive_field_equals_the_whole_graph():
    from iclr_lib.giant import GraphSAGE, _receptive_field

    data = _toy_graph(150)
    torch.manual_seed(0)
    net = GraphSAGE(5, 8, 4).eval()
    x = torch.randn(150, 5)
    nodes = torch.tensor([3, 17, 40, 99])
    subset, sub_edges, where = _receptive_field(nodes, data.edge_index, 150, hops=2)
    assert len(subset) < 150
    assert torch.allclose(net(x[subset], sub_edges)[where], net(x, data.edge_index)[nodes], atol=1e-6)


def test_fraction_split_and_held_out_rows_partition_the_nodes():
    train, val, test = giant.fraction_split(100, 0.6, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (60, 20, 20)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))
    assert np.array_equal(train, giant.fraction_split(100, 0.6, 0.2, seed=3)[0])
    with pytest.raises(ValueError, match="train"):
        giant.fraction_split(10, 0.7, 0.4)
    data = _toy_graph()
    Y = giant.neighbourhood_matrix(data.edge_index, data.num_nodes)
    rows, held = giant.held_out_rows(Y, 0.25, seed=1)
    assert len(rows) == 90 and not set(rows) & set(held)
    assert (Y[held].getnnz(1) > 0).all()                      # only nodes with neighbours to find
    with pytest.raises(ValueError, match="fraction"):
        giant.held_out_rows(Y, 1.0)


def test_neighbour_recall_criteria_are_recalls_and_need_the_last_level():
    data, X, targets, chain, _ = _toy_pipeline()
    Y = giant.neighbourhood_matrix(data.edge_index, data.num_nodes)
    rows, held = giant.held_out_rows(Y, 0.25, seed=0)
    comps = giant.lsa_features(X, dim=16)[1]
    cfg = giant.XRConfig(steps_per_level=20, batch_size=32, beam=2)
    torch.manual_seed(0)
    r = giant.xr_neighbour_recall(giant.TfidfEncoder(comps, hidden=32), X, targets, chain, cfg, rows, held, k=10)
    torch.manual_seed(0)
    again = giant.xr_neighbour_recall(giant.TfidfEncoder(comps, hidden=32), X, targets, chain, cfg, rows, held, k=10)
    assert 0.0 <= r <= 1.0 and r == again
    # above the popularity ranking of the training rows on this homophilous toy graph
    pop = giant.precision_recall_at_k(Y[held], giant.popularity_ranking(Y[rows], len(held)), 10)[1]
    assert r > pop
    with pytest.raises(ValueError, match="last level"):
        giant.xr_neighbour_recall(giant.TfidfEncoder(comps, hidden=32), X, targets, chain,
                                  giant.XRConfig(steps_per_level=5, batch_size=32, levels=(0,)), rows, held)
    lp = giant.link_neighbour_recall(giant.TfidfEncoder(comps, hidden=32), X, data.edge_index, rows, held,
                                     steps=20, lr=1e-3, batch_size=32, k=10)
    assert 0.0 <= lp <= 1.0


def test_node_classification_early_stopping():
    data = _toy_graph(200)
    y = data.y.numpy()
    features = np.eye(4)[y] * 3 + np.random.default_rng(0).normal(size=(200, 4))
    split = giant.label_split(y, per_class=10, num_val=40)
    full = giant.node_classification(features, y, data.edge_index, split, hidden=16, epochs=60)
    same = giant.node_classification(features, y, data.edge_index, split, hidden=16, epochs=60, patience=60)
    assert full == same                                         # patience >= epochs never stops early
    with pytest.raises(ValueError, match="patience"):
        giant.node_classification(features, y, data.edge_index, split, epochs=5, patience=0)
