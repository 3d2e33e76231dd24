"""The book-level tools: the dashboard generated from recorded results, the student copies of the
instructor kit, and the offline MathJax extension."""
from __future__ import annotations

import json
import subprocess
import sys

import nbformat
import papermill
import pytest

from book_helpers import ROOT, chapter_names
from iclr_lib.book import claims, dashboard, instructor

CHAPTERS = chapter_names()


# ----------------------------------------------------------------------------- dashboard
LIKE = {"data": False, "metric": True, "protocol": False, "note": "small data"}
PINS = "numpy==1.26.4\nscipy==1.13.1  # a comment\ntorch==2.13.0\n-e .\n"
VERSIONS = {"python": "3.11.7", "numpy": "1.26.4", "scipy": "1.13.1", "torch": "2.13.0+cpu", "iclr_lib": "0.1.0"}


def _ledger(values, full=True):
    ledger = claims.Ledger(full=full)
    ledger.add("head", headline=True, claim="the method beats the baseline", source="Table 1", kind="difference",
               metric="accuracy gain (points)", paper=2.2, values=values, like_for_like=LIKE, selection="fixed")
    ledger.add("own", ours_only=True, claim="the method beats nothing", source="ours", kind="difference",
               metric="gain over no method (points)", paper=None, values=[1.0, 1.1, 0.9], like_for_like=LIKE,
               selection="fixed")
    return ledger.records()


@pytest.fixture
def pending(monkeypatch):
    """A chapter on dashboard.PENDING (every real chapter is under the protocol now; 08 left it with issue 28)."""
    monkeypatch.setitem(dashboard.PENDING, "08_trans_encoder", 28)


def _payload(chapter: str, mode: str, values=(-0.1, -0.3, -0.2), seconds=75.0, legacy=False) -> dict:
    results = ({"headline": {"claim": f"old claim of {chapter}", "metric": "old metric", "verdict": "reproduced"}}
               if legacy else {"claims": _ledger(list(values), full=mode == "full")})
    return {"meta": {"chapter": chapter, "mode": mode, "run_time_s": seconds, "versions": dict(VERSIONS)},
            "results": results}


