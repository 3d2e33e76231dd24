"""Item-to-item collaborative filtering (Linden, Smith & York, IEEE Internet Computing 2003).

The paper in three sentences: build, offline, a table that maps every item to its most similar
items, where two items are similar when the same customers bought both (cosine of the items'
customer vectors). Online, look up the similar items of everything the customer bought, add up
the similarities and recommend the best items not yet bought. The online cost depends only on
the customer's history, not on the number of customers or items.

Shapes used throughout: ``R`` is the ``(n_users, n_items)`` purchase matrix (``scipy.sparse``
CSR, 1 where the user bought/rated the item); a similarity table ``S`` is ``(n_items, n_items)``
CSR with ``S[i, j]`` = similarity of item ``j`` to item ``i`` and a zero diagonal.

Ranking rule shared by every recommender here: highest score first; exact ties (after rounding to
10 decimals) go to the more popular item in the training data, then to the lower item index.
Items the user already has are never recommended.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp

_DECIMALS = 10  # scores are rounded before ranking so that sums in different orders tie exactly


# ----------------------------------------------------------------------------- data preparation
@dataclass(frozen=True)
class InteractionSplit:
    """Binary ``(n_users, n_items)`` CSR matrices of training and held-out purchases."""

    train: sp.csr_matrix
    test: sp.csr_matrix

    @property
    def eval_users(self) -> np.ndarray:
        """Users with at least one held-out item (the users every metric averages over)."""
        return np.flatnonzero(np.diff(self.test.indptr) > 0)


def purchase_matrix(user: np.ndarray, item: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary CSR purchase matrix from parallel ``(n,)`` arrays of user and item indices."""
    user, item = np.asarray(user), np.asarray(item)
    if user.shape != item.shape or user.ndim != 1:
        raise ValueError(f"user and item must be 1-d arrays of equal length, got {user.shape} and {item.shape}")
    if len(user) and (user.min() < 0 or user.max() >= n_users or item.min() < 0 or item.max() >= n_items):
        raise ValueError(f"indices out of range: users must lie in [0, {n_users}), items in [0, {n_items})")
    matrix = sp.csr_matrix((np.ones(len(user), dtype=np.float64), (user, item)), shape=(n_users, n_items))
    matrix.data[:] = 1.0  # repeated (user, item) pairs count once: a purchase is a purchase
    return matrix


