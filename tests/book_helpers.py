"""Helpers for the tests that read or execute the book's chapters."""
from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files() -> list[str]:
    """Every file listed in ``_toc.yml`` (without suffix), in reading order."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


def chapter_names() -> list[str]:
    """The chapter notebooks listed in the table of contents, e.g. ``["04_item_to_item_cf"]``."""
    return [Path(f).name for f in toc_files() if (ROOT / f"{f}.ipynb").exists()]


def load_notebook(name: str) -> dict:
    return json.loads((ROOT / "book" / f"{name}.ipynb").read_text())


def cell_source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def execute_chapter(name: str, output: Path) -> dict:
    """Run chapter ``name`` top to bottom with papermill (mode and results folder from the environment:
    ``ICLR_LIB_QUICK``, ``ICLR_LIB_RESULTS_DIR``), writing the executed notebook to ``output``. Quick mode
    has the reader's build's hang detector (a per-cell time-out, :func:`iclr_lib.book.build.cell_timeout`).

    Returns ``{"error": str | None, "seconds": float}``. Used in-process by ``test_chapters.py`` and,
    in the numpy-2 environment's own interpreter, by ``test_colab_env.py``.
    """
    import os

    import papermill

    from iclr_lib.book.build import cell_timeout

    notebook = ROOT / "book" / f"{name}.ipynb"
    start = time.perf_counter()
    mode = "quick" if os.environ.get("ICLR_LIB_QUICK") == "1" else "full"
    try:
        papermill.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent), kernel_name="python3",
                                   progress_bar=False, execution_timeout=cell_timeout(mode))
        error = None
    except papermill.PapermillExecutionError as exc:
        error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    return {"error": error, "seconds": time.perf_counter() - start}
