"""The claims protocol (BOOK.md, section 9): a verdict is computed from per-seed numbers, never typed.

A chapter states each of the paper's claims once, with the per-seed values it measured, and this
module computes the verdict with the one rule the whole book shares::

    ledger = Ledger(full=not QUICK)
    ledger.add("reweight_clean", headline=True, claim="Reweighting lowers test error", source="Table 1",
               kind="difference", metric="test-error reduction (points)", paper=2.16, values=gains,
               like_for_like=dict(data=False, metric=True, protocol=False, note="MNIST, not CUB"),
               selection="3 steps of 0.5, fixed in advance")
    display(ledger.table())            # the chapter's "paper vs. ours" table
    RESULTS["claims"] = ledger.records()

The rule, with m and s the mean and standard error (sample sd / sqrt(n)) of the values:

- ``difference`` (values oriented so that > 0 means the claim holds): ``not reproduced`` if m < -2s,
  ``within noise`` if |m| <= 2s, else ``reproduced``; ``partly reproduced`` instead when the setting is
  like for like on data, metric and protocol and m is below half the paper's effect;
- ``value`` (our quantity against the paper's number): ``not comparable`` unless like for like on all
  three counts; then ``reproduced`` within the tolerance, ``partly reproduced`` within twice it, else
  ``not reproduced``.

:func:`over_seeds` runs one experiment per seed and returns the paired per-seed numbers.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

KINDS = ("difference", "value")
VERDICTS = ("reproduced", "partly reproduced", "within noise", "not reproduced", "not comparable")
LIKE_KEYS = ("data", "metric", "protocol")
MIN_HEADLINE_SEEDS = 3          # full mode: the headline rests on at least this many seeds
KEYS = ("id", "headline", "ours_only", "claim", "source", "kind", "metric", "paper", "tolerance", "ours",
        "like_for_like", "selection", "rule", "verdict")


class ClaimError(ValueError):
    """A claim or a ledger that does not follow the protocol."""


def summarise(values: Iterable[float]) -> dict[str, Any]:
    """``{"mean", "se", "n", "values"}`` of per-seed values; ``se`` = sample sd / sqrt(n) (0 for n = 1)."""
    vals = [float(v) for v in np.asarray(list(values), dtype=float).ravel()]
    if not vals:
        raise ClaimError("values must hold at least one per-seed number")
    if not all(math.isfinite(v) for v in vals):
        raise ClaimError(f"values must be finite numbers, got {vals}")
    n = len(vals)
    mean = sum(vals) / n
    se = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) / math.sqrt(n) if n > 1 else 0.0
    return {"mean": mean, "se": se, "n": n, "values": vals}


def _like(like_for_like: Mapping[str, Any]) -> bool:
    return all(bool(like_for_like.get(key)) for key in LIKE_KEYS)


def verdict(kind: str, mean: float, se: float, *, paper: float | None = None,
            like_for_like: Mapping[str, Any] | None = None, tolerance: float | None = None) -> str:
    """The protocol's rule: the verdict of a claim from the mean and standard error of its values."""
    if kind not in KINDS:
        raise ClaimError(f"kind must be one of {KINDS}, got {kind!r}")
    like = _like(like_for_like or {})
    if kind == "difference":
        if mean < -2 * se or (se == 0 and mean < 0):
            return "not reproduced"
        if abs(mean) <= 2 * se or mean == 0:
            return "within noise"
        if paper is not None and like and paper > 0 and mean < paper / 2:
            return "partly reproduced"
        return "reproduced"
    if paper is None or not like:
        return "not comparable"
    if tolerance is None or not tolerance >= 0:
        raise ClaimError(f"a value claim needs a tolerance >= 0 fixed in advance, got {tolerance!r}")
    gap = abs(mean - float(paper))
    if gap <= tolerance:
        return "reproduced"
    if gap <= 2 * tolerance:
        return "partly reproduced"
    return "not reproduced"


def rule_text(kind: str, tolerance: float | None = None) -> str:
    """The rule of a claim's kind in words, as the chapters print it."""
    if kind == "difference":
        return ("per-seed differences (> 0: the claim holds); mean m, standard error s: reproduced if m > 2s "
                "(partly if like for like and m < half the paper's effect), within noise if |m| <= 2s, "
                "not reproduced if m < -2s")
    if kind == "value":
        return (f"ours vs the paper's number, tolerance {tolerance:g} fixed in advance: not comparable unless like "
                "for like on data, metric and protocol; reproduced within 1x the tolerance, partly within 2x, "
                "else not reproduced")
    raise ClaimError(f"kind must be one of {KINDS}, got {kind!r}")


