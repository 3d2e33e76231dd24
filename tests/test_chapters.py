"""Every chapter in _toc.yml runs top to bottom in quick mode (its reproduction checks are asserts),
then the whole book builds with ``jupyter-book build -W -n --keep-going`` (warnings are errors).

Each chapter is executed with papermill (one test per chapter, with its run time checked against
the quick-mode budget); results go to ``$ICLR_LIB_RESULTS_DIR`` (default: a temporary folder).
The book build then executes the committed notebooks itself, in quick mode, with the project's own
``_config.yml`` (``execute.raise_on_error: true``), in a temporary copy of the book.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import papermill
import pytest

from book_helpers import ROOT, chapter_names

CHAPTERS = chapter_names()
QUICK_BUDGET_S = {"08_trans_encoder": 240}  # BOOK.md section 3; every other chapter: 90 s


@pytest.fixture(scope="session")
def book_copy(tmp_path_factory) -> Path:
    """A copy of the book's sources (not the package, tests or build output) to execute and build."""
    copy = tmp_path_factory.mktemp("book")
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, copy / name)
    shutil.copytree(ROOT / "book", copy / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    return copy


@pytest.fixture(scope="session")
def executed(tmp_path_factory) -> dict[str, dict]:
    """Run every chapter in quick mode once; maps chapter -> {"error": str | None, "seconds": float}."""
    results_dir = os.environ.get("ICLR_LIB_RESULTS_DIR") or str(tmp_path_factory.mktemp("results"))
    saved = {k: os.environ.get(k) for k in ("ICLR_LIB_QUICK", "ICLR_LIB_RESULTS_DIR")}
    os.environ.update(ICLR_LIB_QUICK="1", ICLR_LIB_RESULTS_DIR=results_dir)
    outcome = {}
    try:
        for name in CHAPTERS:
            notebook = ROOT / "book" / f"{name}.ipynb"
            output = tmp_path_factory.mktemp("executed") / f"{name}.ipynb"
            start = time.perf_counter()
            try:
                papermill.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent),
                                           kernel_name="python3", progress_bar=False)
                error = None
            except papermill.PapermillExecutionError as exc:
                error = f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
            outcome[name] = {"error": error, "seconds": time.perf_counter() - start,
                             "results": Path(results_dir) / f"{name}.json"}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return outcome


@pytest.mark.chapters
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_runs_in_quick_mode_within_budget(executed, name):
    run = executed[name]
    assert run["error"] is None, f"{name} failed in quick mode: {run['error']}"
    assert run["results"].is_file(), f"{name} did not save its RESULTS (call RESULTS.save())"
    budget = QUICK_BUDGET_S.get(name, 90)
    assert run["seconds"] <= budget, f"{name} took {run['seconds']:.0f} s in quick mode (budget {budget} s)"


@pytest.mark.chapters
def test_the_book_builds_without_warnings_in_quick_mode(executed, book_copy):
    assert all(run["error"] is None for run in executed.values()), "a chapter failed; see its own test"
    cli = Path(sys.executable).with_name("jupyter-book")
    command = [str(cli) if cli.exists() else "jupyter-book", "build", str(book_copy), "-W", "-n", "--keep-going"]
    env = {**os.environ, "ICLR_LIB_QUICK": "1"}
    env.pop("MPLBACKEND", None)  # figures must render inline
    env.pop("ICLR_LIB_RESULTS_DIR", None)  # the papermill runs above already recorded the results
    build = subprocess.run(command, capture_output=True, text=True, timeout=3600, env=env)
    log = build.stdout + build.stderr
    assert build.returncode == 0, f"jupyter-book build failed:\n{log[-6000:]}"
    html = book_copy / "_build" / "html"
    for name in CHAPTERS:
        page = (html / "book" / f"{name}.html").read_text()
        assert "<img" in page and "_images/" in page, f"{name}: no figures rendered"
        assert "colab.research.google.com" in page, f"{name}: no Colab launch link"
        assert "Traceback (most recent call last)" not in page and "output traceback" not in page, (
            f"{name}: the rendered page shows an error output")
    artifacts = os.environ.get("ICLR_LIB_BOOK_ARTIFACTS")
    if artifacts:
        shutil.copytree(html, artifacts, dirs_exist_ok=True)
