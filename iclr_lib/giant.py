"""GIANT: node features from self-supervised multi-scale neighbourhood prediction
(Chien, Chang, Hsieh, Yu, Zhang, Milenkovic, Dhillon; ICLR 2022).

GIANT fine-tunes a text encoder on a self-supervised task: from the text of node ``i``, predict the
set of its neighbours ``A_i``. With one label per node this is *extreme multi-label classification*
(XMC), and GIANT solves it with XR-Transformer: the labels (nodes) are clustered into a tree, and the
encoder is trained coarse to fine, first to predict which *clusters* a node's neighbours fall in,
then finer clusters, then the neighbours themselves. The encoder's embeddings become the node
features of an ordinary MLP or GNN.

The pieces, in the order of the chapter:

- Data: :func:`load_citeseer_tag` (CiteSeer with raw text, a torch-geometric ``Data``).
- Graph-agnostic features: :func:`tfidf_features` and :func:`lsa_features`.
- XMC with PECOS (``libpecos``): :func:`patch_pecos` (two fixes that libpecos 1.2.8 needs under
  numpy 2 and scipy >= 1.14), :func:`neighbourhood_matrix`, :func:`pifa_label_embeddings` (written
  out; equal to ``LabelEmbeddingFactory.create(..., method="pifa")``), :func:`build_label_tree`
  (``Indexer``, balanced spherical k-means), :func:`level_targets` (the multi-resolution ``Y^(t)``),
  :func:`train_xr_linear`, :func:`precision_recall_at_k`, :func:`popularity_ranking`.
- The GIANT encoder: :class:`TfidfEncoder` (any ``nn.Module`` mapping rows to vectors will do) and
  :func:`train_xr_encoder`, the XR-Transformer recipe (levels, squared hinge on a shortlist of
  teacher-forced and matcher-aware negatives, each level starting from the last); the ablation
  :func:`train_link_prediction_encoder`; :func:`giant_features` runs everything from a ``Data``.
- Downstream: :func:`label_split`, :func:`node_classification` (MLP or GraphSAGE).

Shapes: ``n`` nodes, ``V`` vocabulary size, ``d`` embedding size, ``K_t`` clusters at level ``t``.
"""
from __future__ import annotations

import time
import types
from dataclasses import dataclass, field, replace
from typing import Literal, Sequence

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import nn

Negatives = Literal["tfn", "man", "tfn+man", "none"]

CITESEER_CLASSES = ("Agents", "AI", "DB", "IR", "ML", "HCI")


# ----------------------------------------------------------------------------- libpecos under numpy 2
def _get_index_dtype(arrays=(), maxval=None, check_contents=False):
    """``scipy.sparse``'s old ``sputils.get_index_dtype``: int32 if every array (and ``maxval``) fits
    in int32, else int64. libpecos passes a single array as ``arrays``."""
    if isinstance(arrays, np.ndarray):
        arrays = (arrays,)
    info = np.iinfo(np.int32)
    if maxval is not None and maxval > info.max:
        return np.int64
    for a in arrays:
        a = np.asarray(a)
        if np.can_cast(a.dtype, np.int32):
            continue
        if check_contents and (a.size == 0 or (np.issubdtype(a.dtype, np.integer)
                                               and info.min <= a.min() and a.max() <= info.max)):
            continue
        return np.int64
    return np.int32


def _upcast(*dtypes):
    """``scipy.sparse``'s old ``sputils.upcast``: the smallest sparse-supported dtype holding all."""
    out = np.result_type(*dtypes)
    if out == np.float16:
        out = np.dtype(np.float32)
    return out.type


class _SparseWithSputils:
    """``scipy.sparse`` as libpecos's ``smat_util`` sees it: everything forwarded, plus the two
    ``sputils`` helpers that scipy 1.14 removed from its public namespace."""

    sputils = types.SimpleNamespace(get_index_dtype=_get_index_dtype, upcast=_upcast)

    def __getattr__(self, name):
        return getattr(sp, name)


def _cs_matrix(arg1, mat_type, shape=None, dtype=None, copy=False, check_contents=False):
    """libpecos's ``smat_util.cs_matrix`` with numpy 2's copy rule: ``copy=False`` means "copy only
    if needed" (``np.asarray``); numpy 2's ``np.array(..., copy=False)`` raises instead."""
    data, indices, indptr = arg1
    as_array = np.array if copy else np.asarray
    ret = mat_type(shape, dtype=dtype)
    ret.indices = as_array(indices, dtype=_get_index_dtype(indices, check_contents=check_contents))
    ret.indptr = as_array(indptr, dtype=_get_index_dtype(indptr, check_contents=check_contents))
    ret.data = as_array(data, dtype=dtype)
    return ret


def patch_pecos() -> bool:
    """Let libpecos 1.2.8 run under numpy 2 and scipy >= 1.14; returns whether it patched anything.

    libpecos's compiled core loads through ctypes and works under numpy 2; two pure-Python calls in
    ``pecos/utils/smat_util.py`` do not: ``scipy.sparse.sputils.get_index_dtype`` / ``upcast`` (gone
    from scipy's public namespace in 1.14) and ``np.array(x, copy=False)`` (an error under numpy 2
    when a copy is needed). This replaces exactly those, in that module only, and does nothing under
    numpy 1 with scipy < 1.14 (the book's pinned environment). Called by every function here that uses
    PECOS; idempotent. ``tests/test_giant.py`` checks the replacements against the originals.
    """
    from pecos.utils import smat_util

    if getattr(smat_util, "_iclr_lib_patched", False):
        return True
    try:
        old_scipy = callable(sp.sputils.get_index_dtype) and callable(sp.sputils.upcast)
    except AttributeError:
        old_scipy = False
    if old_scipy and np.lib.NumpyVersion(np.__version__) < "2.0.0":
        return False
    smat_util.smat = _SparseWithSputils()
    smat_util.cs_matrix = _cs_matrix
    smat_util._iclr_lib_patched = True
    return True


