"""The instructor kit: student copies of the chapters, with the solutions taken out.

Two kinds of solution regions are removed:

- in markdown cells, every ``{solution}`` block (sphinx-exercise), whatever its fence length;
- in code cells, the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` (nbgrader's markers),
  replaced by ``raise NotImplementedError(...)`` at the same indentation.

The ``{exercise}`` blocks, with their stable labels ``ex-<chapter>-<n>``, stay. Command::

    python -m iclr_lib.book.instructor student-copies --out _student     # from the repository root

``_student/`` is excluded from the book build and from git.
"""
from __future__ import annotations

import argparse
import copy
import re
from pathlib import Path

import nbformat

BEGIN, END = "# BEGIN SOLUTION", "# END SOLUTION"
_EXERCISE_LABEL = re.compile(r"^:label:\s*(ex-\d\d-\d+)\s*$", re.MULTILINE)
_SOLUTION_OPEN = re.compile(r"^(`{3,})\{solution\}")


def strip_markdown_solutions(text: str) -> str:
    """Remove every ```` ```{solution} ... ``` ```` block (any fence of 3+ backticks) from markdown."""
    out, lines, i = [], text.split("\n"), 0
    while i < len(lines):
        match = _SOLUTION_OPEN.match(lines[i])
        if not match:
            out.append(lines[i])
            i += 1
            continue
        fence = match.group(1)
        j = i + 1
        while j < len(lines) and lines[j].rstrip() != fence:
            j += 1
        if j == len(lines):
            raise ValueError(f"unclosed {{solution}} block starting at line {i + 1}: {lines[i]!r}")
        i = j + 1
        while i < len(lines) and not lines[i].strip() and out and not out[-1].strip():
            i += 1                                    # do not leave a double blank line behind
    return "\n".join(out)


def strip_code_solutions(source: str) -> str:
    """Replace the lines between ``# BEGIN SOLUTION`` and ``# END SOLUTION`` with a NotImplementedError."""
    out, inside, indent = [], False, ""
    for number, line in enumerate(source.split("\n"), start=1):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise ValueError(f"nested {BEGIN} at line {number}")
            inside, indent = True, line[: len(line) - len(line.lstrip())]
            out.append(f'{indent}raise NotImplementedError("your solution here")')
        elif stripped == END:
            if not inside:
                raise ValueError(f"{END} without {BEGIN} at line {number}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{BEGIN} without {END}")
    return "\n".join(out)


def exercise_labels(notebook: nbformat.NotebookNode) -> list[str]:
    """The ``ex-NN-k`` labels of a notebook's exercises, in order."""
    return [label for cell in notebook.cells if cell.cell_type == "markdown"
            for label in _EXERCISE_LABEL.findall(cell.source)]


def student_copy(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``notebook`` without solutions; outputs are cleared."""
    student = copy.deepcopy(notebook)
    for cell in student.cells:
        if cell.cell_type == "markdown":
            cell.source = strip_markdown_solutions(cell.source)
        elif cell.cell_type == "code":
            cell.source = strip_code_solutions(cell.source)
            cell.outputs, cell.execution_count = [], None
    return student


def write_student_copies(book_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """Write a student copy of every chapter notebook ``book_dir/NN_*.ipynb`` into ``out_dir``."""
    book_dir, out_dir = Path(book_dir), Path(out_dir)
    chapters = sorted(book_dir.glob("[0-9][0-9]_*.ipynb"))
    if not chapters:
        raise FileNotFoundError(f"no chapter notebooks (NN_name.ipynb) in {book_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in chapters:
        target = out_dir / path.name
        nbformat.write(student_copy(nbformat.read(path, as_version=4)), target)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iclr_lib.book.instructor",
                                     description="Write student copies of the chapters (solutions removed).")
    parser.add_argument("command", choices=("student-copies",))
    parser.add_argument("--book", default="book", help="folder with the chapter notebooks (default: book)")
    parser.add_argument("--out", default="_student", help="output folder (default: _student)")
    args = parser.parse_args(argv)
    for path in write_student_copies(args.book, args.out):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