def _book(tmp_path, payloads, intro="# intro\n"):
    book = tmp_path / "book"
    for payload in payloads:
        folder = book / "results" / payload["meta"]["mode"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{payload['meta']['chapter']}.json").write_text(json.dumps(payload))
    (book / "images").mkdir(parents=True, exist_ok=True)
    (book / "intro.md").write_text(f"{intro}{dashboard.START_MARKER}\nold\n{dashboard.END_MARKER}\n")
    (tmp_path / "requirements.txt").write_text(PINS)
    return book


def _write_and_check(book):
    requirements = book.parent / "requirements.txt"
    assert dashboard.main(["write", "--book", str(book), "--requirements", str(requirements)]) == 0
    return dashboard.check(book, requirements)


def test_dashboard_tables_come_from_the_ledgers(tmp_path, pending):
    recorded = dashboard.load_recorded(_book(tmp_path, [
        _payload("09_diva", "full", seconds=36.0), _payload("09_diva", "quick", values=(0.5, 0.6), seconds=16.4),
        _payload("08_trans_encoder", "full", legacy=True)]) / "results")
    table = dashboard.chapter_table(recorded)
    assert ("| 9 DIVA | 16 s / 36 s | the method beats the baseline (Table 1) | accuracy gain (points) | 2.2 "
            "| -0.2 ± 0.058 (n=3) | data ✗ / metric ✓ / protocol ✗ | **not reproduced** |") in table
    # every claim, with the quick-mode verdict of CI's run beside the book's
    assert ("| 9 DIVA | the method beats nothing | ours only | ours | difference | gain over no method (points) | - "
            "| 1 ± 0.058 (n=3) | data ✗ / metric ✓ / protocol ✗ | **reproduced** | reproduced |") in table
    assert "| **not reproduced** | reproduced |" in table                          # quick: n = 2, positive
    # a chapter not yet converted shows no self-graded verdict
    assert "| 8 Trans-Encoder | - / 1 min 15 s | old claim of 08_trans_encoder | old metric | - | - | - " in table
    pending = [line for line in table.splitlines() if line.startswith("| 8 Trans-Encoder | ")]
    assert len(pending) == 1 and "not yet under the claims protocol (issue 28)" in pending[0]
    assert "**" not in pending[0], "a chapter not under the protocol must show no verdict"
    assert "[DIVA](09_diva.ipynb)" in table and "GRDA (being written)" in table


def test_dashboard_check_passes_on_fresh_tables_and_fails_when_stale(tmp_path):
    book = _book(tmp_path, [_payload("09_diva", "full"), _payload("09_diva", "quick")])
    assert _write_and_check(book) == []
    (book / "intro.md").write_text((book / "intro.md").read_text().replace("Table 1", "Table 2"))
    assert any("intro.md is out of date" in p for p in dashboard.check(book, tmp_path / "requirements.txt"))


def test_dashboard_check_fails_on_a_verdict_edited_by_hand(tmp_path):
    payload = _payload("09_diva", "full")
    payload["results"]["claims"][0]["verdict"] = "reproduced"                  # the rule says: not reproduced
    found = _check_only(tmp_path, [payload])
    assert any("verdict 'reproduced', but the rule gives 'not reproduced'" in p for p in found), found


def test_dashboard_check_fails_on_a_version_mismatch(tmp_path):
    payload = _payload("09_diva", "full")
    payload["meta"]["versions"]["scipy"] = "1.17.1"
    found = _check_only(tmp_path, [payload])
    assert "09_diva (full): recorded with scipy 1.17.1, requirements.txt pins 1.13.1" in found
    payload["meta"]["versions"].update(scipy="1.13.1", python="3.12.1")
    assert any("Python 3.12.1" in p for p in _check_only(tmp_path / "b", [payload]))


def test_dashboard_check_fails_on_protocol_breaches(tmp_path, pending):
    one_seed = _payload("09_diva", "full")
    head = one_seed["results"]["claims"][0]
    head["ours"] = claims.summarise([-0.1])
    head["verdict"] = "not reproduced"
    assert any("rests on 1 seed(s)" in p for p in _check_only(tmp_path / "a", [one_seed]))
    assert any("no claims ledger" in p for p in _check_only(tmp_path / "b", [_payload("09_diva", "full", legacy=True)]))
    converted = _payload("08_trans_encoder", "full")                                   # on the PENDING list, but converted
    assert any("take it off dashboard.PENDING" in p for p in _check_only(tmp_path / "c", [converted]))


def _check_only(tmp_path, payloads):
    book = _book(tmp_path, payloads)
    return dashboard.check(book, tmp_path / "requirements.txt")


def test_dashboard_check_fails_on_a_verdict_typed_into_a_chapter(tmp_path):
    book = _book(tmp_path, [_payload("09_diva", "full")])
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("The gain is within noise here."),
                                               nbformat.v4.new_code_cell("x = 'reproduced'")])
    nbformat.write(notebook, book / "09_diva.ipynb")
    found = dashboard.check(book, tmp_path / "requirements.txt")
    assert found == ["a verdict typed by hand (use the ledger's table): 09_diva.ipynb, cell 0: "
                     "'The gain is within noise here.'"]


def test_pinned_versions_read_requirements():
    pins = dashboard.pinned_versions(ROOT / "requirements.txt")
    assert pins["scipy"] == "1.13.1" and pins["torch"] == "2.13.0" and pins["scikit-learn"]
    assert dashboard.version_problems({"meta": {"versions": {"torch": "2.13.0+cpu", "python": "3.11.7"}}}, pins) == []


def test_dashboard_run_refuses_an_unpinned_environment(tmp_path, capsys):
    (tmp_path / "requirements.txt").write_text("numpy==0.0.1\n")
    assert dashboard.main(["run", "--book", str(tmp_path), "--requirements", str(tmp_path / "requirements.txt"),
                           "--chapters"]) == 2
    assert "numpy" in capsys.readouterr().err


def test_render_intro_replaces_only_the_generated_part():
    text = f"intro\n{dashboard.START_MARKER}\nold table\n{dashboard.END_MARKER}\nafter\n"
    assert dashboard.render_intro(text, "NEW") == f"intro\n{dashboard.START_MARKER}\nNEW\n{dashboard.END_MARKER}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        dashboard.render_intro("no markers", "NEW")


def test_dashboard_figure_is_deterministic(tmp_path, pending):
    recorded = dashboard.load_recorded(_book(tmp_path, [_payload("09_diva", "full"),
                                                        _payload("08_trans_encoder", "full", legacy=True)]) / "results")
    first = dashboard.headline_figure(recorded, tmp_path / "a.svg").read_bytes()
    second = dashboard.headline_figure(recorded, tmp_path / "b.svg").read_bytes()
    assert first == second and b"<svg" in first