def chronological_split(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, n_users: int,
                        n_items: int, test_fraction: float = 0.2) -> InteractionSplit:
    """Per-user chronological hold-out: each user's last ``test_fraction`` of events is the test set.

    Every user keeps at least one training and (when they have two or more events) one test event.
    Events with equal timestamps are ordered by item index, so the split is deterministic.

    Args:
        user, item, timestamp: parallel ``(n_events,)`` arrays.
        n_users, n_items: matrix shape.
        test_fraction: share of each user's events held out, in ``(0, 1)``.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction!r}")
    user, item, timestamp = (np.asarray(a) for a in (user, item, timestamp))
    if not (user.shape == item.shape == timestamp.shape):
        raise ValueError("user, item and timestamp must have the same shape")
    order = np.lexsort((item, timestamp, user))  # by user, then time, then item
    user_sorted = user[order]
    starts = np.searchsorted(user_sorted, np.arange(n_users), side="left")
    ends = np.searchsorted(user_sorted, np.arange(n_users), side="right")
    is_test = np.zeros(len(order), dtype=bool)
    for start, end in zip(starts, ends):
        n = end - start
        if n < 2:
            continue
        n_test = min(n - 1, max(1, int(np.floor(test_fraction * n + 0.5))))
        is_test[end - n_test:end] = True
    train = purchase_matrix(user[order[~is_test]], item[order[~is_test]], n_users, n_items)
    test = purchase_matrix(user[order[is_test]], item[order[is_test]], n_users, n_items)
    return InteractionSplit(train=train, test=test)


def histories(purchases: sp.csr_matrix) -> list[np.ndarray]:
    """Per-user arrays of purchased item indices (``purchases`` is an ``(n_users, n_items)`` CSR)."""
    purchases = _as_csr(purchases, "purchases")
    return [purchases.indices[purchases.indptr[u]:purchases.indptr[u + 1]].copy()
            for u in range(purchases.shape[0])]


# ---------------------------------------------------------------------- the offline table build
def co_purchase_counts_loop(purchases: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    """The paper's offline algorithm, written as its pseudo-code (for teaching; O(n_items^2) memory).

    ::

        For each item in product catalog, I1
          For each customer C who purchased I1
            For each item I2 purchased by customer C
              Record that a customer purchased I1 and I2

    Args:
        purchases: ``purchases[c]`` lists the items customer ``c`` bought.
        n_items: catalogue size.

    Returns:
        ``(n_items, n_items)`` int64 counts; ``counts[i, j]`` = customers who bought both ``i`` and
        ``j``; the diagonal ``counts[i, i]`` = customers who bought ``i``.
    """
    customers_of: list[list[int]] = [[] for _ in range(n_items)]
    for customer, items in enumerate(purchases):
        for i in set(items):
            if not 0 <= i < n_items:
                raise ValueError(f"purchases[{customer}] holds item {i}, outside [0, {n_items})")
            customers_of[i].append(customer)
    counts = np.zeros((n_items, n_items), dtype=np.int64)
    for i1 in range(n_items):                      # for each item in the catalogue, I1
        for customer in customers_of[i1]:          #   for each customer C who purchased I1
            for i2 in set(purchases[customer]):    #     for each item I2 purchased by C
                counts[i1, i2] += 1                #       record that a customer bought I1 and I2
    return counts


def cosine_from_counts(counts: np.ndarray) -> np.ndarray:
    """Cosine similarity of binary item vectors from co-purchase counts.

    For 0/1 customer vectors, ``cos(i, j) = counts[i, j] / sqrt(counts[i, i] * counts[j, j])``.
    The diagonal is set to 0 (an item is not recommended because of itself).
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"counts must be a square matrix, got shape {counts.shape}")
    norms = np.sqrt(np.diag(counts))
    with np.errstate(divide="ignore", invalid="ignore"):
        sim = counts / np.outer(norms, norms)
    sim[~np.isfinite(sim)] = 0.0
    np.fill_diagonal(sim, 0.0)
    return sim


def item_cosine_similarity(purchases: sp.spmatrix) -> sp.csr_matrix:
    """The matrix form of the table build: column-normalised ``R^T R`` with a zero diagonal.

    ``S = D^{-1} R^T R D^{-1}`` with ``D = diag(||R[:, i]||)``; the product only touches pairs of
    items that share a customer, which is why the build costs about ``sum_c |h_c|^2`` operations
    rather than the ``N^2 M`` worst case.

    Args:
        purchases: ``(n_users, n_items)`` sparse matrix (binary, or any non-negative weights).

    Returns:
        ``(n_items, n_items)`` CSR cosine similarities, symmetric, zero diagonal.
    """
    purchases = _as_csr(purchases, "purchases").astype(np.float64)
    norms = np.sqrt(np.asarray(purchases.multiply(purchases).sum(axis=0)).ravel())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    normalised = purchases @ sp.diags(inverse)
    sim = (normalised.T @ normalised).tocoo()
    # Drop the diagonal by filtering, not with ``setdiag(0)``: scipy < 1.15's setdiag corrupts the
    # matrix when items without buyers leave gaps in the diagonal (tests/test_item_cf.py).
    off = sim.row != sim.col
    sim = sp.csr_matrix((sim.data[off], (sim.row[off], sim.col[off])), shape=sim.shape)
    sim.eliminate_zeros()
    sim.sort_indices()
    return sim


