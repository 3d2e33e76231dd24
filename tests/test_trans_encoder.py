"""Tests of iclr_lib.trans_encoder: the STS/SICK loaders, the offline encoders (ONNX conversion and
pooling checked against their references), the losses' closed forms, both distillation directions,
and that training never reads a gold score."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from iclr_lib import trans_encoder as te

SMALL = "paraphrase-MiniLM-L3-v2"
LARGE = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def stsb_test() -> te.STSPairs:
    return te.load_stsb("test")


@pytest.fixture(scope="module")
def small_bi() -> te.BiEncoder:
    torch.set_num_threads(2)
    return te.BiEncoder.from_name(SMALL)


@pytest.fixture(scope="module")
def large_bi() -> te.BiEncoder:
    return te.BiEncoder.from_name(LARGE)


# ------------------------------------------------------------------------------------------ data


def test_evaluation_sets_have_the_standard_sizes():
    sets = te.load_evaluation_sets()
    assert tuple(sets) == te.EVALUATION_SETS
    sizes = {name: len(data) for name, data in sets.items()}
    # SentEval's counts of scored pairs; SICK.txt (9,840 pairs) is the corrected release, its TEST part 4,906
    assert sizes == {"STS12": 3108, "STS13": 1500, "STS14": 3750, "STS15": 3000, "STS16": 1186,
                     "STS-B": 1379, "SICK-R": 4906}
    for name, data in sets.items():
        low = 1.0 if name == "SICK-R" else 0.0
        assert data.scores.min() >= low and data.scores.max() <= 5.0
        assert all(isinstance(s, str) and s for s in data.first + data.second)
        assert not any("\t" in s for s in data.first + data.second)


def test_stsb_and_sick_training_splits():
    assert [len(te.load_stsb(s)) for s in ("train", "dev", "test")] == [5749, 1500, 1379]
    assert [len(te.load_sick(s)) for s in ("train", "trial", "test")] == [4439, 495, 4906]
    first = te.load_stsb("train")
    assert first.first[0] == "A plane is taking off." and first.scores[0] == 5.0


def test_loaders_reject_unknown_splits():
    with pytest.raises(ValueError, match="split"):
        te.load_stsb("validation")
    with pytest.raises(ValueError, match="split"):
        te.load_sick("dev")
    with pytest.raises(ValueError, match="year"):
        te.load_sts_year("STS17")


def test_unlabelled_pairs_deduplicate_both_orders_and_carry_no_scores():
    data = te.STSPairs("toy", ["a", "b", "a", "c"], ["b", "a", "b", "c"], [1, 2, 3, 4])
    pairs = te.unlabelled_pairs(data, [("c", "c"), ("d", "a")])
    assert pairs == [("a", "b"), ("c", "c"), ("d", "a")]
    assert all(isinstance(p, tuple) and len(p) == 2 for p in pairs)
    with pytest.raises(TypeError, match="two strings"):
        te.unlabelled_pairs([("a", 3)])


def test_pairs_validation_and_subset():
    with pytest.raises(ValueError, match="same length"):
        te.STSPairs("bad", ["a"], ["b", "c"], [1.0])
    data = te.STSPairs("toy", list("abcdef"), list("ghijkl"), np.arange(6.0))
    sub = data.subset(3, seed=1)
    assert len(sub) == 3 and list(sub.scores) == sorted(sub.scores)
    assert np.isnan(data.without_scores().scores).all() and data.without_scores().pairs() == data.pairs()


# ------------------------------------------------------------------------------------------ encoders


def test_onnx_conversion_matches_the_onnx_graph(small_bi):
    """The converted BertModel gives the ONNX graph's own token vectors and mean-pooled sentence vectors,
    computed by onnx's reference runtime (the graph outputs ``onnx::Shape_422`` and ``461``)."""
    from onnx.reference import ReferenceEvaluator

    sentences = ["A man is playing a guitar.", "Two dogs run on the beach near the water."]
    batch = small_bi.tokenize(sentences)
    session = ReferenceEvaluator(str(te._minilm_l3_onnx()))
    tokens, pooled = session.run(["onnx::Shape_422", "461"], {"input_ids": batch["input_ids"].numpy(),
                                                               "attention_mask": batch["attention_mask"].numpy()})
    with torch.no_grad():
        hidden = small_bi.transformer(**{k: batch[k] for k in ("input_ids", "attention_mask")}).last_hidden_state
        ours = small_bi(sentences)
    mask = batch["attention_mask"].bool().numpy()
    assert np.allclose(hidden.numpy()[mask], tokens[mask], atol=1e-4)
    assert np.allclose(ours.numpy(), pooled, atol=1e-4)


