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
from iclr_lib import dashboard, instructor

CHAPTERS = chapter_names()


# ----------------------------------------------------------------------------- dashboard
def _payload(chapter: str, mode: str, verdict: str = "reproduced", paper=2.0, ours=1.5, seconds=75.0) -> dict:
    return {"meta": {"chapter": chapter, "mode": mode, "run_time_s": seconds},
            "results": {"headline": {"claim": f"claim of {chapter}", "ours": "text", "verdict": verdict,
                                     "metric": "accuracy (%)", "paper_value": paper, "our_value": ours}}}


def _record(tmp_path, payloads):
    for payload in payloads:
        folder = tmp_path / payload["meta"]["mode"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{payload['meta']['chapter']}.json").write_text(json.dumps(payload))
    return dashboard.load_recorded(tmp_path)


def test_dashboard_table_comes_from_the_recorded_results(tmp_path):
    recorded = _record(tmp_path, [_payload("09_diva", "full", "not reproduced", 2.2, -0.17, 36.0),
                                  _payload("09_diva", "quick", seconds=16.4),
                                  _payload("04_item_to_item_cf", "full", "partly reproduced", None, 0.01, 130)])
    table = dashboard.chapter_table(recorded)
    assert "| 9 DIVA | 16 s / 36 s | claim of 09_diva | accuracy (%) | 2.2 | -0.17 | **not reproduced** |" in table
    assert "| 4 Item-to-item CF (bonus) | - / 2 min 10 s | claim of 04_item_to_item_cf | accuracy (%) | no number |" in table
    assert "**partly**" in table
    assert "[DIVA](09_diva.ipynb)" in table and "GRDA (being written)" in table
    assert table.count("\n|") >= len(dashboard.CHAPTERS) + 2


def test_dashboard_rejects_bad_records(tmp_path):
    bad = _payload("09_diva", "full")
    del bad["results"]["headline"]["metric"]
    with pytest.raises(ValueError, match="needs the keys"):
        dashboard.chapter_table(_record(tmp_path / "a", [bad]))
    with pytest.raises(ValueError, match="verdict must be one of"):
        dashboard.chapter_table(_record(tmp_path / "b", [_payload("09_diva", "full", "maybe")]))
    misplaced = _payload("09_diva", "quick")
    (tmp_path / "c" / "full").mkdir(parents=True)
    (tmp_path / "c" / "full" / "09_diva.json").write_text(json.dumps(misplaced))
    with pytest.raises(ValueError, match="quick"):
        dashboard.load_recorded(tmp_path / "c")


def test_render_intro_replaces_only_the_generated_part():
    text = f"intro\n{dashboard.START_MARKER}\nold table\n{dashboard.END_MARKER}\nafter\n"
    assert dashboard.render_intro(text, "NEW") == f"intro\n{dashboard.START_MARKER}\nNEW\n{dashboard.END_MARKER}\nafter\n"
    with pytest.raises(ValueError, match="markers"):
        dashboard.render_intro("no markers", "NEW")


def test_dashboard_figure_is_deterministic(tmp_path):
    recorded = _record(tmp_path, [_payload("09_diva", "full"), _payload("04_item_to_item_cf", "full", paper=None)])
    first = dashboard.headline_figure(recorded, tmp_path / "a.svg").read_bytes()
    second = dashboard.headline_figure(recorded, tmp_path / "b.svg").read_bytes()
    assert first == second and b"<svg" in first


def test_intro_and_figure_match_the_recorded_results():
    """`python -m iclr_lib.dashboard check`: the committed intro.md and figure are up to date."""
    check = subprocess.run([sys.executable, "-m", "iclr_lib.dashboard", "check"], cwd=ROOT,
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
    run = subprocess.run([sys.executable, "-m", "iclr_lib.instructor", "student-copies", "--out", str(tmp_path)],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert sorted(p.stem for p in tmp_path.glob("*.ipynb")) == sorted(
        p.stem for p in (ROOT / "book").glob("[0-9][0-9]_*.ipynb"))


# ----------------------------------------------------------------------------- offline MathJax
def test_mathjax_is_installed_for_the_book():
    from iclr_lib.sphinx_mathjax import ENTRY, mathjax_source

    source = mathjax_source()
    assert (source / ENTRY).stat().st_size > 500_000
    assert (source / "output" / "chtml" / "fonts" / "woff-v2").is_dir()
