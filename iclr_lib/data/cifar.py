"""The book's CIFAR-10 subset (JPEG re-encodings, 1,000 training and 500 test images per class), used by
the Deep AutoAugment and DIVA chapters."""
from __future__ import annotations

import numpy as np
import torch

from .fetch import fetch


def load_cifar10_subset() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The book's CIFAR-10 subset through the registry: ``(train_x, train_y, test_x, test_y)``.

    10,000 training images (1,000 per class) and 5,000 test images (500 per class), JPEG re-encodings
    of CIFAR-10 (lossy: accuracies are not comparable to published CIFAR-10 numbers). Images are
    ``uint8 (N, 3, 32, 32)``, labels ``int64 (N,)``, in the order of the archive's ``index.csv``.
    """
    import csv
    import io
    import zipfile

    from PIL import Image

    root = fetch("cifar10_jpeg_subset", verbose=False)
    out: dict[str, tuple[list, list]] = {"train": ([], []), "test": ([], [])}
    with zipfile.ZipFile(root / "cifar10_jpeg_subset.zip") as archive:
        rows = list(csv.DictReader(io.TextIOWrapper(archive.open("index.csv"), encoding="utf-8")))
        for row in rows:
            with Image.open(io.BytesIO(archive.read(row["path"]))) as im:
                out[row["split"]][0].append(np.asarray(im.convert("RGB")))
            out[row["split"]][1].append(int(row["label"]))

    def stack(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = out[split]
        return (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(),
                torch.tensor(labels, dtype=torch.int64))

    return (*stack("train"), *stack("test"))