def test_mean_pooling_matches_sentence_transformers(large_bi):
    from sentence_transformers import SentenceTransformer

    sentences = ["A plane is taking off.", "An air plane is taking off.", "short"]
    reference = SentenceTransformer(str(te._minilm_l6_dir()), device="cpu").encode(sentences, convert_to_tensor=True)
    ours = torch.nn.functional.normalize(large_bi.encode(sentences), dim=-1)
    assert torch.allclose(ours, reference.cpu(), atol=1e-5)


def test_encode_keeps_input_order(small_bi):
    sentences = ["a much longer sentence than the others in this list", "hi", "a cat"]
    together = small_bi.encode(sentences, batch_size=2)
    alone = torch.cat([small_bi.encode([s]) for s in sentences])
    assert torch.allclose(together, alone, atol=1e-5)


def test_starting_teachers_reproduce_the_recorded_baselines(small_bi, large_bi, stsb_test):
    """Deterministic STS-B test Spearman of the two teachers and their mean (catch pooling/tokeniser errors),
    at the official 32 tokens per sentence; the pilot of the research notes measured 81.80, 82.16, 83.48."""
    assert large_bi.max_length == small_bi.max_length == 32
    pairs = stsb_test.pairs()
    a, b = te.bi_scores(large_bi, pairs), te.bi_scores(small_bi, pairs)
    assert te.spearman(a, stsb_test.scores) == pytest.approx(81.80, abs=0.05)
    assert te.spearman(b, stsb_test.scores) == pytest.approx(82.16, abs=0.05)
    assert te.spearman((a + b) / 2, stsb_test.scores) == pytest.approx(83.48, abs=0.05)


def test_unknown_encoder_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown encoder"):
        te.load_backbone("MiniLM")


# ------------------------------------------------------------------------------------------ losses


