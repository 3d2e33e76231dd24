"""The reader's build (``python -m iclr_lib.book.build``): its cache key, its cache, its report, its
time-outs, and the publishing workflow that runs it. The real chapters go through the same code in
``test_chapters.py`` (CI's quick book is rendered by :meth:`Build.render` from a populated cache)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
import yaml

from book_helpers import ROOT
from iclr_lib.book import build, dashboard

ENV = {"python": "3.11.7", "numpy": "1.26.4"}


# ----------------------------------------------------------------------------- a tiny book
def _notebook(code: list[str], markdown: str = "# A chapter") -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown)] + [nbformat.v4.new_code_cell(c) for c in code]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def _chapter_code(name: str, value: str = "1.0", fail: bool = False) -> list[str]:
    return ["import os\nfrom iclr_lib.book.results import Results\n"
            "QUICK = os.environ.get('ICLR_LIB_QUICK') == '1'\n"
            f"RESULTS = Results({name!r}, quick=QUICK)",
            ("raise RuntimeError('this chapter is broken')" if fail else f"RESULTS['value'] = {value}\nprint('mode', QUICK)"),
            "RESULTS.save()"]


def _tiny_book(root: Path, chapters: dict[str, list[str]]) -> Path:
    (root / "book").mkdir(parents=True)
    (root / "_toc.yml").write_text(yaml.safe_dump({"format": "jb-book", "root": "book/intro", "parts": [
        {"caption": "Chapters", "chapters": [{"file": f"book/{n}"} for n in chapters]}]}))
    for name, code in chapters.items():
        nbformat.write(_notebook(code), str(root / "book" / f"{name}.ipynb"))
    return root


def _edit(path: Path, cell: int, source: str) -> None:
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[cell].source = source
    nbformat.write(nb, str(path))


# ----------------------------------------------------------------------------- the key
def _package(root: Path) -> Path:
    pkg = root / "iclr_lib"
    (pkg / "book").mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0"\n')
    (pkg / "a.py").write_text("from .b import helper\n")
    (pkg / "b.py").write_text("import numpy as np\nfrom iclr_lib.book import tools\n\ndef helper():\n    return 1\n")
    (pkg / "c.py").write_text("X = 1\n")
    (pkg / "book" / "__init__.py").write_text("")
    (pkg / "book" / "tools.py").write_text("Y = 2\n")
    return pkg


def test_the_key_follows_the_imported_modules_transitively(tmp_path):
    pkg = _package(tmp_path)
    path = tmp_path / "ch.ipynb"
    nbformat.write(_notebook(["%matplotlib inline\nfrom iclr_lib import a\n!echo shell lines are ignored"]), str(path))
    key = build.cache_key(path, "full", tmp_path, ENV)
    assert set(key["package"]) == {"iclr_lib/__init__.py", "iclr_lib/a.py", "iclr_lib/b.py",
                                   "iclr_lib/book/__init__.py", "iclr_lib/book/tools.py"}
    (pkg / "c.py").write_text("X = 2\n")                      # not imported: same key
    assert build.cache_key(path, "full", tmp_path, ENV) == key
    (pkg / "book" / "tools.py").write_text("Y = 3\n")         # imported through a.py -> b.py: new key
    changed = build.cache_key(path, "full", tmp_path, ENV)
    assert build.key_changes(key, changed) == ["package code changed: iclr_lib/book/tools.py"]


def test_the_key_holds_mode_code_and_environment_but_not_markdown(tmp_path):
    _package(tmp_path)
    path = tmp_path / "ch.ipynb"
    nbformat.write(_notebook(["from iclr_lib.c import X"]), str(path))
    key = build.cache_key(path, "full", tmp_path, ENV)
    assert build.key_changes(key, key) == []
    assert build.key_changes(None, key) == ["not executed yet"]
    assert build.key_changes(key, build.cache_key(path, "quick", tmp_path, ENV)) == ["mode changed"]
    assert build.key_changes(key, build.cache_key(path, "full", tmp_path, {**ENV, "numpy": "2.0.0"})) == [
        "environment changed: numpy"]
    _edit(path, 0, "# A chapter, reworded")
    assert build.cache_key(path, "full", tmp_path, ENV) == key
    _edit(path, 1, "from iclr_lib.c import X\nprint(X)")
    assert build.key_changes(key, build.cache_key(path, "full", tmp_path, ENV)) == ["its code cells changed"]
    with pytest.raises(ValueError, match="mode must be one of"):
        build.cache_key(path, "fast", tmp_path, ENV)


def test_merging_cached_outputs_keeps_the_current_markdown():
    current = _notebook(["x = 1", "print(x)"], markdown="# new words")
    executed = _notebook(["x = 1", "print(x)"], markdown="# old words")
    executed.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    merged = build.merge_outputs(current, executed)
    assert merged["cells"][0]["source"] == "# new words" and merged["cells"][2]["outputs"][0]["text"] == "1\n"
    with pytest.raises(ValueError, match="other code cells"):
        build.merge_outputs(_notebook(["x = 2", "print(x)"]), executed)


# ----------------------------------------------------------------------------- time-outs
def test_full_mode_has_no_cell_timeout_and_quick_mode_a_hang_detector(monkeypatch, tmp_path):
    import papermill

    seen = []
    monkeypatch.setattr(papermill, "execute_notebook", lambda *a, **kw: seen.append(kw["execution_timeout"]))
    for mode in ("full", "quick"):
        assert build.execute_chapter(tmp_path / "x.ipynb", tmp_path / "y.ipynb", mode, None) is None
    assert seen == [None, build.QUICK_CELL_TIMEOUT_S]
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["timeout"] == -1, "a plain `jupyter-book build .` must not time out a slow laptop"


# ----------------------------------------------------------------------------- the cache, for real
def test_the_cache_executes_each_chapter_once_per_mode_and_what_changed_again(tmp_path):
    root = _tiny_book(tmp_path / "repo", {"01_a": _chapter_code("01_a"), "02_b": _chapter_code("02_b")})
    full, quick = build.Build(root, "full"), build.Build(root, "quick")
    lines = []
    first = full.execute(log=lambda *a, **kw: lines.append(a[0]))
    assert [o.status for o in first] == ["executed", "executed"]
    assert lines[0].startswith("[1/2] 01_a (full): executing (not executed yet); 0 done, 0 failed")
    assert full.record("01_a")["meta"]["mode"] == "full" and full.record("01_a")["results"]["value"] == 1.0
    assert full.plan() == {"01_a": [], "02_b": []}                      # nothing changed: nothing to execute
    assert [o.status for o in full.execute(log=lambda *a, **kw: None)] == ["cached", "cached"]
    assert quick.plan() == {"01_a": ["not executed yet"], "02_b": ["not executed yet"]}   # never the full entry
    quick.execute(["01_a"], log=lambda *a, **kw: None)
    assert quick.record("01_a")["meta"]["mode"] == "quick" and full.record("01_a")["meta"]["mode"] == "full"
    _edit(root / "book" / "02_b.ipynb", 2, "RESULTS['value'] = 2.0")   # edit one chapter's code
    _edit(root / "book" / "01_a.ipynb", 0, "# A chapter, reworded")    # and another's markdown only
    assert full.plan() == {"01_a": [], "02_b": ["its code cells changed"]}
    again = full.execute(log=lambda *a, **kw: None)
    assert [o.status for o in again] == ["cached", "executed"] and full.record("02_b")["results"]["value"] == 2.0


def test_a_failing_chapter_is_reported_and_does_not_stop_the_others(tmp_path, capsys):
    root = _tiny_book(tmp_path / "repo", {"01_a": _chapter_code("01_a", fail=True), "02_b": _chapter_code("02_b")})
    (root / "requirements.txt").write_text("")
    assert build.main(["--root", str(root)]) == 1
    out, err = capsys.readouterr()
    assert re.search(r"01_a\s+failed .*RuntimeError: this chapter is broken", out)
    assert re.search(r"02_b\s+executed", out) and "2 chapters (full mode): 1 executed, 0 cached, 1 failed" in out
    assert "1 chapter(s) failed; the site is not rendered" in err
    assert (root / "_build" / "full" / "failed" / "01_a.ipynb").is_file()
    full = build.Build(root, "full")
    assert full.plan() == {"01_a": ["not executed yet"], "02_b": []}
    with pytest.raises(ValueError, match="not chapters of _toc.yml"):
        full.plan(["99_missing"])


def test_the_summary_table_has_a_row_per_chapter():
    text = build.summary([build.Outcome("01_a", "executed", 3725.0, 3700.0, why="not executed yet"),
                          build.Outcome("02_b", "cached", None, 42.0)], "full")
    assert "01_a" in text and "1 h 02 min" in text and "42 s" in text
    assert text.splitlines()[-1] == "2 chapters (full mode): 1 executed, 1 cached, 0 failed; executing took 1 h 02 min"


def test_a_busy_machine_gets_the_passive_hint_and_an_idle_one_does_not():
    hint = build.busy_machine_hint(load=2.1, cores=2, environ={})
    assert hint and "OMP_WAIT_POLICY=PASSIVE" in hint and "load average 2.1 on 2 cores" in hint
    assert build.busy_machine_hint(load=0.3, cores=2, environ={}) is None
    assert build.busy_machine_hint(load=1.9, cores=2, environ={}) is None          # load below the number of cores
    # the reader already chose a policy (either one): no hint
    assert build.busy_machine_hint(load=4.0, cores=2, environ={"OMP_WAIT_POLICY": "ACTIVE"}) is None


# ----------------------------------------------------------------------------- records within their noise
def _record(values: dict[str, list[float]], mode: str = "quick") -> dict:
    from iclr_lib.book import claims

    ledger = claims.Ledger(full=mode == "full")
    like = {"data": False, "metric": True, "protocol": False, "note": "small"}
    for number, (claim_id, vals) in enumerate(values.items()):
        ledger.add(claim_id, headline=number == 0, claim=claim_id, source="Table 1", kind="difference",
                   metric="points", paper=1.0, values=vals, like_for_like=like, selection="fixed")
    return {"meta": {"chapter": "09_x", "mode": mode}, "results": {"claims": ledger.records()}}


def test_numbers_are_compared_within_the_claims_noise():
    recorded = _record({"head": [1.0, 1.2], "exact": [3.0]})
    assert dashboard.number_differences(recorded, recorded) == []
    # sd of "head" is 0.141; the tolerance 4 * 0.141 * sqrt(1/2 + 1/2) = 0.57
    assert dashboard.number_differences(_record({"head": [1.3, 1.5], "exact": [3.0]}), recorded) == []
    far = dashboard.number_differences(_record({"head": [1.8, 2.0], "exact": [3.0]}), recorded)
    assert len(far) == 1 and "'head' is 1.9 (n=2) here against 1.1 (n=2) recorded" in far[0]
    # one seed everywhere: round-off only, unless the full-mode record says how noisy the claim is
    moved = _record({"head": [1.0, 1.2], "exact": [3.1]})
    assert len(dashboard.number_differences(moved, recorded)) == 1
    full = _record({"head": [1.0, 1.2, 1.1], "exact": [3.0, 3.2, 2.8]}, mode="full")
    assert dashboard.number_differences(moved, recorded, full) == []
    missing = dashboard.number_differences(_record({"head": [1.0, 1.2]}), recorded)
    assert missing == ["09_x (quick): claim 'exact' is in only one of the two runs"]


# ----------------------------------------------------------------------------- README and publishing
def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.*?)\n```", (ROOT / "README.md").read_text().split("## More")[0], re.DOTALL)


def test_the_readme_builds_with_the_build_command():
    install, tests = _readme_commands()
    assert install.endswith("&& .venv/bin/python -m iclr_lib.book.build") and "pip install torch==2.13.0 &&" in install
    assert tests == ".venv/bin/python -m pytest"
    assert "python -m pytest" in (ROOT / ".ci" / "run").read_text()


def test_the_pages_workflow_runs_the_readme_command_and_deploys():
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "pages.yml").read_text())
    triggers = workflow[True] if True in workflow else workflow["on"]      # YAML 1.1 reads `on` as True
    assert "main" in triggers["push"]["branches"] and "workflow_dispatch" in triggers
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    steps = workflow["jobs"]["build"]["steps"]
    runs = [step.get("run", "") for step in steps]
    install, _ = _readme_commands()
    assert install in runs, "the workflow must run the README's first command, unchanged"
    uses = [step.get("uses", "") for step in steps]
    upload = next(step for step in steps if step.get("uses", "").startswith("actions/upload-pages-artifact"))
    assert upload["with"]["path"] == "_build/html"
    assert any(u.startswith("actions/setup-python") for u in uses)
    cached = next(step for step in steps if step.get("uses", "").startswith("actions/cache"))
    assert "_build/full/executed" in cached["with"]["path"]
    deploy = workflow["jobs"]["deploy"]
    assert deploy["needs"] == "build" and deploy["steps"][0]["uses"].startswith("actions/deploy-pages")
    env = workflow["jobs"]["build"].get("env", {})
    assert env.get("PIP_EXTRA_INDEX_URL") == "https://download.pytorch.org/whl/cpu", "keep pip off the CUDA torch"