# ----------------------------------------------------------------------------- data
def parse_citeseer_tag(texts: str, cites: str):
    """Parse CiteSeer-with-text (the TAPE files) into a torch-geometric ``Data``.

    ``texts`` is the content of ``citeseer_texts.txt`` (records of three lines: paper id, text,
    class name); ``cites`` that of ``citeseer.cites`` (``cited<TAB>citing`` per line). Citations whose
    two papers both have a text record and differ are kept and made undirected.

    Returns ``Data`` with ``edge_index (2, 2E)`` (both directions, sorted, no duplicates),
    ``y (n,)`` class ids, ``texts`` (list of ``n`` strings), ``paper_ids`` and ``class_names``.
    """
    from torch_geometric.data import Data
    from torch_geometric.utils import coalesce, to_undirected

    lines = texts.split("\n")
    if len(lines) % 3:
        raise ValueError(f"texts must hold records of exactly 3 lines, got {len(lines)} lines")
    ids, docs, labels = lines[0::3], lines[1::3], lines[2::3]
    unknown = sorted(set(labels) - set(CITESEER_CLASSES))
    if unknown:
        raise ValueError(f"unknown class names {unknown[:5]}; expected {CITESEER_CLASSES}")
    index = {pid: i for i, pid in enumerate(ids)}
    pairs = []
    for line in cites.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[0] in index and parts[1] in index and parts[0] != parts[1]:
            pairs.append((index[parts[1]], index[parts[0]]))
    edge_index = torch.tensor(pairs, dtype=torch.long).T.reshape(2, -1)
    edge_index = coalesce(to_undirected(edge_index, num_nodes=len(ids)), num_nodes=len(ids))
    y = torch.tensor([CITESEER_CLASSES.index(c) for c in labels], dtype=torch.long)
    return Data(edge_index=edge_index, y=y, num_nodes=len(ids), texts=docs, paper_ids=ids,
                class_names=list(CITESEER_CLASSES))


def load_citeseer_tag():
    """CiteSeer with raw text through the registry: 3,186 nodes, 4,225 undirected edges, 6 classes."""
    from .data import fetch

    root = fetch("citeseer_tag", ["citeseer_texts.txt", "citeseer.cites"], verbose=False)
    return parse_citeseer_tag((root / "citeseer_texts.txt").read_text(encoding="utf-8"),
                              (root / "citeseer.cites").read_text(encoding="utf-8"))


# ----------------------------------------------------------------------------- graph-agnostic features
def tfidf_features(texts: Sequence[str], ngram_range: tuple[int, int] = (1, 2), min_df: int = 5,
                   max_df: float = 0.98) -> sp.csr_matrix:
    """``(n, V)`` float32 L2-normalised TF-IDF of word n-grams (sublinear tf), sorted indices.

    The official GIANT pipeline uses PECOS's TF-IDF of word uni- and bi-grams (plus character
    tri-grams); scikit-learn's vectoriser computes the same kind of matrix.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) == 0:
        raise ValueError("texts must not be empty")
    vec = TfidfVectorizer(ngram_range=ngram_range, min_df=min_df, max_df=max_df, sublinear_tf=True,
                          dtype=np.float32)
    X = vec.fit_transform(list(texts)).tocsr()
    X.sort_indices()
    return X


def lsa_features(X: sp.csr_matrix, dim: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Latent semantic analysis: ``(features (n, dim), components (dim, V))``, the exact truncated SVD.

    ``X = U S V^T``; ``features = U_dim S_dim = X @ components.T`` with ``components = V_dim^T``
    (orthonormal rows, signs fixed so that each row's largest entry is positive). Computed from the
    eigenvectors of the small ``(n, n)`` Gram matrix ``X X^T``, which is exact and, with ``n`` in the
    thousands, faster than a randomised SVD of the wide ``X``. Our stand-in for a graph-agnostic
    "default" feature (ogbn-arxiv's are averaged word2vec vectors, also computed from text alone).
    """
    from scipy.linalg import eigh

    n = X.shape[0]
    if not 1 <= dim < min(X.shape):
        raise ValueError(f"dim must be in [1, {min(X.shape)}), got {dim}")
    gram = (X @ X.T).toarray().astype(np.float64) if sp.issparse(X) else np.asarray(X, np.float64) @ np.asarray(X, np.float64).T
    eigval, U = eigh(gram, subset_by_index=[n - dim, n - 1])
    eigval, U = eigval[::-1].clip(min=1e-12), U[:, ::-1]
    singular = np.sqrt(eigval)
    components = np.asarray(X.T @ U).T / singular[:, None]                       # (dim, V) = V^T
    flip = np.sign(components[np.arange(dim), np.abs(components).argmax(1)])
    components *= flip[:, None]
    features = U * singular * flip
    return np.ascontiguousarray(features, dtype=np.float32), np.ascontiguousarray(components, dtype=np.float32)


