"""The repository URL is defined once (iclr_lib.REPOSITORY_URL); every chapter's Colab cell and
badge, _config.yml and pyproject.toml must agree with it, and notebooks follow the contract."""
from __future__ import annotations

import tomllib

import pytest
import yaml

import iclr_lib
from book_helpers import ROOT, cell_source, chapter_names, load_notebook

CHAPTERS = chapter_names()


def test_at_least_one_chapter_is_listed():
    assert CHAPTERS, "_toc.yml lists no chapter notebook"


def test_config_and_pyproject_use_the_one_repository_url():
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["repository"]["url"] == iclr_lib.REPOSITORY_URL
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["urls"]["Source"] == iclr_lib.REPOSITORY_URL
    assert config["execute"]["raise_on_error"] is True


@pytest.mark.parametrize("name", CHAPTERS)
def test_colab_install_cell_and_badge_match_the_repository(name):
    nb = load_notebook(name)
    code = [cell_source(c) for c in nb["cells"] if c["cell_type"] == "code"]
    install = [c for c in code if '"google.colab" in sys.modules' in c]
    assert len(install) == 1, f"{name}: needs exactly one Colab-only install cell"
    assert f"git+{iclr_lib.REPOSITORY_URL}@v{iclr_lib.__version__}" in install[0], (
        f"{name}: the install cell must install git+{iclr_lib.REPOSITORY_URL}@v{iclr_lib.__version__}")
    assert "torch-scatter" not in install[0] and "torch-sparse" not in install[0]
    owner_repo = iclr_lib.REPOSITORY_URL.removeprefix("https://github.com/")
    badge = f"https://colab.research.google.com/github/{owner_repo}/blob/main/book/{name}.ipynb"
    assert badge in cell_source(nb["cells"][0]), f"{name}: the first cell needs the Open-in-Colab badge {badge}"


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