def test_soft_bce_closed_form_and_gradient():
    x = torch.tensor([-2.0, 0.0, 1.5, 3.0], requires_grad=True)
    y = torch.tensor([0.0, 0.3, 0.9, 1.0])
    s = torch.sigmoid(x)
    loss = te.soft_bce(x, y)
    expected = -(y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()
    assert torch.allclose(loss, expected, atol=1e-6)
    loss.backward()
    assert torch.allclose(x.grad, (s - y).detach() / len(x), atol=1e-6)  # dL/dx = s(x) - y, per example


def test_soft_bce_rejects_targets_outside_unit_interval():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        te.soft_bce(torch.zeros(2), torch.tensor([-0.1, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        te.soft_bce(torch.zeros(2), torch.zeros(3))


def test_bi_mse_loss_closed_forms():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    same, orthogonal = u.clone() * 3, torch.tensor([[0.0, 1.0], [5.0, 0.0]])
    assert float(te.bi_mse_loss(u, same, torch.ones(2))) == pytest.approx(0.0, abs=1e-7)
    assert float(te.bi_mse_loss(u, orthogonal, torch.zeros(2))) == pytest.approx(0.0, abs=1e-7)
    assert float(te.bi_mse_loss(u, orthogonal, torch.ones(2))) == pytest.approx(1.0, abs=1e-6)
    assert float(te.bi_mse_loss(u, -u, torch.tensor([1.0, 0.0]))) == pytest.approx((4 + 1) / 2, abs=1e-6)


def test_mean_pseudo_labels_average_then_clamp():
    y = te.mean_pseudo_labels([torch.tensor([-0.4, 0.2, 1.0]), torch.tensor([0.0, 0.6, 1.2])])
    assert torch.allclose(y, torch.tensor([0.0, 0.4, 1.0]))
    with pytest.raises(ValueError, match="at least one"):
        te.mean_pseudo_labels([])


def test_spearman_and_evaluate():
    assert te.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(100.0)
    assert te.spearman([4, 3, 2, 1], [10, 20, 30, 40]) == pytest.approx(-100.0)
    with pytest.raises(ValueError, match="NaN"):
        te.spearman([1, 2], [np.nan, 1])
    data = te.STSPairs("toy", ["a", "b", "c"], ["x", "y", "z"], [0.0, 1.0, 2.0])
    out = te.evaluate(lambda pairs: torch.tensor([ord(p[0]) for p in pairs], dtype=torch.float), {"toy": data})
    assert out == {"toy": pytest.approx(100.0), "avg": pytest.approx(100.0)}
    with pytest.raises(ValueError, match="7-set"):
        te.seven_set_average({"STS12": 1.0})


def test_length_sorted_batches_cover_everything_once():
    lengths = [5, 1, 9, 3, 3, 7, 2]
    batches = te.length_sorted_batches(lengths, 3)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert [[lengths[i] for i in b] for b in batches] == [[1, 2, 3], [3, 5, 7], [9]]
    shuffled = te.length_sorted_batches(lengths, 3, shuffle=True, seed=4)
    assert sorted(map(tuple, shuffled)) == sorted(map(tuple, batches))
    assert shuffled == te.length_sorted_batches(lengths, 3, shuffle=True, seed=4)
    with pytest.raises(ValueError, match="batch_size"):
        te.length_sorted_batches(lengths, 0)


# ------------------------------------------------------------------------------------------ training


def test_cross_encoder_trains_on_both_orders(monkeypatch):
    seen: list[tuple[str, str]] = []
    original = te.soft_bce_step

    def spy(model, batch, y):
        seen.extend(batch)
        return original(model, batch, y)

    monkeypatch.setattr(te, "soft_bce_step", spy)
    model = te.CrossEncoder.from_name(SMALL)
    te.train_cross_encoder(model, [("a dog runs", "a cat sleeps"), ("rain", "sun")], torch.tensor([0.2, 0.7]),
                           batch_size=8, lr=1e-5)
    assert sorted(seen) == sorted([("a dog runs", "a cat sleeps"), ("a cat sleeps", "a dog runs"),
                                   ("rain", "sun"), ("sun", "rain")])


def test_training_rejects_bad_labels():
    model = te.CrossEncoder.from_name(SMALL)
    with pytest.raises(ValueError, match="shape"):
        te.train_cross_encoder(model, [("a", "b")], torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        te.train_cross_encoder(model, [("a", "b")], torch.tensor([-0.5]))
    with pytest.raises(ValueError, match="NaN"):
        te.train_bi_encoder(te.BiEncoder.from_name(SMALL), [("a", "b")], torch.tensor([np.nan]))


def test_both_distillation_directions_reduce_their_loss(small_bi):
    pairs = te.load_stsb("train").subset(48, seed=3).pairs()
    labels = te.mean_pseudo_labels([te.bi_scores(small_bi, pairs)])
    cross = te.CrossEncoder.from_name(SMALL)
    before = float(te.soft_bce(cross.score(pairs).logit(eps=1e-6), labels))
    te.train_cross_encoder(cross, pairs, labels, epochs=3, batch_size=16, lr=1e-4, seed=0)
    after = float(te.soft_bce(cross.score(pairs).logit(eps=1e-6), labels))
    assert after < before - 0.01, (before, after)

    student = te.BiEncoder.from_name(SMALL)
    targets = torch.full((len(pairs),), 0.5)
    mse = lambda: float(((te.bi_scores(student, pairs) - targets) ** 2).mean())
    first = mse()
    te.train_bi_encoder(student, pairs, targets, epochs=3, batch_size=16, lr=1e-4, seed=0)
    assert mse() < 0.5 * first, (first, mse())


def _one_round(collections: list[te.STSPairs]) -> list[torch.Tensor]:
    """Pairs -> bi labels -> a few cross steps -> cross labels -> a few bi steps; returns every weight."""
    torch.manual_seed(0)
    pairs = te.unlabelled_pairs(*collections)
    teacher = te.BiEncoder.from_name(SMALL)
    labels = te.mean_pseudo_labels([te.bi_scores(teacher, pairs)])
    cross = te.CrossEncoder.from_name(SMALL)
    te.train_cross_encoder(cross, pairs, labels, batch_size=8, lr=1e-4, max_steps=3)
    student = te.BiEncoder.from_name(SMALL)
    te.train_bi_encoder(student, pairs, te.cross_scores(cross, pairs), batch_size=8, lr=1e-4, max_steps=2)
    return [p.detach().clone() for p in list(cross.parameters()) + list(student.parameters())]


def test_gold_scores_are_never_read_during_training():
    data = [te.load_stsb("train").subset(12, seed=0), te.load_sick("train").subset(12, seed=0)]
    with_gold = _one_round(data)
    without_gold = _one_round([d.without_scores() for d in data])
    assert all(torch.equal(a, b) for a, b in zip(with_gold, without_gold))
    shuffled = [te.STSPairs(d.name, d.first, d.second, d.scores[::-1]) for d in data]
    assert all(torch.equal(a, b) for a, b in zip(with_gold, _one_round(shuffled)))


def test_soft_bce_exercise_check_accepts_the_solution_and_rejects_the_naive_formula():
    from iclr_lib.exercises.trans_encoder import check_soft_bce

    def stable(x, y):
        return (y * torch.nn.functional.softplus(-x) + (1 - y) * torch.nn.functional.softplus(x)).mean()

    def naive(x, y):
        s = torch.sigmoid(x)
        return -(y * torch.log(s) + (1 - y) * torch.log(1 - s)).mean()

    assert check_soft_bce(stable)
    with pytest.raises(AssertionError, match="softplus"):
        check_soft_bce(naive)
    with pytest.raises(AssertionError, match="expected"):
        check_soft_bce(lambda x, y: stable(x, y) * 2)


def test_each_loaded_backbone_is_an_independent_copy():
    _, first = te.load_backbone(SMALL)
    _, second = te.load_backbone(SMALL)
    with torch.no_grad():
        first.encoder.layer[0].output.dense.weight.add_(1.0)
    assert not torch.equal(first.encoder.layer[0].output.dense.weight, second.encoder.layer[0].output.dense.weight)


def test_micro_batches_give_the_same_gradient_as_whole_batches():
    pairs = te.load_stsb("train").subset(8, seed=5).pairs()
    labels = torch.linspace(0.1, 0.9, len(pairs))
    model = te.BiEncoder.from_name(SMALL).eval()   # no dropout: both chunkings must give the same arithmetic
    grads, losses = [], []
    for micro in (None, 3):
        model.zero_grad()
        losses.append(te.accumulate_gradients(model, te.bi_mse_step, pairs, labels, list(range(8)), micro))
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert losses[0] == pytest.approx(losses[1], abs=1e-6)
    assert len(grads[0]) == len(grads[1]) > 0
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(*grads))
    with pytest.raises(ValueError, match="micro_batch"):
        te.train_bi_encoder(te.BiEncoder.from_name(SMALL), pairs, labels, micro_batch=0)


def test_dev_selection_keeps_the_best_checkpoint_and_leaves_the_model_as_trained():
    """The official rule (sentence-transformers fit with an evaluator): evaluate every k steps and after
    the last one, keep the weights of the best score; the returned model is the end of the schedule."""
    pairs = te.load_stsb("train").subset(12, seed=2).pairs()
    labels = torch.linspace(0.1, 0.9, len(pairs))
    model = te.CrossEncoder.from_name(SMALL)
    scores, seen = iter([0.2, 0.9, 0.4, 0.5]), []

    def evaluator(m):
        seen.append({k: v.detach().clone() for k, v in m.state_dict().items()})
        return next(scores)

    log = te.train_cross_encoder(model, pairs, labels, batch_size=4, lr=1e-3, epochs=1, max_steps=5,
                                 evaluator=evaluator, evaluate_every=2)
    assert [s for s, _ in log.dev] == [2, 4, 5]           # every 2 steps, and after the last
    assert log.best_step == 4 and log.best_score == 0.9
    chosen = log.selected(model)
    assert all(torch.equal(chosen.state_dict()[k], seen[1][k]) for k in seen[1])
    assert not all(torch.equal(model.state_dict()[k], seen[1][k]) for k in seen[1])   # model: after step 5
    assert all(torch.equal(model.state_dict()[k], seen[2][k]) for k in seen[2])
    with pytest.raises(ValueError, match="evaluator"):
        te.train_bi_encoder(te.BiEncoder.from_name(SMALL), pairs, labels, evaluate_every=2)
    with pytest.raises(ValueError, match="without an evaluator"):
        te.train_bi_encoder(te.BiEncoder.from_name(SMALL), pairs, labels, max_steps=1).selected(model)


def test_mixed_precision_changes_scores_only_slightly(small_bi, stsb_test):
    """bfloat16 autocast (the official code trains with AMP) keeps float32 outputs close to float32's."""
    pairs = stsb_test.subset(64, seed=0).pairs()
    full = te.bi_scores(small_bi, pairs)
    small_bi.mixed_precision = True
    try:
        half = te.bi_scores(small_bi, pairs)
    finally:
        small_bi.mixed_precision = False
    assert half.dtype == torch.float32
    assert 0 < float((half - full).abs().max()) < 0.03
    cross = te.CrossEncoder.from_name(SMALL, mixed_precision=True)
    assert cross.score(pairs[:4]).dtype == torch.float32
    assert isinstance(te.fast_bfloat16(), bool)


@pytest.mark.parametrize("amx, avx512_bf16, expected", [(False, False, False), (True, False, True),
                                                        (False, True, True), (None, None, False)])
def test_fast_bfloat16_means_native_bfloat16(monkeypatch, amx, avx512_bf16, expected):
    """AMX or AVX512-BF16 turn bfloat16 autocast on; neither (or a torch without the checks) keeps float32."""
    for name, value in (("_is_amx_tile_supported", amx), ("_is_avx512_bf16_supported", avx512_bf16)):
        if value is None:
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert te.fast_bfloat16() is expected
