"""The claims protocol (BOOK.md section 9): the one rule, its boundaries, malformed claims, seeds."""
from __future__ import annotations

import importlib.util
import json
import math
import os

import numpy as np
import pytest

from book_helpers import ROOT
from iclr_lib.book import claims as cl

LIKE = {"data": True, "metric": True, "protocol": True, "note": ""}
UNLIKE = {"data": False, "metric": True, "protocol": True, "note": "other data"}


def _claim(**overrides):
    fields = dict(claim="the method beats the baseline", source="Table 1", kind="difference", metric="accuracy (points)",
                  values=[1.0, 2.0, 3.0], paper=2.0, like_for_like=LIKE, selection="fixed in advance")
    fields.update(overrides)
    return cl.make_claim(fields.pop("id", "c1"), **fields)


# ----------------------------------------------------------------------------- the rule
def test_summary_is_mean_and_sample_standard_error():
    ours = cl.summarise([1.0, 2.0, 6.0])
    assert ours["n"] == 3 and ours["mean"] == pytest.approx(3.0)
    assert ours["se"] == pytest.approx(np.std([1, 2, 6], ddof=1) / math.sqrt(3))
    assert cl.summarise([4.0])["se"] == 0.0
    with pytest.raises(cl.ClaimError, match="at least one"):
        cl.summarise([])
    with pytest.raises(cl.ClaimError, match="finite"):
        cl.summarise([1.0, float("nan")])


@pytest.mark.parametrize("mean, se, expected", [
    (2.0, 1.0, "within noise"),            # m = 2s exactly: not above the noise
    (-2.0, 1.0, "within noise"),           # m = -2s exactly: not below it either
    (2.0001, 1.0, "reproduced"),
    (-2.0001, 1.0, "not reproduced"),      # a negative effect beyond 2 SE
    (-0.5, 1.0, "within noise"),
    (0.3, 0.0, "reproduced"),              # s = 0: any positive mean
    (-0.3, 0.0, "not reproduced"),         # s = 0: any negative mean
    (0.0, 0.0, "within noise"),
])
def test_difference_rule_boundaries(mean, se, expected):
    assert cl.verdict("difference", mean, se, paper=None, like_for_like=LIKE) == expected


def test_difference_is_partly_only_when_like_for_like_and_below_half_the_paper():
    assert cl.verdict("difference", 0.9, 0.1, paper=2.0, like_for_like=LIKE) == "partly reproduced"
    assert cl.verdict("difference", 1.0, 0.1, paper=2.0, like_for_like=LIKE) == "reproduced"     # exactly half
    assert cl.verdict("difference", 0.9, 0.1, paper=2.0, like_for_like=UNLIKE) == "reproduced"
    assert cl.verdict("difference", 0.9, 0.1, paper=None, like_for_like=LIKE) == "reproduced"


@pytest.mark.parametrize("mean, expected", [
    (10.0, "reproduced"), (10.5, "reproduced"), (9.5, "reproduced"),          # inside 1x tolerance (0.5)
    (10.9, "partly reproduced"), (9.0, "partly reproduced"),                   # inside 2x
    (11.1, "not reproduced"), (8.0, "not reproduced"),                         # outside 2x
])
def test_value_rule_tolerance_bands(mean, expected):
    assert cl.verdict("value", mean, 0.2, paper=10.0, like_for_like=LIKE, tolerance=0.5) == expected


def test_value_claims_are_not_comparable_unless_like_for_like():
    for key in cl.LIKE_KEYS:
        like = {**LIKE, key: False}
        assert cl.verdict("value", 10.0, 0.0, paper=10.0, like_for_like=like, tolerance=1.0) == "not comparable"
    assert cl.verdict("value", 10.0, 0.0, paper=None, like_for_like=LIKE, tolerance=1.0) == "not comparable"


def test_make_claim_computes_the_verdict_from_the_values():
    c = _claim(values=[3.0, 1.0])                                # mean 2, se 1: exactly 2 SE
    assert c["ours"]["mean"] == pytest.approx(2.0) and c["ours"]["se"] == pytest.approx(1.0)
    assert c["verdict"] == "within noise"
    assert _claim(values=[3.0, 3.5, 2.5])["verdict"] == "reproduced"
    assert _claim(values=[-3.0, -3.5, -2.5])["verdict"] == "not reproduced"
    assert "reproduced if m > 2s" in c["rule"]
    json.dumps(c)


# ----------------------------------------------------------------------------- malformed claims
def test_malformed_claims_get_clear_errors():
    with pytest.raises(cl.ClaimError, match="source must be a non-empty string"):
        _claim(source="")
    with pytest.raises(cl.ClaimError, match="cannot be the headline"):
        _claim(headline=True, ours_only=True)
    with pytest.raises(cl.ClaimError, match="needs a numeric tolerance"):
        _claim(kind="value")
    with pytest.raises(cl.ClaimError, match="kind must be one of"):
        _claim(kind="ratio")
    with pytest.raises(cl.ClaimError, match="like_for_like needs booleans"):
        _claim(like_for_like={"data": True})
    with pytest.raises(cl.ClaimError, match="selection"):
        _claim(selection=" ")