# ----------------------------------------------------------------------------- XMC: labels, PIFA, tree
def neighbourhood_matrix(edge_index: torch.Tensor, num_nodes: int) -> sp.csr_matrix:
    """The XMC label matrix ``Y (n, n)``: ``Y_ij = 1`` iff ``j`` is a neighbour of ``i`` (float32, sorted)."""
    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2:
        raise ValueError(f"edge_index must be (2, E), got {ei.shape}")
    Y = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.float32), (ei[0], ei[1])), shape=(num_nodes, num_nodes))
    Y.sum_duplicates()
    Y.data[:] = 1.0
    Y.sort_indices()
    return Y


def _l2_rows(M):
    from sklearn.preprocessing import normalize

    return normalize(M, norm="l2", axis=1)


def pifa_label_embeddings(Y: sp.csr_matrix, X: sp.csr_matrix | np.ndarray):
    """PIFA ("positive instance feature aggregation") label embeddings ``Z (L, V)``.

    ``z_l = normalize(sum_i Yhat_il x_i)`` with ``Yhat`` the row-normalised ``Y``: a label (here a node)
    is described by the average text of the nodes that have it as a neighbour. Same format as ``X``.
    """
    if Y.shape[0] != X.shape[0]:
        raise ValueError(f"Y and X must have the same number of rows, got {Y.shape[0]} and {X.shape[0]}")
    Z = _l2_rows(sp.csr_matrix(Y)).T @ X
    Z = _l2_rows(Z)
    if sp.issparse(Z):
        Z = Z.tocsr().astype(np.float32)
        Z.sort_indices()
        return Z
    return np.ascontiguousarray(Z, dtype=np.float32)


def build_label_tree(Z, nr_splits: int = 16, max_leaf_size: int = 16, seed: int = 0) -> list[sp.csr_matrix]:
    """The hierarchical label tree by balanced spherical k-means (PECOS ``Indexer``, ``hierarchicalkmeans``).

    Returns the cluster chain ``[C^(1), ..., C^(D)]`` coarse to fine as csr 0/1 matrices: ``C^(t)`` is
    ``(K_t, K_{t-1})`` and maps each level-``t`` cluster to its parent (``K_0 = 1``); the last one is
    ``(L, K_{D-1})`` and maps labels to the finest clusters. Every row has exactly one 1.
    """
    patch_pecos()
    from pecos.xmc import Indexer

    Zc = Z.tocsr().astype(np.float32) if sp.issparse(Z) else np.ascontiguousarray(Z, dtype=np.float32)
    chain = Indexer.gen(Zc, indexer_type="hierarchicalkmeans", nr_splits=nr_splits,
                        max_leaf_size=max_leaf_size, seed=seed)
    return [sp.csr_matrix(C, dtype=np.float32) for C in chain]


def level_targets(Y: sp.csr_matrix, chain: Sequence[sp.csr_matrix]) -> list[sp.csr_matrix]:
    """The multi-resolution targets ``[Y^(1), ..., Y^(D)]``, coarse to fine (``Y^(D) = Y``).

    ``Y^(t) = 1[Y M_t > 0]`` with ``M_t (L, K_t)`` mapping labels to their level-``t`` cluster: row ``i``
    says which clusters node ``i``'s neighbours fall in. The first chain entry (the root split) is
    skipped when it has a single column, as PECOS does.
    """
    out = [sp.csr_matrix(Y, dtype=np.float32)]
    for C in reversed(chain[1:]):
        Yt = (out[-1] @ C).tocsr()
        Yt.data[:] = 1.0
        Yt.sort_indices()
        out.append(Yt.astype(np.float32))
    return out[::-1]


def cluster_membership(chain: Sequence[sp.csr_matrix]) -> list[np.ndarray]:
    """For every level of the tree (coarse to fine, as :func:`level_targets`), the ``(L,)`` cluster id of
    each label; the last level is the labels themselves (``arange(L)``)."""
    L = chain[-1].shape[0]
    return [np.asarray(M.argmax(1)).ravel() for M in level_targets(sp.identity(L, format="csr", dtype=np.float32), chain)]


def train_xr_linear(X: sp.csr_matrix, Y: sp.csr_matrix, chain: Sequence[sp.csr_matrix]):
    """PECOS XR-Linear (a linear one-vs-rest ranker at every tree level, beam search at prediction)."""
    patch_pecos()
    from pecos.utils.cluster_util import ClusterChain
    from pecos.xmc.xlinear.model import XLinearModel

    X = sp.csr_matrix(X, dtype=np.float32)
    X.sort_indices()
    Y = sp.csr_matrix(Y, dtype=np.float32)
    Y.sort_indices()
    return XLinearModel.train(X, Y, C=ClusterChain([sp.csc_matrix(C, dtype=np.float32) for C in chain]))


