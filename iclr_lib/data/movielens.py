"""MovieLens loaders (ML-100K and ml-latest-small), shared by the item-to-item CF and RIM chapters."""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from .fetch import fetch

VARIANTS = ("ml-100k", "ml-latest-small")


@dataclass(frozen=True)
class Ratings:
    """Explicit ratings as parallel arrays, with users and items re-indexed to ``0..n-1``.

    Attributes:
        user: ``(n_ratings,)`` int64 user index.
        item: ``(n_ratings,)`` int64 item index.
        rating: ``(n_ratings,)`` float32 star rating.
        timestamp: ``(n_ratings,)`` int64 unix seconds.
        titles: ``n_items`` movie titles; ``titles[i]`` names item index ``i``.
        raw_user_ids / raw_item_ids: the dataset's own ids of each index.
        name: ``"ml-100k"`` or ``"ml-latest-small"``.
    """

    user: np.ndarray
    item: np.ndarray
    rating: np.ndarray
    timestamp: np.ndarray
    titles: list[str]
    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray
    name: str

    @property
    def n_users(self) -> int:
        return len(self.raw_user_ids)

    @property
    def n_items(self) -> int:
        return len(self.raw_item_ids)

    def __len__(self) -> int:
        return len(self.user)


def load_movielens(variant: str = "ml-100k") -> Ratings:
    """Load a MovieLens release through the data registry (cache, mirror or GroupLens download).

    Only items that received at least one rating are kept (ml-latest-small lists 18 unrated movies).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    root = fetch("movielens", [f"{variant}/"], verbose=False) / variant
    if variant == "ml-100k":
        raw = np.loadtxt(root / "u.data", dtype=np.int64)
        users, items, stars, times = raw[:, 0], raw[:, 1], raw[:, 2].astype(np.float32), raw[:, 3]
        title_of = {}
        with open(root / "u.item", encoding="latin-1") as handle:
            for line in handle:
                fields = line.rstrip("\n").split("|")
                title_of[int(fields[0])] = fields[1]
    else:
        with open(root / "ratings.csv", newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))[1:]
        users = np.array([int(r[0]) for r in rows], dtype=np.int64)
        items = np.array([int(r[1]) for r in rows], dtype=np.int64)
        stars = np.array([float(r[2]) for r in rows], dtype=np.float32)
        times = np.array([int(r[3]) for r in rows], dtype=np.int64)
        text = (root / "movies.csv").read_text(encoding="utf-8")
        title_of = {int(r[0]): r[1] for r in list(csv.reader(io.StringIO(text)))[1:]}
    raw_users, user_index = np.unique(users, return_inverse=True)
    raw_items, item_index = np.unique(items, return_inverse=True)
    return Ratings(user=user_index.astype(np.int64), item=item_index.astype(np.int64), rating=stars,
                   timestamp=times, titles=[title_of.get(int(i), f"movie {i}") for i in raw_items],
                   raw_user_ids=raw_users, raw_item_ids=raw_items, name=variant)