def make_claim(id: str, *, claim: str, source: str, kind: str, metric: str, values: Iterable[float],
               paper: float | None, like_for_like: Mapping[str, Any], selection: str, headline: bool = False,
               ours_only: bool = False, tolerance: float | None = None) -> dict[str, Any]:
    """One claim as a JSON-ready dict, its verdict computed by :func:`verdict`; bad input raises ClaimError."""
    for name, text in (("id", id), ("claim", claim), ("source", source), ("metric", metric), ("selection", selection)):
        if not isinstance(text, str) or not text.strip():
            raise ClaimError(f"claim {id!r}: {name} must be a non-empty string, got {text!r}")
    if kind not in KINDS:
        raise ClaimError(f"claim {id!r}: kind must be one of {KINDS}, got {kind!r}")
    if headline and ours_only:
        raise ClaimError(f"claim {id!r}: a check of our own (ours_only) cannot be the headline")
    if kind == "value" and not isinstance(tolerance, (int, float)):
        raise ClaimError(f"claim {id!r}: a value claim needs a numeric tolerance fixed before running")
    if kind == "difference" and tolerance is not None:
        raise ClaimError(f"claim {id!r}: a difference claim has no tolerance (the rule uses its standard error)")
    if paper is not None and not (isinstance(paper, (int, float)) and math.isfinite(paper)):
        raise ClaimError(f"claim {id!r}: paper must be a finite number or None, got {paper!r}")
    if not isinstance(like_for_like, Mapping) or any(not isinstance(like_for_like.get(k), bool) for k in LIKE_KEYS):
        raise ClaimError(f"claim {id!r}: like_for_like needs booleans {LIKE_KEYS} (and a note), got {like_for_like!r}")
    try:
        ours = summarise(values)
    except ClaimError as exc:
        raise ClaimError(f"claim {id!r}: {exc}") from None
    like = {**{k: bool(like_for_like[k]) for k in LIKE_KEYS}, "note": str(like_for_like.get("note", ""))}
    return {"id": id, "headline": bool(headline), "ours_only": bool(ours_only), "claim": claim, "source": source,
            "kind": kind, "metric": metric, "paper": None if paper is None else float(paper),
            "tolerance": None if tolerance is None else float(tolerance), "ours": ours, "like_for_like": like,
            "selection": selection, "rule": rule_text(kind, tolerance),
            "verdict": verdict(kind, ours["mean"], ours["se"], paper=paper, like_for_like=like, tolerance=tolerance)}


def problems(claims: Sequence[Mapping[str, Any]], *, full: bool) -> list[str]:
    """What is wrong with a recorded ledger: malformed claims, verdicts the rule does not give, headline rules."""
    found: list[str] = []
    if not isinstance(claims, Sequence) or not claims:
        return ["no claims ledger (RESULTS['claims'] is missing or empty)"]
    for c in claims:
        name = c.get("id", "?") if isinstance(c, Mapping) else "?"
        missing = [k for k in KEYS if not isinstance(c, Mapping) or k not in c]
        if missing:
            found.append(f"claim {name!r} lacks {', '.join(missing)}")
            continue
        try:
            fresh = make_claim(c["id"], claim=c["claim"], source=c["source"], kind=c["kind"], metric=c["metric"],
                               values=c["ours"]["values"], paper=c["paper"], like_for_like=c["like_for_like"],
                               selection=c["selection"], headline=c["headline"], ours_only=c["ours_only"],
                               tolerance=c["tolerance"])
        except (ClaimError, KeyError, TypeError) as exc:
            found.append(str(exc) if isinstance(exc, ClaimError) else f"claim {name!r}: malformed ({exc!r})")
            continue
        ours = c["ours"]
        if ours.get("n") != fresh["ours"]["n"]:
            found.append(f"claim {name!r}: n = {ours.get('n')} but {fresh['ours']['n']} values")
        for key, rel in (("mean", 1e-6), ("se", 1e-4)):
            if not math.isclose(float(ours.get(key, math.nan)), fresh["ours"][key], rel_tol=rel, abs_tol=1e-9):
                found.append(f"claim {name!r}: recorded {key} {ours.get(key)} != {fresh['ours'][key]:.6g} from its values")
        if c["verdict"] != fresh["verdict"]:
            found.append(f"claim {name!r}: verdict {c['verdict']!r}, but the rule gives {fresh['verdict']!r}")
    ids = [c.get("id") for c in claims if isinstance(c, Mapping)]
    if len(set(ids)) != len(ids):
        found.append(f"claim ids are not unique: {ids}")
    heads = [c for c in claims if isinstance(c, Mapping) and c.get("headline")]
    if len(heads) != 1:
        found.append(f"{len(heads)} headline claims (exactly one)")
    elif full and heads[0].get("ours", {}).get("n", 0) < MIN_HEADLINE_SEEDS:
        found.append(f"the headline {heads[0].get('id')!r} rests on {heads[0]['ours'].get('n')} seed(s); "
                     f"full mode needs at least {MIN_HEADLINE_SEEDS}")
    return found