def precision_recall_at_k(Y_true: sp.csr_matrix, scores, k: int = 10) -> tuple[float, float]:
    """``(P@k, R@k)`` averaged over rows with at least one true label.

    ``scores`` is a dense ``(n, L)`` array or a sparse matrix of predicted scores (missing = -inf).
    ``P@k = |top_k ∩ true| / k``; ``R@k = |top_k ∩ true| / |true|``.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    Y_true = sp.csr_matrix(Y_true)
    S = scores.toarray() if sp.issparse(scores) else np.asarray(scores, dtype=np.float64)
    if sp.issparse(scores):
        S = np.where(S != 0, S, -np.inf)
    if S.shape != Y_true.shape:
        raise ValueError(f"scores must have shape {Y_true.shape}, got {S.shape}")
    top = np.argsort(-S, axis=1, kind="stable")[:, :k]
    hits = np.asarray(Y_true[np.arange(S.shape[0])[:, None], top].todense()) > 0
    finite = np.take_along_axis(S, top, 1) > -np.inf
    hits &= finite
    n_true = np.diff(Y_true.indptr)
    rows = n_true > 0
    return float(hits[rows].sum(1).mean() / k), float((hits[rows].sum(1) / n_true[rows]).mean())


def popularity_ranking(Y_train: sp.csr_matrix, n_rows: int) -> np.ndarray:
    """The popularity baseline: every row gets the same scores, each label's frequency in ``Y_train``."""
    counts = np.asarray(Y_train.sum(0)).ravel().astype(np.float64)
    return np.broadcast_to(counts, (n_rows, counts.size))


# ----------------------------------------------------------------------------- the GIANT encoder
def sparse_rows_to_torch(X: sp.csr_matrix, rows: np.ndarray | None = None) -> torch.Tensor:
    """Rows of a csr matrix as a torch sparse CSR tensor ``(len(rows), V)`` float32."""
    import warnings

    sub = sp.csr_matrix(X if rows is None else X[rows])
    with warnings.catch_warnings():   # torch calls its sparse CSR support "beta"; we only read it (TfidfEncoder)
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.as_tensor(sub.indptr, dtype=torch.int64),
                                       torch.as_tensor(sub.indices, dtype=torch.int64),
                                       torch.as_tensor(sub.data, dtype=torch.float32), size=sub.shape)


class TfidfEncoder(nn.Module):
    """A small text encoder over TF-IDF rows: ``e = P x + MLP(P x)``, ``(B, V) sparse -> (B, d)``.

    ``P (V -> d)`` starts at the LSA projection (``components``), and the residual MLP's last layer
    starts at zero, so the *untrained* encoder outputs exactly the LSA features: the role BERT's
    pre-trained weights play in GIANT. Fine-tuning then changes both parts. Any ``nn.Module`` that
    maps the same inputs to ``(B, d)`` can replace it in :func:`train_xr_encoder` (with internet, a
    pre-trained transformer over the raw texts).
    """

    def __init__(self, components: np.ndarray, hidden: int = 512) -> None:
        super().__init__()
        d, V = components.shape
        self.projection = nn.Parameter(torch.tensor(components.T, dtype=torch.float32).contiguous())   # a copy, row-major
        self.residual = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        nn.init.zeros_(self.residual[2].weight)
        nn.init.zeros_(self.residual[2].bias)
        self.dim = d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.sparse_csr:   # P x as a weighted bag of word vectors: the fastest sparse product on CPU
            crow = x.crow_indices()
            h = F.embedding_bag(x.col_indices(), self.projection, crow[:-1], mode="sum",
                                per_sample_weights=x.values())
        else:
            h = torch.sparse.mm(x, self.projection) if x.is_sparse else x @ self.projection
        return h + self.residual(h)


