"""A Sphinx extension that ships MathJax 3 with the book, so its equations render offline.

Sphinx loads MathJax from a CDN by default; a reader without internet (or a CI machine) then sees
raw ``$...$``. This extension points ``mathjax_path`` at ``_static/mathjax/tex-mml-chtml.js`` and,
after an HTML build, copies that file and the parts it loads on demand (fonts, input and output
modules, the menu and accessibility extensions) from the ``django-static-mathjax`` wheel (MathJax
3.2.2, Apache-2.0; it needs no Django). Enable it in ``_config.yml``::

    sphinx:
      extra_extensions: [iclr_lib.book.sphinx_mathjax]
"""
from __future__ import annotations

import shutil
from importlib.resources import files
from pathlib import Path

ENTRY = "tex-mml-chtml.js"
PARTS = ("output", "input", "ui", "a11y", "adaptors")     # what the combined component may load lazily


def mathjax_source() -> Path:
    """The folder with MathJax 3's ``es5`` build inside the installed ``django-static-mathjax``."""
    try:
        folder = Path(str(files("mathjax"))) / "static" / "mathjax" / "es5"
    except ModuleNotFoundError as exc:
        raise RuntimeError("iclr_lib.book.sphinx_mathjax needs `pip install django-static-mathjax==3.2.2.1`") from exc
    if not (folder / ENTRY).is_file():
        raise RuntimeError(f"{folder / ENTRY} not found: is django-static-mathjax 3.x installed?")
    return folder


def _use_local_mathjax(app, config) -> None:
    config.mathjax_path = f"mathjax/{ENTRY}"          # relative paths are relative to _static


def _copy_mathjax(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    source, target = mathjax_source(), Path(app.outdir) / "_static" / "mathjax"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / ENTRY, target / ENTRY)
    for part in PARTS:
        if (source / part).is_dir():
            shutil.copytree(source / part, target / part, dirs_exist_ok=True)


def setup(app):
    mathjax_source()                                   # fail early, with the install hint
    app.connect("config-inited", _use_local_mathjax)
    app.connect("build-finished", _copy_mathjax)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
