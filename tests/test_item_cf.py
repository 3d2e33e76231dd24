"""Item-to-item CF: the paper's loop, the matrix form, the recommenders and the metrics."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.metrics.pairwise import cosine_similarity

from iclr_lib import item_cf as icf


def random_purchases(n_users=30, n_items=12, density=0.25, seed=0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = (rng.random((n_users, n_items)) < density).astype(float)
    dense[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # nobody has an empty history
    return sp.csr_matrix(dense)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_papers_loop_counts_equal_r_transpose_r(seed):
    R = random_purchases(seed=seed)
    counts = icf.co_purchase_counts_loop(icf.histories(R), R.shape[1])
    np.testing.assert_array_equal(counts, (R.T @ R).toarray().astype(np.int64))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matrix_form_equals_loop_cosine_and_sklearn(seed):
    R = random_purchases(seed=seed)
    S = icf.item_cosine_similarity(R).toarray()
    loop = icf.cosine_from_counts(icf.co_purchase_counts_loop(icf.histories(R), R.shape[1]))
    reference = cosine_similarity(R.T.toarray())
    np.fill_diagonal(reference, 0.0)
    np.testing.assert_allclose(S, loop, atol=1e-12)
    np.testing.assert_allclose(S, reference, atol=1e-12)
    np.testing.assert_allclose(S, S.T, atol=1e-12)
    assert np.all(np.diag(S) == 0)


def test_cosine_of_weighted_ratings_matches_sklearn():
    rng = np.random.default_rng(3)
    ratings = sp.random(20, 8, density=0.4, random_state=3, data_rvs=lambda n: rng.integers(1, 6, n)).tocsr()
    reference = cosine_similarity(ratings.T.toarray())
    np.fill_diagonal(reference, 0.0)
    np.testing.assert_allclose(icf.item_cosine_similarity(ratings).toarray(), reference, atol=1e-12)


def test_an_item_nobody_bought_has_zero_similarity():
    R = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0]], dtype=float))
    S = icf.item_cosine_similarity(R).toarray()
    assert np.all(S[2] == 0) and np.all(S[:, 2] == 0)
    np.testing.assert_allclose(S[0, 1], 1 / np.sqrt(2))  # 1 co-buyer / sqrt(2 * 1)


def test_truncate_keeps_the_n_largest_per_row_with_ties_to_lower_index():
    table = sp.csr_matrix(np.array([[0, .5, .5, .9, .1], [.2, 0, .3, .3, .3], [0, 0, 0, 0, 0],
                                    [.9, .1, 0, 0, 0], [1, 1, 1, 1, 0]]))
    top2 = icf.truncate_top_n(table, 2).toarray()
    np.testing.assert_array_equal(top2, [[0, .5, 0, .9, 0], [0, 0, .3, .3, 0], [0, 0, 0, 0, 0],
                                         [.9, .1, 0, 0, 0], [1, 1, 0, 0, 0]])
    with pytest.raises(ValueError, match="n must be a positive integer"):
        icf.truncate_top_n(table, 0)


def test_loop_work_is_the_sum_of_squared_history_sizes():
    R = random_purchases(seed=4)
    sizes = np.diff(R.indptr)
    assert icf.loop_work(R) == int((sizes**2).sum())


def test_chronological_split_holds_out_each_users_latest_events():
    user = np.array([0] * 10 + [1] * 5 + [2] * 1)
    item = np.array(list(range(10)) + [3, 4, 5, 6, 7] + [0])
    time = np.array(list(range(100, 0, -10)) + [5, 4, 3, 2, 1] + [7])  # user 0 bought item 0 last
    split = icf.chronological_split(user, item, time, n_users=3, n_items=10, test_fraction=0.2)
    assert set(split.test[0].indices) == {0, 1}  # the two latest of ten events
    assert set(split.test[1].indices) == {3}     # one of five: item 3 is the latest
    assert split.test[2].nnz == 0 and split.train[2].nnz == 1  # one event: stays in training
    assert split.train.multiply(split.test).nnz == 0
    assert split.train.nnz + split.test.nnz == len(user)
    np.testing.assert_array_equal(split.eval_users, [0, 1])
    with pytest.raises(ValueError, match="test_fraction"):
        icf.chronological_split(user, item, time, 3, 10, test_fraction=1.5)


def test_online_recommendation_equals_batch_and_excludes_the_history():
    R = random_purchases(n_users=40, n_items=25, density=0.2, seed=5)
    for n_similar in (None, 3):
        model = icf.ItemToItemRecommender(n_similar).fit(R)
        batch = model.recommend_all(R, k=6)
        for u, history in enumerate(icf.histories(R)):
            online = model.recommend(history, k=6)
            np.testing.assert_array_equal(online, batch[u])
            assert not set(online) & set(history)


def test_online_recommendation_depends_only_on_the_table_and_the_history():
    R = random_purchases(n_users=40, n_items=25, density=0.2, seed=6)
    model = icf.ItemToItemRecommender(5).fit(R)
    history = icf.histories(R)[0]
    before = model.recommend(history, k=5)
    R.data[:] = 0.0  # other customers change after the table was built: no effect on user 0
    np.testing.assert_array_equal(model.recommend(history, k=5), before)


def test_item_scores_are_sums_of_table_rows():
    R = random_purchases(seed=7)
    model = icf.ItemToItemRecommender().fit(R)
    S = icf.item_cosine_similarity(R).toarray()
    scores = model.score_users(R, np.arange(R.shape[0]))
    np.testing.assert_allclose(scores, R.toarray() @ S, atol=1e-12)


def test_popularity_recommends_the_most_bought_unseen_items():
    R = sp.csr_matrix(np.array([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 0, 0, 0, 1], [0, 0, 0, 0, 0]], float))
    model = icf.PopularityRecommender().fit(R)
    np.testing.assert_array_equal(model.recommend_all(R, k=2), [[4, 3], [2, 4], [1, 2], [0, 1]])


def test_user_knn_matches_a_brute_force_implementation():
    R = random_purchases(n_users=15, n_items=10, density=0.3, seed=8)
    k = 3
    model = icf.UserKNNRecommender(k).fit(R)
    dense = R.toarray()
    sim = cosine_similarity(dense)
    np.fill_diagonal(sim, 0.0)
    expected = np.zeros_like(dense)
    for u in range(len(dense)):
        neighbours = np.argsort(-sim[u], kind="stable")[:k]
        expected[u] = sim[u, neighbours] @ dense[neighbours]
    got = model.score_users(R, np.arange(len(dense)))
    # ties among neighbours may pick different users with the same similarity: compare per-user totals
    np.testing.assert_allclose(np.sort(got.sum(1)), np.sort(expected.sum(1)), atol=1e-9)
    assert (model.neighbour_weights(np.arange(len(dense))) > 0).sum(axis=1).max() <= k
    other = random_purchases(n_users=15, n_items=10, density=0.3, seed=9)
    with pytest.raises(ValueError, match="fitted on"):
        model.score_users(other, np.arange(3))


def test_users_for_item_ranks_non_owners_by_summed_similarity():
    R = random_purchases(n_users=20, n_items=10, density=0.3, seed=9)
    model = icf.ItemToItemRecommender().fit(R)
    S = model.table_.toarray()
    users, scores = model.users_for_item(R, item=2, k=5)
    owners = set(np.flatnonzero(R.toarray()[:, 2]))
    assert not owners & set(users)
    np.testing.assert_allclose(scores, (R.toarray() @ S[:, 2])[users])
    assert np.all(np.diff(scores) <= 1e-12)


def test_metrics_on_a_hand_computed_example():
    test = sp.csr_matrix(np.array([[1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0]], float))
    recommended = np.array([[0, 3], [4, 3], [2, 1]])
    metrics = icf.evaluate_top_k(recommended, test, users=np.array([0, 1, 2]))
    assert metrics["hr"] == pytest.approx(2 / 3)
    assert metrics["precision"] == pytest.approx((1 / 2 + 0 + 1 / 2) / 3)
    assert metrics["recall"] == pytest.approx((1 / 2 + 0 + 1) / 3)
    assert metrics["coverage"] == pytest.approx(5 / 6)  # items 0, 1, 2, 3, 4


def test_helpful_errors_for_bad_input():
    R = random_purchases()
    with pytest.raises(RuntimeError, match="not fitted"):
        icf.ItemToItemRecommender().recommend([0, 1])
    with pytest.raises(ValueError, match="n_similar"):
        icf.ItemToItemRecommender(n_similar=0)
    with pytest.raises(ValueError, match="k must be an integer"):
        icf.PopularityRecommender().fit(R).recommend_all(R, k=0)
    with pytest.raises(ValueError, match="outside"):
        icf.ItemToItemRecommender().fit(R).recommend([99])
    with pytest.raises(ValueError, match="non-negative"):
        icf.item_cosine_similarity(-R)
    with pytest.raises(ValueError, match="at least one test item"):
        icf.evaluate_top_k(np.array([[0]]), sp.csr_matrix((1, 3)), users=np.array([0]))
    with pytest.raises(ValueError, match="out of range"):
        icf.purchase_matrix(np.array([5]), np.array([0]), n_users=2, n_items=2)


def test_zero_diagonal_with_items_nobody_bought():
    """Regression: scipy < 1.15's ``setdiag`` on a matrix whose diagonal has gaps (items without buyers)
    left self-similarities of ~1 and zeroed real off-diagonal entries instead. The table must not
    depend on scipy's version."""
    rng = np.random.default_rng(0)
    dense = (rng.random((300, 400)) < 0.3).astype(float)     # big enough for scipy 1.13's faulty path
    dense[:, rng.choice(400, 40, replace=False)] = 0.0        # empty columns: gaps in the diagonal
    S = icf.item_cosine_similarity(sp.csr_matrix(dense))
    reference = cosine_similarity(dense.T)
    np.fill_diagonal(reference, 0.0)
    assert (S.diagonal() != 0).sum() == 0
    np.testing.assert_allclose(S.toarray(), reference, atol=1e-12)
    assert S.nnz == np.count_nonzero(reference)


