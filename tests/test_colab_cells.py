"""Colab: every chapter's install cell and badge are written by iclr_lib.book.colab, point at a ref
that exists, install exactly the chapter's extra, behave as promised when run (a simulated Colab),
and cover every third-party import of the chapter. The repository URL is defined once."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import tomllib
import types

import pytest
import yaml

import iclr_lib
from book_helpers import ROOT, cell_source, chapter_names, load_notebook
from iclr_lib.book import colab

CHAPTERS = chapter_names()
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
#: Import names the core dependencies provide (pyproject's [project].dependencies), plus what every
#: Jupyter kernel has.
CORE_MODULES = {"numpy", "scipy", "sklearn", "matplotlib", "PIL", "pandas", "tqdm", "torch", "IPython",
                "iclr_lib"}


def _install_cell(name: str) -> str:
    nb = load_notebook(name)
    cells = [cell_source(c) for c in nb["cells"] if c["cell_type"] == "code"
             and '"google.colab" in sys.modules' in cell_source(c)]
    assert len(cells) == 1, f"{name}: needs exactly one Colab-only install cell"
    return cells[0]


def _as_python(source: str) -> str:
    from IPython.core.inputtransformer2 import TransformerManager

    return TransformerManager().transform_cell(source)


def test_at_least_one_chapter_is_listed():
    assert CHAPTERS, "_toc.yml lists no chapter notebook"


def test_config_and_pyproject_use_the_one_repository_url():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == iclr_lib.REPOSITORY_URL
    assert config["repository"]["branch"] == colab.REF
    assert PYPROJECT["project"]["urls"]["Source"] == iclr_lib.REPOSITORY_URL
    assert config["execute"]["raise_on_error"] is True


def test_the_ref_that_cells_and_badges_use_exists_in_this_repository():
    """Badges open blob/REF and cells install @REF: REF must be a branch (or tag) of this repository."""
    try:
        top = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        if os.environ.get("CI"):
            pytest.fail("CI must run in a git checkout: the Colab ref cannot be checked otherwise")
        pytest.skip("not a git checkout (an sdist?): the Colab ref cannot be checked")
    assert os.path.samefile(top, ROOT)
    found = [ref for ref in (f"refs/heads/{colab.REF}", f"refs/remotes/origin/{colab.REF}", f"refs/tags/{colab.REF}")
             if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
                               capture_output=True).returncode == 0]
    assert found, f"the Colab ref {colab.REF!r} is neither a branch nor a tag of this repository"


@pytest.mark.parametrize("name", CHAPTERS)
def test_install_cell_and_badge_are_the_generated_ones(name):
    assert _install_cell(name) == colab.install_cell(name), (
        f"{name}: run `python -m iclr_lib.book.colab write`")
    assert colab.badge(name) in cell_source(load_notebook(name)["cells"][0]), (
        f"{name}: the first cell needs the badge {colab.badge(name)}")
    assert f"blob/{colab.REF}/" in colab.badge(name) and f"@{colab.REF}\"" in colab.install_cell(name)
    compile(_as_python(_install_cell(name)), name, "exec")


def test_colab_check_command_agrees_with_the_notebooks():
    assert colab.main(["check"]) == 0


def test_extras_exist_and_core_has_no_upper_bound_on_numpy():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra in (set(colab.CHAPTER_EXTRAS.values()) | set(colab.EXTRA_MODULES)) - {""}:
        assert extra in extras, f"pyproject.toml has no extra {extra!r}"
    core = PYPROJECT["project"]["dependencies"]
    numpy = [d for d in core if d.startswith("numpy")]
    assert numpy and "<" not in numpy[0], f"the core must not cap numpy: {numpy}"
    heavy = ("libpecos", "transformers", "onnx", "torch-geometric", "sentence-transformers")
    assert not [d for d in core if d.startswith(heavy)], "chapter-specific packages belong in extras"


def _third_party_imports(name: str) -> set[str]:
    nb = load_notebook(name)
    found = set()
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse(_as_python(cell_source(cell)))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names}


@pytest.mark.parametrize("name", CHAPTERS)
def test_the_chapters_extra_covers_its_imports(name):
    provided = CORE_MODULES | set(colab.EXTRA_MODULES[colab.extra_of(name)])
    if name in colab.PECOS_CHAPTERS:
        provided.add("pecos")
    missing = _third_party_imports(name) - provided
    assert not missing, f"{name} imports {sorted(missing)}, which neither the core nor its extra installs"


class _FakeIPython:
    def __init__(self):
        self.calls: list[tuple[str, str]] = []

    def run_line_magic(self, magic, line):
        self.calls.append((magic, line))


def _run_cell_as_colab(name, monkeypatch, missing: set[str], version=None):
    import importlib.util

    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m in missing else True)
    if version is not None:
        monkeypatch.setattr(sys, "version_info", version)
    shell = _FakeIPython()
    exec(_as_python(_install_cell(name)), {"get_ipython": lambda: shell})
    return [line.split() for magic, line in shell.calls if magic == "pip"]


@pytest.mark.parametrize("name", CHAPTERS)
def test_install_cell_on_a_fresh_colab_runs_the_install_commands(name, monkeypatch):
    everything = {"iclr_lib", "pecos", *colab.EXTRA_MODULES[colab.extra_of(name)]}
    ran = _run_cell_as_colab(name, monkeypatch, missing=everything)
    want = [" ".join(c) for c in colab.install_commands(name)]
    assert [" ".join(c).replace('"', "") for c in ran] == want


@pytest.mark.parametrize("name", CHAPTERS)
def test_install_cell_installs_nothing_when_everything_is_there(name, monkeypatch):
    assert _run_cell_as_colab(name, monkeypatch, missing=set()) == []


@pytest.mark.parametrize("name", colab.PECOS_CHAPTERS)
def test_pecos_chapter_stops_on_python_313_before_installing(name, monkeypatch):
    with pytest.raises(RuntimeError, match="Change runtime version"):
        _run_cell_as_colab(name, monkeypatch, missing={"iclr_lib", "pecos", "torch_geometric"},
                           version=(3, 13, 0, "final", 0))


def test_install_cell_of_a_core_chapter_never_names_torch_numpy_or_pandas():
    for name in CHAPTERS:
        for command in colab.install_commands(name):
            assert not any(arg.split("=")[0].split("[")[0] in {"torch", "numpy", "pandas", "scipy"}
                           for arg in command), (name, command)


@pytest.mark.parametrize("name", CHAPTERS)
def test_notebook_is_committed_clean_with_one_parameters_cell(name):
    nb = load_notebook(name)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert not any(c.get("outputs") for c in code), f"{name}: commit notebooks without outputs"
    assert not any(c.get("execution_count") for c in code), f"{name}: clear execution counts"
    params = [c for c in code if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1 and "ICLR_LIB_QUICK" in cell_source(params[0])
    exercise_labels = [line.split(":label:")[1].strip() for c in nb["cells"] if c["cell_type"] == "markdown"
                       for line in cell_source(c).splitlines() if line.startswith(":label: ex-")]
    number = name.split("_")[0]
    assert len(exercise_labels) >= 4
    assert all(label.startswith(f"ex-{number}-") for label in exercise_labels), exercise_labels