def headline_of(claims: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The one claim marked ``headline``."""
    heads = [c for c in claims if c.get("headline")]
    if len(heads) != 1:
        raise ClaimError(f"a ledger has exactly one headline claim, found {len(heads)}")
    return heads[0]


class Ledger(list):
    """A chapter's claims in the order it states them. ``full`` is the mode (full mode: >= 3 headline seeds)."""

    def __init__(self, full: bool) -> None:
        super().__init__()
        self.full = bool(full)

    def add(self, id: str, **fields: Any) -> dict[str, Any]:
        """Add one claim (the arguments of :func:`make_claim`) and return it."""
        if any(c["id"] == id for c in self):
            raise ClaimError(f"claim id {id!r} is already in the ledger")
        claim = make_claim(id, **fields)
        self.append(claim)
        return claim

    def __getitem__(self, key):  # ledger["id"] as well as ledger[0]
        if isinstance(key, str):
            for c in self:
                if c["id"] == key:
                    return c
            raise KeyError(f"no claim {key!r} in the ledger; ids: {[c['id'] for c in self]}")
        return super().__getitem__(key)

    def records(self) -> list[dict[str, Any]]:
        """The validated claims for ``RESULTS["claims"]``; raises ClaimError if the ledger breaks the protocol."""
        found = problems(self, full=self.full)
        if found:
            raise ClaimError("the claims ledger breaks the protocol:\n- " + "\n- ".join(found))
        return [dict(c) for c in self]

    def table(self):
        """The chapter's "paper vs. ours" table (a pandas DataFrame), from :func:`ledger_rows`."""
        import pandas as pd

        return pd.DataFrame(ledger_rows(self)).set_index("claim")

    def rules(self) -> dict[str, str]:
        """``{kind: the rule in words}`` for the kinds this ledger uses (printed under its table)."""
        return {c["kind"]: c["rule"] for c in self}


# ----------------------------------------------------------------------------- display (chapters and dashboard)
def fmt(value: float | None) -> str:
    """A number in the tables: 3 significant digits; ``-`` when there is none."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.3g}"


def fmt_ours(ours: Mapping[str, Any]) -> str:
    """``mean ± se (n=…)``."""
    return f"{fmt(ours['mean'])} ± {ours['se']:.2g} (n={ours['n']})"


def like_marks(like: Mapping[str, Any]) -> str:
    """``data ✓ / metric ✗ / protocol ✗``."""
    return " / ".join(f"{key} {'✓' if like.get(key) else '✗'}" for key in LIKE_KEYS)


def role(claim: Mapping[str, Any]) -> str:
    """``headline``, ``paper`` (another of the paper's claims) or ``ours only``."""
    return "headline" if claim["headline"] else "ours only" if claim["ours_only"] else "paper"


def ledger_rows(claims: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """One row of strings per claim: the same columns in every chapter's table and on the dashboard."""
    rows = []
    for c in claims:
        tag = "" if role(c) == "paper" else f" ({role(c)})"
        rows.append({"claim": c["claim"] + tag, "source": c["source"], "metric": c["metric"],
                     "paper": fmt(c["paper"]), "ours": fmt_ours(c["ours"]),
                     "like for like": like_marks(c["like_for_like"]), "verdict": c["verdict"]})
    return rows


# ----------------------------------------------------------------------------- seeds
def over_seeds(run: Callable[[int], Mapping[str, float]], seeds: Iterable[int], *,
               desc: str | None = None) -> dict[str, np.ndarray]:
    """Run ``run(seed)`` for every seed; ``{name: array (n_seeds,)}``, aligned by seed (paired values).

    ``run`` returns a mapping of names to numbers (one experiment, one seed); every seed must return the
    same names. ``seed`` itself is returned under ``"seed"``. With ``desc`` a progress bar is shown.
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ClaimError("seeds must not be empty")
    if len(set(seeds)) != len(seeds):
        raise ClaimError(f"seeds must be distinct, got {seeds}")
    if desc is not None:
        from tqdm.auto import tqdm

        seeds_iter: Iterable[int] = tqdm(seeds, desc=desc)
    else:
        seeds_iter = seeds
    rows = []
    for seed in seeds_iter:
        row = dict(run(seed))
        if rows and set(row) != set(rows[0]):
            raise ClaimError(f"seed {seed} returned {sorted(row)}, seed {seeds[0]} returned {sorted(rows[0])}")
        rows.append(row)
    out = {"seed": np.asarray(seeds)}
    for name in rows[0]:
        out[name] = np.asarray([float(r[name]) for r in rows])
    return out