def test_jaccard_exercise_check_accepts_a_correct_answer_and_rejects_a_wrong_one():
    from iclr_lib.exercises.item_cf import check_jaccard_similarity

    def jaccard(R):
        binary = (R.toarray() > 0).astype(float)
        both = binary.T @ binary
        buyers = np.diag(both)
        union = buyers[:, None] + buyers[None, :] - both
        sim = np.divide(both, union, out=np.zeros_like(both), where=union > 0)
        np.fill_diagonal(sim, 0.0)
        return sim

    assert check_jaccard_similarity(jaccard)
    with pytest.raises(AssertionError, match="diagonal"):
        check_jaccard_similarity(lambda R: jaccard(R) + np.eye(R.shape[1]))
    with pytest.raises(AssertionError, match="similarity of items"):
        check_jaccard_similarity(lambda R: icf.item_cosine_similarity(R).toarray())


def test_user_knn_breaks_neighbour_ties_by_user_id():
    """Regression: the k nearest neighbours came from ``argpartition``, whose order among equal
    similarities is unspecified (it changed in numpy 2). Ties must go to the lower user id."""
    # user 0 bought items 0 and 1; users 1-11 each bought item 0 and one other item (all the same
    # similarity to user 0); with k = 5 the neighbours must be users 1 to 5.
    dense = np.zeros((12, 4))
    dense[0, :2] = 1.0
    dense[1:, 0] = 1.0
    dense[1:, 2 + (np.arange(11) % 2)] = 1.0
    R = sp.csr_matrix(dense)
    weights = icf.UserKNNRecommender(5).fit(R).neighbour_weights(np.array([0]))
    assert np.flatnonzero(weights[0]).tolist() == [1, 2, 3, 4, 5]


def test_user_knn_neighbours_equal_a_stable_sort_on_tie_heavy_data():
    rng = np.random.default_rng(0)
    for trial in range(20):
        R = sp.csr_matrix((rng.random((60, 8)) < 0.3).astype(float))   # 8 items: many equal similarities
        model = icf.UserKNNRecommender(int(rng.integers(1, 10))).fit(R)
        users = np.arange(60)
        sim = np.asarray((model.normalised_ @ model.normalised_T_).todense())   # the same rounding as the model
        sim[users, users] = 0.0
        expected = sim.copy()
        np.put_along_axis(expected, np.argsort(-sim, axis=1, kind="stable")[:, model.k_neighbours:], 0.0, axis=1)
        got = model.neighbour_weights(users)
        np.testing.assert_array_equal(got > 0, expected > 0, err_msg=f"trial {trial}")
        np.testing.assert_allclose(got, expected, atol=1e-12)