def test_the_committed_dashboard_passes_its_check():
    """`python -m iclr_lib.book.dashboard check`: ledgers, versions, typed verdicts, intro.md and figure."""
    check = subprocess.run([sys.executable, "-m", "iclr_lib.book.dashboard", "check"], cwd=ROOT,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


# ----------------------------------------------------------------------------- instructor kit
def test_strip_markdown_solutions_removes_every_fence_length():
    text = ("```{exercise} A\n:label: ex-01-1\n\nQ\n```\n\n```{solution} ex-01-1\n:class: dropdown\n\nsecret 1\n```\n\n"
            "````{exercise} B\n:label: ex-01-2\n\n```python\ncode()\n```\n````\n\n"
            "````{solution} ex-01-2\n:class: dropdown\n\n```python\nsecret_2()\n```\n````\n\n## References\n")
    student = instructor.strip_markdown_solutions(text)
    assert "secret" not in student and "{solution}" not in student
    assert ":label: ex-01-1" in student and ":label: ex-01-2" in student and "code()" in student
    assert student.endswith("## References\n") and "\n\n\n" not in student
    with pytest.raises(ValueError, match="unclosed"):
        instructor.strip_markdown_solutions("```{solution} ex-01-1\nsecret\n")


def test_strip_code_solutions_keeps_the_scaffold():
    source = "def f(x):\n    # BEGIN SOLUTION\n    return 2 * x\n    # END SOLUTION\n\ncheck(f)"
    assert instructor.strip_code_solutions(source) == (
        'def f(x):\n    raise NotImplementedError("your solution here")\n\ncheck(f)')
    with pytest.raises(ValueError, match="without"):
        instructor.strip_code_solutions("# BEGIN SOLUTION\nx = 1")


@pytest.mark.parametrize("name", CHAPTERS)
def test_student_copy_keeps_exercises_and_code_but_no_solutions(name, tmp_path):
    original = nbformat.read(ROOT / "book" / f"{name}.ipynb", as_version=4)
    student = nbformat.read(_student_path(name, tmp_path), as_version=4)
    assert instructor.exercise_labels(student) == instructor.exercise_labels(original)
    assert len(instructor.exercise_labels(student)) >= 4
    assert all(label.startswith(f"ex-{name[:2]}-") for label in instructor.exercise_labels(student))
    text = "\n".join(cell.source for cell in student.cells)
    assert "{solution}" not in text and instructor.BEGIN not in text
    for before, after in zip(original.cells, student.cells):
        if before.cell_type == "code" and instructor.BEGIN not in before.source:
            assert after.source == before.source, f"{name}: a code cell without solution markers changed"


def _student_path(name, tmp_path):
    paths = {p.stem: p for p in instructor.write_student_copies(ROOT / "book", tmp_path)}
    return paths[name]


@pytest.mark.chapters
def test_student_copy_runs_up_to_its_coding_exercise(tmp_path, monkeypatch):
    """The DIVA student copy runs in quick mode until the exercise cell that asks for the reader's code."""
    student = _student_path("09_diva", tmp_path)
    monkeypatch.setenv("ICLR_LIB_QUICK", "1")
    monkeypatch.delenv("ICLR_LIB_RESULTS_DIR", raising=False)
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(student), str(tmp_path / "out.ipynb"), cwd=str(ROOT / "book"),
                                   kernel_name="python3", progress_bar=False)
    assert failure.value.ename == "NotImplementedError"
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    failed = [c for c in executed.cells if c.cell_type == "code" and any(o.get("output_type") == "error" for o in c.outputs)]
    assert len(failed) == 1 and "ex-09-3" in failed[0].source


def test_student_copies_command(tmp_path):
    run = subprocess.run([sys.executable, "-m", "iclr_lib.book.instructor", "student-copies", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.stem for p in tmp_path.glob("*.ipynb")) == sorted(
        p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


# ----------------------------------------------------------------------------- offline MathJax
def test_mathjax_is_installed_for_the_book():
    from iclr_lib.book.sphinx_mathjax import ENTRY, mathjax_source

    source = mathjax_source()
    assert (source / ENTRY).stat().st_size > 500_000
    assert (source / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