def truncate_top_n(table: sp.spmatrix, n: int) -> sp.csr_matrix:
    """Keep, for each item (row), only its ``n`` most similar items: the "similar-items table".

    Ties go to the lower item index. ``n`` must be a positive integer.
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    table = _as_csr(table, "table")
    rows, cols, vals = [], [], []
    for i in range(table.shape[0]):
        lo, hi = table.indptr[i], table.indptr[i + 1]
        idx, val = table.indices[lo:hi], table.data[lo:hi]
        if len(idx) > n:
            keep = np.lexsort((idx, -val))[:n]
            idx, val = idx[keep], val[keep]
        rows.append(np.full(len(idx), i))
        cols.append(idx)
        vals.append(val)
    out = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=table.shape)
    out.sort_indices()
    return out


def loop_work(purchases: sp.spmatrix) -> int:
    """Innermost steps the paper's loop executes: ``sum_c |h_c|^2`` over customers ``c``."""
    purchases = _as_csr(purchases, "purchases")
    sizes = np.diff(purchases.indptr).astype(np.int64)
    return int((sizes**2).sum())


# ---------------------------------------------------------------------------- recommenders
class _Recommender:
    """Shared ranking code: fit on a training matrix, then ``recommend_all`` ranks unseen items."""

    popularity_: np.ndarray
    n_items_: int

    def _fit_popularity(self, train: sp.csr_matrix) -> None:
        self.n_items_ = train.shape[1]
        self.popularity_ = np.asarray((train > 0).sum(axis=0)).ravel().astype(np.int64)
        # 0 = most popular; ties by lower index. Used to break exact score ties.
        self.popularity_order_ = np.lexsort((np.arange(self.n_items_), -self.popularity_))
        self.popularity_rank_ = np.empty(self.n_items_, dtype=np.int64)
        self.popularity_rank_[self.popularity_order_] = np.arange(self.n_items_)

    def _check_fitted(self) -> None:
        if not hasattr(self, "popularity_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet; call .fit(train) first")

    def score_users(self, train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def recommend_all(self, train: sp.spmatrix, k: int = 10, users: np.ndarray | None = None) -> np.ndarray:
        """Top-``k`` unseen items for each user in ``users`` (default: all rows of ``train``).

        Returns an ``(len(users), k)`` int64 array of item indices, best first.
        """
        self._check_fitted()
        train = _as_csr(train, "train")
        _check_k(k, train.shape[1])
        users = np.arange(train.shape[0]) if users is None else np.asarray(users, dtype=np.int64)
        scores = np.round(self.score_users(train, users), _DECIMALS)
        seen = train[users]
        scores[seen.nonzero()] = -np.inf
        tie_break = np.broadcast_to(self.popularity_rank_, scores.shape)
        order = np.lexsort((tie_break, -scores), axis=-1)
        return order[:, :k]


class PopularityRecommender(_Recommender):
    """Baseline: recommend the items most customers bought, minus those the user has."""

    def fit(self, train: sp.spmatrix) -> "PopularityRecommender":
        self._fit_popularity(_as_csr(train, "train"))
        return self

    def score_users(self, train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.tile(self.popularity_.astype(np.float64), (len(users), 1))


class ItemToItemRecommender(_Recommender):
    """Amazon's item-to-item CF: a similar-items table built offline, cheap look-ups online.

    Args:
        n_similar: keep only each item's ``n_similar`` most similar items (``None``: the full table).

    Attributes (after :meth:`fit`):
        table_: ``(n_items, n_items)`` CSR similar-items table.
        popularity_: ``(n_items,)`` training purchase counts (used only to break ties / fill up).
    """

    def __init__(self, n_similar: int | None = None) -> None:
        if n_similar is not None and (not isinstance(n_similar, (int, np.integer)) or n_similar < 1):
            raise ValueError(f"n_similar must be a positive integer or None, got {n_similar!r}")
        self.n_similar = n_similar

    def fit(self, train: sp.spmatrix) -> "ItemToItemRecommender":
        train = _as_csr(train, "train")
        self._fit_popularity(train)
        table = item_cosine_similarity(train)
        self.table_ = table if self.n_similar is None else truncate_top_n(table, self.n_similar)
        return self

    def score_users(self, train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        return np.asarray((train[users] @ self.table_).todense())

    def recommend(self, history: Sequence[int], k: int = 10) -> np.ndarray:
        """Online recommendation for one customer from their purchased items (``(k,)`` item indices).

        Touches only the table rows of the ``len(history)`` items: ``O(|h| * n_similar + k)``
        work, independent of the number of customers and of the catalogue size. Gives the same
        list as :meth:`recommend_all` for that customer.
        """
        self._check_fitted()
        _check_k(k, self.n_items_)
        history = np.unique(np.asarray(history, dtype=np.int64))
        if len(history) and (history.min() < 0 or history.max() >= self.n_items_):
            raise ValueError(f"history holds item indices outside [0, {self.n_items_})")
        rows = self.table_[history]
        candidates, inverse = np.unique(rows.indices, return_inverse=True)
        scores = np.round(np.bincount(inverse, weights=rows.data, minlength=len(candidates)), _DECIMALS)
        unseen = ~np.isin(candidates, history) & (scores > 0)
        candidates, scores = candidates[unseen], scores[unseen]
        ranked = candidates[np.lexsort((self.popularity_rank_[candidates], -scores))][:k]
        if len(ranked) < k:  # too few similar items: fill up with the most popular unseen items
            taken = set(history.tolist()) | set(ranked.tolist())
            fill = [i for i in self.popularity_order_[: k + len(taken)] if i not in taken][: k - len(ranked)]
            ranked = np.concatenate([ranked, np.asarray(fill, dtype=np.int64)])
        return ranked.astype(np.int64)

    def users_for_item(self, train: sp.spmatrix, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The marketing direction: which ``k`` customers to show ``item`` to.

        Scores each customer ``u`` without the item by ``sum_{i in h_u} S[i, item]``, the same raw
        sum the item -> user direction uses. Returns ``(users, scores)``, best first.
        """
        self._check_fitted()
        train = _as_csr(train, "train")
        if not 0 <= item < self.n_items_:
            raise ValueError(f"item must lie in [0, {self.n_items_}), got {item!r}")
        scores = np.asarray((train @ self.table_[:, item]).todense()).ravel()
        scores[train[:, item].nonzero()[0]] = -np.inf
        order = np.lexsort((np.arange(len(scores)), -np.round(scores, _DECIMALS)))[:k]
        return order, scores[order]


class UserKNNRecommender(_Recommender):
    """Baseline: user-based CF. Score items by the cosine similarity of the ``k`` most similar users.

    Each user's ``k`` nearest neighbours (cosine of binary purchase rows, the user excluded) vote
    for their items with weight = similarity. Needs the ``(n_users, n_users)`` similarity matrix,
    which is what makes it expensive at Amazon's scale.
    """

    def __init__(self, k_neighbours: int = 50) -> None:
        if not isinstance(k_neighbours, (int, np.integer)) or k_neighbours < 1:
            raise ValueError(f"k_neighbours must be a positive integer, got {k_neighbours!r}")
        self.k_neighbours = k_neighbours

    def fit(self, train: sp.spmatrix) -> "UserKNNRecommender":
        train = _as_csr(train, "train")
        self._fit_popularity(train)
        self.train_ = (train > 0).astype(np.float64).tocsr()
        norms = np.sqrt(np.asarray(self.train_.sum(axis=1)).ravel())  # binary rows: ||r_u||^2 = |h_u|
        inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        self.normalised_ = (sp.diags(inverse) @ self.train_).tocsr()
        self.normalised_T_ = self.normalised_.T.tocsr()
        return self

    def neighbour_weights(self, users: np.ndarray) -> np.ndarray:
        """``(len(users), n_users)`` cosine weights of training users, all but the top-k zeroed."""
        self._check_fitted()
        sim = np.asarray((self.normalised_[users] @ self.normalised_T_).todense())
        sim[np.arange(len(users)), users] = 0.0  # a user is not their own neighbour
        k = min(self.k_neighbours, sim.shape[1] - 1)
        # Keep every similarity above the k-th largest, then the lowest-id users among those equal to
        # it: linear time like argpartition, but deterministic on every numpy (argpartition's order
        # among ties is unspecified and changed in numpy 2).
        kth = -np.partition(-sim, k - 1, axis=1)[:, k - 1:k]                 # (B, 1)
        above = sim > kth
        ties = sim == kth
        keep = above | (ties & (np.cumsum(ties, axis=1) <= k - above.sum(axis=1, keepdims=True)))
        sim[~keep] = 0.0
        return sim

    def score_users(self, train: sp.csr_matrix, users: np.ndarray) -> np.ndarray:
        # A cheap structural check (shape, nnz, row pointers): a full comparison of the matrices would
        # cost as much as the scoring and would be timed with it.
        if (train.shape != self.train_.shape or train.nnz != self.train_.nnz
                or not np.array_equal(train.indptr, self.train_.indptr)):
            raise ValueError("UserKNNRecommender scores the users it was fitted on: pass the same train matrix")
        return np.asarray((self.train_.T @ self.neighbour_weights(users).T).T)


# --------------------------------------------------------------------------------- metrics
def evaluate_top_k(recommended: np.ndarray, test: sp.spmatrix, users: np.ndarray, n_items: int | None = None
                   ) -> dict[str, float]:
    """HR@k, precision@k, recall@k and catalogue coverage of top-k lists.

    Args:
        recommended: ``(len(users), k)`` item indices, row ``r`` for user ``users[r]``.
        test: ``(n_users, n_items)`` held-out purchases.
        users: the evaluated users (each should have at least one test item).
        n_items: catalogue size for coverage (default ``test.shape[1]``).

    Returns:
        ``{"hr": ..., "precision": ..., "recall": ..., "coverage": ...}``: HR = share of users with
        at least one hit; precision = hits / k; recall = hits / |test items|, each averaged over
        users; coverage = distinct recommended items / catalogue size.
    """
    test = _as_csr(test, "test")
    recommended = np.asarray(recommended)
    users = np.asarray(users)
    if recommended.ndim != 2 or len(recommended) != len(users):
        raise ValueError(f"recommended must be (len(users), k) = ({len(users)}, k), got {recommended.shape}")
    k = recommended.shape[1]
    truth = test[users]
    n_relevant = np.diff(truth.indptr)
    if (n_relevant == 0).any():
        raise ValueError("every evaluated user needs at least one test item (use InteractionSplit.eval_users)")
    hits = np.asarray(truth[np.arange(len(users))[:, None], recommended].todense()).sum(axis=1)
    n_items = test.shape[1] if n_items is None else n_items
    return {"hr": float(np.mean(hits > 0)), "precision": float(np.mean(hits / k)),
            "recall": float(np.mean(hits / n_relevant)),
            "coverage": float(len(np.unique(recommended)) / n_items)}


# --------------------------------------------------------------------------------- helpers
def _as_csr(matrix, name: str) -> sp.csr_matrix:
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix)
        if matrix.ndim != 2:
            raise ValueError(f"{name} must be a 2-d (n_users, n_items) matrix, got shape {matrix.shape}")
    matrix = sp.csr_matrix(matrix)
    if matrix.nnz and matrix.data.min() < 0:
        raise ValueError(f"{name} must be non-negative (purchases or ratings)")
    return matrix


def _check_k(k: int, n_items: int) -> None:
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= n_items:
        raise ValueError(f"k must be an integer in [1, n_items={n_items}], got {k!r}")