def squared_hinge_loss(scores: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """XR-Transformer's loss: ``max(0, 1 - y s)^2`` with ``y = 2 * target - 1``, averaged over each
    instance's entries where ``mask`` is true (all entries when ``mask`` is ``None``), then over the
    batch, as PECOS's ``HingeLoss`` does. All ``(B, K)``."""
    y = 2.0 * (targets > 0).to(scores.dtype) - 1.0
    loss = F.relu(1.0 - y * scores) ** 2
    if mask is None:
        return loss.mean()
    m = mask.to(scores.dtype)
    return ((loss * m).sum(1) / m.sum(1).clamp_min(1.0)).mean()


def shortlist(parent_true: sp.csr_matrix | None, parent_pred: sp.csr_matrix | None, C: sp.csr_matrix,
              negatives: Negatives) -> sp.csr_matrix | None:
    """The clusters (labels) each instance is trained on at one level, ``(n, K_t)`` 0/1, or ``None`` for all.

    ``"tfn"`` (teacher-forcing negatives): the children of the *true* parent clusters;
    ``"man"`` (matcher-aware negatives): the children of the parents the previous level *predicted*
    (its beam); ``"tfn+man"``: both; ``"none"``: every cluster (no shortlist). ``C (K_t, K_{t-1})``
    maps children to parents. The true clusters are always inside the tfn shortlist.
    """
    if negatives == "none" or (parent_true is None and parent_pred is None):
        return None
    if negatives not in ("tfn", "man", "tfn+man"):
        raise ValueError(f"negatives must be 'tfn', 'man', 'tfn+man' or 'none', got {negatives!r}")
    parents = None
    if "tfn" in negatives:
        parents = sp.csr_matrix(parent_true)
    if "man" in negatives:
        if parent_pred is None:
            raise ValueError("matcher-aware negatives need the previous level's predictions")
        parents = sp.csr_matrix(parent_pred) if parents is None else parents + sp.csr_matrix(parent_pred)
    M = (parents @ sp.csr_matrix(C).T).tocsr()
    M.data[:] = 1.0
    return M.astype(np.float32)


def beam_predictions(scores: np.ndarray, beam: int) -> sp.csr_matrix:
    """``(n, K)`` 0/1 csr with a 1 at each row's ``beam`` highest scores (the matcher's beam)."""
    n, K = scores.shape
    b = min(beam, K)
    top = np.argpartition(-scores, b - 1, axis=1)[:, :b]
    return sp.csr_matrix((np.ones(n * b, dtype=np.float32), (np.repeat(np.arange(n), b), top.ravel())), shape=(n, K))


@dataclass(frozen=True)
class XRConfig:
    """Hyper-parameters of :func:`train_xr_encoder`.

    Attributes:
        steps_per_level: optimiser steps at each level (one entry per level, or one for all).
        batch_size: instances per step.
        lr: Adam learning rate of the encoder; ``head_lr`` of the level's linear head.
        negatives: the shortlist (see :func:`shortlist`); XR-Transformer's default is ``"tfn+man"``.
        beam: clusters kept by the matcher for matcher-aware negatives (XR-Transformer's ``beam_size``).
        levels: which levels to train, e.g. ``(-1,)`` for the leaf level only; ``None`` for all.
        seed: seed of the batches and the heads' initialisation.
    """

    steps_per_level: int | tuple[int, ...] = 300
    batch_size: int = 256
    lr: float = 1e-3
    head_lr: float = 1e-2
    negatives: Negatives = "tfn+man"
    beam: int = 10
    levels: tuple[int, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        steps = (self.steps_per_level,) if isinstance(self.steps_per_level, int) else self.steps_per_level
        if not steps or min(steps) < 1:
            raise ValueError(f"steps_per_level must be >= 1, got {self.steps_per_level}")
        if self.batch_size < 1 or self.beam < 1:
            raise ValueError("batch_size and beam must be >= 1")
        if self.negatives not in ("tfn", "man", "tfn+man", "none"):
            raise ValueError(f"negatives must be 'tfn', 'man', 'tfn+man' or 'none', got {self.negatives!r}")


@dataclass
class XRResult:
    """What :func:`train_xr_encoder` returns: the fine-tuned ``encoder``, one ``heads`` entry per trained
    level (``nn.Linear(d, K_t)``), and per level the loss curve and the shortlist's mean size."""

    encoder: nn.Module
    heads: list[nn.Linear]
    levels: list[int]
    loss_history: list[list[float]] = field(default_factory=list)
    shortlist_size: list[float] = field(default_factory=list)
    seconds: float = 0.0


def _num_rows(X) -> int:
    return X.shape[0] if hasattr(X, "shape") else len(X)


def _rows(X, rows: np.ndarray):
    """The encoder's input for ``rows``: a torch sparse tensor (csr ``X``), a dense tensor (array ``X``),
    or the list of those texts (a list of strings ``X``, for an encoder that tokenises raw text)."""
    if sp.issparse(X):
        return sparse_rows_to_torch(X, rows)
    if isinstance(X, (list, tuple)):
        return [X[i] for i in rows]
    return torch.as_tensor(np.asarray(X)[rows], dtype=torch.float32)


def _embed_all(encoder: nn.Module, X, batch: int = 1024) -> torch.Tensor:
    n = _num_rows(X)
    with torch.no_grad():
        return torch.cat([encoder(_rows(X, np.arange(s, min(s + batch, n)))) for s in range(0, n, batch)])


def train_xr_encoder(encoder: nn.Module, X, targets: Sequence[sp.csr_matrix], chain: Sequence[sp.csr_matrix],
                     config: XRConfig = XRConfig(), progress: bool = False) -> XRResult:
    """Fine-tune ``encoder`` with the XR-Transformer recipe on the multi-resolution ``targets``.

    For each level ``t`` (coarse to fine), with ``K_t`` clusters:

    1. a linear head ``W_t`` is created; each row starts as its parent's row at level ``t - 1``
       (PECOS's ``bootstrap_method="inherit"``), the first level's rows at random;
    2. the shortlist ``M_t`` (:func:`shortlist`) is built from the true parent clusters (``tfn``) and
       the previous level's beam (``man``); the squared hinge loss is taken over the shortlist only;
    3. encoder and head are trained for ``steps_per_level`` Adam steps, starting from the encoder the
       previous level ended with;
    4. the level's beam (top ``beam`` clusters of every instance) is computed for the next level.

    ``X`` is ``(n, V)`` csr, ``(n, p)`` dense or a list of ``n`` raw texts, fed to ``encoder`` in row
    batches (a torch sparse tensor, a dense tensor or a list of strings); ``targets[t]`` is
    ``(n, K_t)``; ``chain`` is :func:`build_label_tree`'s output, whose last ``len(targets)`` entries
    map each level to its parent. The first trained level has no shortlist (all ``K_t`` clusters), so
    ``levels=(-1,)`` is plain neighbour prediction over all nodes. Nothing but ``X``, the targets and
    the tree is read (no node labels).
    """
    start = time.perf_counter()
    from tqdm.auto import tqdm

    D = len(targets)
    n = _num_rows(X)
    if n != targets[0].shape[0]:
        raise ValueError(f"X has {n} rows but the targets have {targets[0].shape[0]}")
    maps = list(chain[-D:])
    for t in range(D):
        if maps[t].shape[0] != targets[t].shape[1]:
            raise ValueError(f"level {t}: the tree has {maps[t].shape[0]} clusters but the targets {targets[t].shape[1]}")
    levels = list(range(D)) if config.levels is None else sorted({lv % D for lv in config.levels})
    steps = config.steps_per_level
    steps = [steps] * len(levels) if isinstance(steps, int) else list(steps)
    if len(steps) != len(levels):
        raise ValueError(f"steps_per_level has {len(steps)} entries for {len(levels)} levels")
    gen = torch.Generator().manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    result = XRResult(encoder=encoder, heads=[], levels=levels)
    prev_head, prev_level, prev_beam = None, None, None
    with torch.no_grad():
        d = encoder(_rows(X, np.arange(min(2, n)))).shape[1]
    for level, n_steps in zip(levels, steps):
        K = targets[level].shape[1]
        head = nn.Linear(d, K)
        with torch.no_grad():
            if prev_head is not None and prev_level == level - 1:
                parent = torch.as_tensor(maps[level].indices.astype(np.int64))     # (K,) parent of each child
                head.weight.copy_(prev_head.weight[parent])
                head.bias.copy_(prev_head.bias[parent])
            else:
                head.weight.normal_(0.0, 0.01, generator=gen)
                head.bias.zero_()
        M = None   # the first trained level (and any level whose parent level was not trained) sees all clusters
        if level > 0 and prev_level == level - 1:
            M = shortlist(targets[level - 1], prev_beam, maps[level], config.negatives)
        if M is not None:   # the true clusters must be trained on, whatever the negatives
            M = (M + targets[level]).tocsr()
            M.data[:] = 1.0
        result.shortlist_size.append(float(M.getnnz(1).mean()) if M is not None else float(K))
        opt = torch.optim.Adam([{"params": encoder.parameters(), "lr": config.lr},
                                {"params": head.parameters(), "lr": config.head_lr}])
        losses = []
        encoder.train()
        order = rng.permutation(n)
        pos = 0
        for _ in tqdm(range(n_steps), disable=not progress, desc=f"level {level} ({K} clusters)", leave=False):
            if pos + config.batch_size > n:
                order, pos = rng.permutation(n), 0
            rows = order[pos:pos + config.batch_size]
            pos += config.batch_size
            scores = head(encoder(_rows(X, rows)))
            y = torch.as_tensor(targets[level][rows].toarray())
            mask = None if M is None else torch.as_tensor(M[rows].toarray()) > 0
            loss = squared_hinge_loss(scores, y, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        encoder.eval()
        result.heads.append(head)
        result.loss_history.append(losses)
        with torch.no_grad():
            level_scores = head(_embed_all(encoder, X)).numpy()
        prev_head, prev_level, prev_beam = head, level, beam_predictions(level_scores, config.beam)
    result.seconds = time.perf_counter() - start
    return result


def train_link_prediction_encoder(encoder: nn.Module, X, edge_index: torch.Tensor, steps: int = 600,
                                  batch_size: int = 256, lr: float = 1e-3, seed: int = 0,
                                  progress: bool = False) -> tuple[nn.Module, list[float]]:
    """The ablation: fine-tune ``encoder`` by link prediction instead of neighbourhood prediction.

    Each step takes ``batch_size`` edges ``(i, j)`` and as many random pairs, and minimises the BCE
    of ``sigmoid(e_i . e_j / sqrt(d))`` against 1 and 0 (the usual GAE-style objective with uniform
    negatives). Returns the encoder and the loss curve.
    """
    from tqdm.auto import tqdm

    ei = np.asarray(edge_index)
    if ei.ndim != 2 or ei.shape[0] != 2 or ei.shape[1] == 0:
        raise ValueError(f"edge_index must be a non-empty (2, E) array, got {ei.shape}")
    rng = np.random.default_rng(seed)
    n = _num_rows(X)
    opt = torch.optim.Adam(encoder.parameters(), lr=lr)
    losses = []
    encoder.train()
    for _ in tqdm(range(steps), disable=not progress, desc="link prediction", leave=False):
        pick = rng.integers(0, ei.shape[1], batch_size)
        src = np.concatenate([ei[0, pick], rng.integers(0, n, batch_size)])
        dst = np.concatenate([ei[1, pick], rng.integers(0, n, batch_size)])
        nodes, inv = np.unique(np.concatenate([src, dst]), return_inverse=True)
        e = encoder(_rows(X, nodes))
        pick_rows = torch.as_tensor(inv)   # index_select: its backward was deterministic here, plain indexing's was not
        a, b = e.index_select(0, pick_rows[:2 * batch_size]), e.index_select(0, pick_rows[2 * batch_size:])
        logits = (a * b).sum(1) / a.shape[1] ** 0.5
        labels = torch.cat([torch.ones(batch_size), torch.zeros(batch_size)])
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    encoder.eval()
    return encoder, losses


def held_out_rows(Y: sp.csr_matrix, fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(train_rows, held_out_rows)`` for self-supervised model selection: a random ``fraction`` of the
    nodes is held out (only those with at least one neighbour, so that there is something to find)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(Y.shape[0])
    cut = int(round((1.0 - fraction) * Y.shape[0]))
    train, held = np.sort(order[:cut]), np.sort(order[cut:])
    return train, held[np.diff(sp.csr_matrix(Y).indptr)[held] > 0]


def xr_neighbour_recall(encoder: nn.Module, X, targets: Sequence[sp.csr_matrix], chain: Sequence[sp.csr_matrix],
                        config: XRConfig, train_rows: np.ndarray, held_rows: np.ndarray, k: int = 10) -> float:
    """Held-out neighbour recall R@k of an XR fine-tuning run: the criterion that chooses its settings.

    ``encoder`` is fine-tuned on the rows ``train_rows`` only (their multi-resolution targets), then the
    last level's head ranks all ``L`` nodes for each held-out row, and R@k is measured against that
    row's true neighbours (``targets[-1]``). The tree is the method's own (built from the whole
    neighbourhood matrix's PIFA, which reads no node label). No node label is read.
    """
    result = train_xr_encoder(encoder, _rows_of(X, train_rows), [T[train_rows] for T in targets], chain, config)
    if result.levels[-1] != len(targets) - 1:
        raise ValueError("the run must train the last level, whose head ranks the nodes themselves")
    with torch.no_grad():
        scores = result.heads[-1](_embed_all(result.encoder, _rows_of(X, held_rows))).numpy()
    return precision_recall_at_k(targets[-1][held_rows], scores, k)[1]


def link_neighbour_recall(encoder: nn.Module, X, edge_index: torch.Tensor, train_rows: np.ndarray,
                          held_rows: np.ndarray, *, steps: int, lr: float, batch_size: int = 256,
                          seed: int = 0, k: int = 10) -> float:
    """Held-out neighbour recall R@k of a link-prediction run, the same criterion for the ablation.

    The encoder is trained on the edges between ``train_rows`` only; each held-out row then ranks all
    other nodes by the score the objective trains, ``e_i . e_j``, and R@k is measured against its
    true neighbours."""
    ei = np.asarray(edge_index)
    keep = np.zeros(_num_rows(X), bool)
    keep[train_rows] = True
    inner = ei[:, keep[ei[0]] & keep[ei[1]]]
    encoder, _ = train_link_prediction_encoder(encoder, X, torch.as_tensor(inner), steps=steps, lr=lr,
                                               batch_size=batch_size, seed=seed)
    emb = _embed_all(encoder, X).numpy().astype(np.float64)
    scores = emb[held_rows] @ emb.T
    scores[np.arange(len(held_rows)), held_rows] = -np.inf              # a node is not its own neighbour
    Y = neighbourhood_matrix(torch.as_tensor(ei), _num_rows(X))
    return precision_recall_at_k(Y[held_rows], scores, k)[1]


def _rows_of(X, rows: np.ndarray):
    if sp.issparse(X):
        out = sp.csr_matrix(X)[rows]
        out.sort_indices()
        return out
    if isinstance(X, (list, tuple)):
        return [X[i] for i in rows]
    return np.asarray(X)[rows]


def embed(encoder: nn.Module, X) -> np.ndarray:
    """``(n, d)`` float32 embeddings of all rows of ``X`` (the node features GIANT hands downstream)."""
    return _embed_all(encoder, X).numpy().astype(np.float32)


@dataclass(frozen=True)
class GiantConfig:
    """Everything :func:`giant_features` needs: text features, the tree and the encoder's training."""

    lsa_dim: int = 256
    nr_splits: int = 16
    max_leaf_size: int = 16
    hidden: int = 512
    xr: XRConfig = XRConfig()
    seed: int = 0


def giant_features(data, config: GiantConfig = GiantConfig(), progress: bool = False) -> dict:
    """The whole self-supervised pipeline from a ``Data`` with ``texts`` and ``edge_index``.

    TF-IDF -> LSA (the encoder's starting point) -> PIFA on the neighbourhood matrix -> label tree ->
    multi-resolution targets -> XR fine-tuning -> embeddings. ``data.y`` is never read. Returns a dict
    with ``features (n, d)``, ``lsa (n, d)``, ``tfidf``, ``chain``, ``targets`` and the ``xr`` result.
    """
    torch.manual_seed(config.seed)
    X = tfidf_features(data.texts)
    lsa, components = lsa_features(X, config.lsa_dim)
    Y = neighbourhood_matrix(data.edge_index, data.num_nodes)
    chain = build_label_tree(pifa_label_embeddings(Y, X), config.nr_splits, config.max_leaf_size, config.seed)
    targets = level_targets(Y, chain)
    encoder = TfidfEncoder(components, hidden=config.hidden)
    xr = train_xr_encoder(encoder, X, targets, chain, replace(config.xr, seed=config.seed), progress=progress)
    return {"features": embed(xr.encoder, X), "lsa": lsa, "tfidf": X, "components": components,
            "chain": chain, "targets": targets, "xr": xr}


# ----------------------------------------------------------------------------- downstream
def label_split(y: np.ndarray, per_class: int = 20, num_val: int = 500, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` node indices: ``per_class`` labelled nodes of every class (the Planetoid
    protocol), then ``num_val`` random validation nodes; all the rest are test nodes."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    classes = np.unique(y)
    if min((y == c).sum() for c in classes) <= per_class:
        raise ValueError(f"every class needs more than per_class={per_class} nodes")
    train = np.concatenate([rng.choice(np.flatnonzero(y == c), per_class, replace=False) for c in classes])
    rest = rng.permutation(np.setdiff1d(np.arange(len(y)), train))
    if num_val >= len(rest):
        raise ValueError(f"num_val={num_val} leaves no test nodes")
    return np.sort(train), np.sort(rest[:num_val]), np.sort(rest[num_val:])


def fraction_split(n: int, train: float = 0.6, val: float = 0.2, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train, val, test)`` node indices: a random ``train`` / ``val`` / rest split of ``n`` nodes
    (60/20/20 by default: a label rate closer to ogbn-arxiv's 54 % than the Planetoid protocol)."""
    if not (0.0 < train < 1.0 and 0.0 < val < 1.0 and train + val < 1.0):
        raise ValueError(f"need 0 < train, val and train + val < 1, got {train}, {val}")
    order = np.random.default_rng(seed).permutation(n)
    a, b = int(round(train * n)), int(round((train + val) * n))
    return np.sort(order[:a]), np.sort(order[a:b]), np.sort(order[b:])


class MLP(nn.Module):
    """``(n, p) -> (n, classes)``: Linear-ReLU-Dropout x (layers - 1), then Linear."""

    def __init__(self, p: int, hidden: int, classes: int, layers: int = 2, dropout: float = 0.5) -> None:
        super().__init__()
        sizes = [p] + [hidden] * (layers - 1)
        self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None) -> torch.Tensor:
        for lin in self.hidden:
            x = F.dropout(F.relu(lin(x)), self.dropout, self.training)
        return self.out(x)


class GraphSAGE(nn.Module):
    """Two mean-aggregator ``SAGEConv`` layers (torch-geometric): ``(n, p) -> (n, classes)``."""

    def __init__(self, p: int, hidden: int, classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        from torch_geometric.nn import SAGEConv

        self.conv1, self.conv2 = SAGEConv(p, hidden), SAGEConv(hidden, classes)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        x = F.dropout(F.relu(self.conv1(x, edge_index)), self.dropout, self.training)
        return self.conv2(x, edge_index)


def node_classification(features: np.ndarray, y: np.ndarray, edge_index: torch.Tensor, split: tuple,
                        model: Literal["mlp", "sage"] = "mlp", hidden: int = 256, epochs: int = 300,
                        lr: float = 0.01, weight_decay: float = 5e-4, standardize: str = "global",
                        seed: int = 0, patience: int | None = None) -> dict:
    """Train an MLP or GraphSAGE on ``features`` with the labelled nodes of ``split = (train, val, test)``.

    Features are centred and divided by one global standard deviation (``standardize="global"``,
    which keeps the relative scale of the dimensions) or by each column's (``"per_dim"``). The epoch
    with the best validation accuracy is kept; with ``patience``, training stops once that many epochs
    bring no better validation accuracy. No test label is used for any choice. Returns
    ``{"val": %, "test": %, "best_epoch": int}``.
    """
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be >= 1 or None, got {patience}")
    if model not in ("mlp", "sage"):
        raise ValueError(f"model must be 'mlp' or 'sage', got {model!r}")
    if standardize not in ("global", "per_dim"):
        raise ValueError(f"standardize must be 'global' or 'per_dim', got {standardize!r}")
    features = np.asarray(features, dtype=np.float32)
    if features.shape[0] != len(y):
        raise ValueError(f"features has {features.shape[0]} rows for {len(y)} labels")
    torch.manual_seed(seed)
    centred = features - features.mean(0)
    x = torch.as_tensor(centred / (centred.std(0) + 1e-8) if standardize == "per_dim"
                        else centred / (centred.std() + 1e-8))
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    train, val, test = (torch.as_tensor(s, dtype=torch.long) for s in split)
    classes = int(yt.max()) + 1
    net = MLP(x.shape[1], hidden, classes) if model == "mlp" else GraphSAGE(x.shape[1], hidden, classes)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay)

    views = {name: _receptive_field(nodes, edge_index, x.shape[0], hops=0 if model == "mlp" else 2)
             for name, nodes in (("train", train), ("val", val), ("test", test))}

    def forward(name: str) -> torch.Tensor:     # logits of the nodes of ``name``, from their receptive field only
        subset, sub_edges, where = views[name]
        return net(x[subset], sub_edges)[where]

    def predict(name: str) -> torch.Tensor:
        return forward(name).argmax(1)

    best = {"val": -1.0, "test": 0.0, "best_epoch": 0}
    for epoch in range(epochs):
        net.train()
        loss = F.cross_entropy(forward("train"), yt[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
        net.eval()
        with torch.no_grad():
            val_acc = 100.0 * (predict("val") == yt[val]).float().mean().item()
            if val_acc > best["val"]:
                best = {"val": val_acc, "test": 100.0 * (predict("test") == yt[test]).float().mean().item(),
                        "best_epoch": epoch + 1}
            elif patience is not None and epoch + 1 - best["best_epoch"] >= patience:
                break
    return best


def _receptive_field(nodes: torch.Tensor, edge_index: torch.Tensor, num_nodes: int, hops: int):
    """``(subset, sub_edge_index, where)``: the nodes within ``hops`` of ``nodes``, the edges among them
    (relabelled) and the positions of ``nodes`` in ``subset``. A ``hops``-layer mean-aggregation GNN
    computes exactly the same outputs for ``nodes`` on this subgraph as on the whole graph."""
    if hops == 0:
        return nodes, torch.empty(2, 0, dtype=torch.long), torch.arange(len(nodes))
    from torch_geometric.utils import k_hop_subgraph

    subset, sub_edges, where, _ = k_hop_subgraph(nodes, hops, edge_index, relabel_nodes=True, num_nodes=num_nodes)
    return subset, sub_edges, where
