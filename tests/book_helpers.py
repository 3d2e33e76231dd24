"""Helpers for the tests that read or execute the book's chapters."""
from __future__ import annotations

import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    """Every file listed in ``_toc.yml`` (without suffix), in reading order."""
    from iclr_lib.book.build import toc_files as files_of

    return files_of(ROOT)


def chapter_names() -> list[str]:
    """The chapter notebooks listed in the table of contents, e.g. ``["04_item_to_item_cf"]``."""
    return [Path(f).name for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


def load_notebook(name: str) -> dict:
    return json.loads((ROOT / "book" / f"{name}.ipynb").read_text())


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def execute_chapter(name: str, output: Path, mode: str | None = None, results_dir: str | None = None) -> dict:
    """Run chapter ``name`` top to bottom with papermill, writing the executed notebook to ``output``, the
    reader's build's way (:func:`iclr_lib.book.build.execute_chapter`: quick mode has its per-cell hang
    detector). ``mode`` and ``results_dir`` default to the environment (``ICLR_LIB_QUICK``,
    ``ICLR_LIB_RESULTS_DIR``).

    Returns ``{"error": str | None, "seconds": float}``. Used in-process by ``test_chapters.py`` and,
    in the numpy-2 environment's own interpreter, by ``test_colab_env.py``.
    """
    import os

    from iclr_lib.book.build import execute_chapter as execute

    mode = mode or ("quick" if os.environ.get("ICLR_LIB_QUICK") == "1" else "full")
    results_dir = results_dir or os.environ.get("ICLR_LIB_RESULTS_DIR")
    start = time.perf_counter()
    error = execute(ROOT / "book" / f"{name}.ipynb", Path(output), mode, Path(results_dir) if results_dir else None,
                    progress_bar=False)
    return {"error": error, "seconds": time.perf_counter() - start}