def test_a_full_mode_headline_needs_three_seeds():
    ledger = cl.Ledger(full=True)
    ledger.add("head", headline=True, claim="x", source="abstract", kind="difference", metric="m",
               values=[1.0, 2.0], paper=None, like_for_like=LIKE, selection="fixed")
    with pytest.raises(cl.ClaimError, match="rests on 2 seed"):
        ledger.records()
    quick = cl.Ledger(full=False)
    quick.add("head", headline=True, claim="x", source="abstract", kind="difference", metric="m",
              values=[1.0, 2.0], paper=None, like_for_like=LIKE, selection="fixed")
    assert quick.records()[0]["verdict"] == "reproduced"


def test_a_ledger_has_exactly_one_headline_and_unique_ids():
    ledger = cl.Ledger(full=False)
    ledger.add("a", **{k: v for k, v in _claim().items() if k in {"claim", "source", "kind", "metric", "paper",
                                                                  "like_for_like", "selection"}}, values=[1, 2, 3])
    with pytest.raises(cl.ClaimError, match="0 headline claims"):
        ledger.records()
    with pytest.raises(cl.ClaimError, match="already in the ledger"):
        ledger.add("a", claim="x", source="s", kind="difference", metric="m", values=[1], paper=None,
                   like_for_like=LIKE, selection="s")
    assert ledger["a"]["id"] == "a" and ledger[0]["id"] == "a"
    with pytest.raises(KeyError, match="no claim 'b'"):
        ledger["b"]


def test_problems_find_a_verdict_edited_by_hand():
    c = _claim(id="head", headline=True)
    assert cl.problems([c], full=True) == []
    edited = {**c, "verdict": "not reproduced"}
    assert any("the rule gives 'reproduced'" in p for p in cl.problems([edited], full=True))
    wrong_mean = {**c, "ours": {**c["ours"], "mean": 5.0}}
    assert any("recorded mean" in p for p in cl.problems([wrong_mean], full=True))
    assert cl.problems([], full=True) and cl.problems(None, full=False)


def _shared_checker():
    path = ROOT.parent / "shared" / "tools" / "check_claims.py"
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the book's shared checker at {path}")
        pytest.skip(f"no shared checker at {path}")
    spec = importlib.util.spec_from_file_location("check_claims", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_our_rule_agrees_with_the_shared_checker_on_random_claims():
    """``iclr_lib.book.claims`` and ``../shared/tools/check_claims.py`` give the same verdict everywhere."""
    checker = _shared_checker()
    rng = np.random.default_rng(9)
    seen = set()
    for trial in range(3000):
        kind = ("difference", "value")[trial % 2]
        n = int(rng.integers(1, 6))
        values = np.round(rng.normal(rng.normal(0, 2), rng.choice([0.0, 0.5, 2.0]), n), 1)
        like = {k: bool(rng.random() < 0.7) for k in cl.LIKE_KEYS}
        paper = None if rng.random() < 0.2 else float(np.round(rng.normal(1, 2), 1))
        c = cl.make_claim("c", claim="c", source="s", kind=kind, metric="m", values=values, paper=paper,
                          like_for_like=like, selection="s", tolerance=0.5 if kind == "value" else None)
        assert checker.expected_verdict(c) == c["verdict"], c
        seen.add(c["verdict"])
    assert seen == set(cl.VERDICTS)


# ----------------------------------------------------------------------------- seeds and tables
def test_over_seeds_returns_paired_values():
    out = cl.over_seeds(lambda seed: {"a": seed * 2.0, "b": seed + 0.5}, [3, 1, 2])
    assert out["seed"].tolist() == [3, 1, 2]
    np.testing.assert_array_equal(out["a"] - out["b"], [2.5, 0.5, 1.5])
    with pytest.raises(cl.ClaimError, match="distinct"):
        cl.over_seeds(lambda seed: {"a": 1.0}, [1, 1])
    with pytest.raises(cl.ClaimError, match="returned"):
        cl.over_seeds(lambda seed: {"a": 1.0} if seed else {"b": 1.0}, [0, 1])


def test_ledger_table_has_the_dashboard_columns():
    ledger = cl.Ledger(full=False)
    ledger.add("head", headline=True, **{k: v for k, v in _claim().items() if k in {
        "claim", "source", "kind", "metric", "paper", "like_for_like", "selection"}}, values=[1.0, 2.0, 3.0])
    table = ledger.table()
    assert list(table.columns) == ["source", "metric", "paper", "ours", "like for like", "verdict"]
    row = table.iloc[0]
    assert row["ours"] == "2 ± 0.58 (n=3)" and row["verdict"] == "reproduced"
    assert row["like for like"] == "data ✓ / metric ✓ / protocol ✓" and table.index[0].endswith("(headline)")
