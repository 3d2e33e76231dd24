"""Colab, tested like Colab (issue: "Colab for real").

1. Python 3.13 (Colab's default runtime): ``pip install --dry-run`` resolves the core and every extra
   with numpy 2 pinned as installed and torch stubbed as installed (no CUDA torch is downloaded), and
   fails for libpecos, which is why chapter 2's cell stops on 3.13 and says what to do.
2. A numpy-2 environment (Python 3.11 here: the CPU torch wheel on this machine is cp311) with
   Colab-like packages preinstalled (``tests/colab_like.txt``): every chapter's install commands
   (``iclr_lib.book.colab.install_commands``) run against this checkout; numpy, scipy, pandas and torch
   are not touched; ``pip check`` reports only libpecos's declared pins (installed with --no-deps on
   purpose); chapters run in quick mode there and record the same claims as the pinned book.

Both need the package registry and minutes, so they run when ``ICLR_LIB_COLAB_ENV=1`` (``.ci/run`` sets
it); otherwise they are skipped with that reason, and under ``CI`` without it they fail.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import pytest

from book_helpers import ROOT
from iclr_lib.book import colab

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
COLAB_LIKE = [line.split("#")[0].strip() for line in (ROOT / "tests" / "colab_like.txt").read_text().splitlines()
              if line.split("#")[0].strip()]
NUMPY = next(r for r in COLAB_LIKE if r.startswith("numpy=="))
TORCH = "torch==2.13.0"  # the book's CPU build (BOOK.md; README)
#: Chapters run in quick mode in the numpy-2 environment: the GIANT chapter (libpecos under numpy 2 and
#: torch-geometric), the recommender chapters, Trans-Encoder (transformers, onnx), DIVA and trajectories.
NUMPY2_CHAPTERS = ["02_giant_xrt", "04_item_to_item_cf", "05_rim", "08_trans_encoder", "09_diva",
                   "11_trajectory_shapley"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


@pytest.fixture(scope="module", autouse=True)
def _enabled():
    if os.environ.get("ICLR_LIB_COLAB_ENV") != "1":
        if os.environ.get("CI"):
            pytest.fail("CI must set ICLR_LIB_COLAB_ENV=1: the Colab environment tests are part of CI")
        pytest.skip("the Colab environment tests need the package registry and ~20 minutes: "
                    "set ICLR_LIB_COLAB_ENV=1 (.ci/run does)")


def _pip(python: str | Path, *args: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=timeout,
                         env=env)
    if check and run.returncode:
        raise AssertionError(f"pip {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return run


def _requirements(extra: str) -> list[str]:
    """The core's requirements plus those of ``extra`` ('' for the core), from pyproject.toml."""
    reqs = list(PYPROJECT["project"]["dependencies"])
    if extra:
        reqs += PYPROJECT["project"]["optional-dependencies"][extra]
    return reqs


def _stub_wheel(folder: Path, name: str, version: str) -> Path:
    """An empty wheel ``name==version`` (no requirements): a package "already installed" for pip."""
    dist = f"{name}-{version}.dist-info"
    files = {f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
             f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: iclr-lib-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{dist}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{dist}/RECORD,,\n"
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return path


def _resolve(requirements: list[str], tmp_path: Path, python: str = "3.13", *options: str) -> subprocess.CompletedProcess:
    """``pip install --dry-run`` for CPython ``python`` on manylinux x86-64, with Colab's numpy pinned and
    torch stubbed as installed (``torch==<version>+colab``, which no index has), so nothing big is fetched."""
    stubs = tmp_path / "stubs"
    stubs.mkdir(exist_ok=True)
    _stub_wheel(stubs, "torch", TORCH.split("==")[1] + "+colab")
    reqs = [r for r in requirements if not re.match(r"torch[<>=!~ ]", r)]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    return _pip(sys.executable, "install", "--dry-run", "--ignore-installed", "--target", str(tmp_path / "t"),
                "--python-version", python, "--implementation", "cp", *platforms, "--only-binary=:all:",
                "--find-links", str(stubs), "--report", str(tmp_path / "report.json"), "-q", *options,
                NUMPY, TORCH + "+colab", *reqs, check=False, timeout=600)


@pytest.mark.parametrize("extra", ["", "graph", "trans-encoder", "book", "test"])
def test_core_and_extras_resolve_on_python_313_with_numpy_2(extra, tmp_path):
    run = _resolve(_requirements(extra), tmp_path)
    assert run.returncode == 0, f"[{extra or 'core'}] does not resolve on Python 3.13:\n{run.stderr[-3000:]}"
    chosen = {i["metadata"]["name"].lower(): i["metadata"]["version"]
              for i in json.loads((tmp_path / "report.json").read_text())["install"]}
    assert chosen["numpy"] == NUMPY.split("==")[1], "resolution moved numpy"
    assert chosen["torch"].endswith("+colab"), "resolution replaced the installed torch"
    assert not any(name.startswith("nvidia-") for name in chosen), "resolution pulled CUDA packages"


def test_libpecos_has_no_python_313_wheel(tmp_path):
    """Why chapter 2's cell stops on Python 3.13. When this fails, libpecos supports 3.13: drop the stop."""
    run = _resolve(["libpecos>=1.2.8"], tmp_path)
    assert run.returncode != 0 and "libpecos" in run.stderr, run.stderr[-2000:]


def test_chapter_2s_colab_install_resolves_on_python_312(tmp_path):
    """On Colab's runtime version 26.07 (Python 3.12), chapter 2's cell takes libpecos's cp312 wheel
    with --no-deps, then the core and the graph extra, without moving numpy."""
    pecos_cmd, package_cmd = colab.install_commands("02_giant_xrt")
    assert "--no-deps" in pecos_cmd
    run = _resolve([colab.LIBPECOS], tmp_path, "3.12", "--no-deps")
    assert run.returncode == 0, run.stderr[-2000:]
    files = [i["download_info"]["url"] for i in json.loads((tmp_path / "report.json").read_text())["install"]]
    assert any("libpecos-1.2.8-cp312" in f for f in files), files
    run = _resolve(_requirements(colab.extra_of("02_giant_xrt")), tmp_path, "3.12")
    assert run.returncode == 0, run.stderr[-2000:]


# ----------------------------------------------------------------------------- the numpy-2 environment
def _versions(python: Path, names: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))")
    return json.loads(subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True,
                                     check=True).stdout)


@pytest.fixture(scope="module")
def colab_env(tmp_path_factory) -> dict:
    """A Colab-like numpy-2 venv, then every chapter's install commands against this checkout."""
    venv = tmp_path_factory.mktemp("colab") / "venv"
    timings = {}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    _pip(python, "install", "-q", TORCH)
    _pip(python, "install", "-q", *COLAB_LIKE)
    timings["colab-like runtime"] = time.perf_counter() - start
    watched = ["numpy", "scipy", "pandas", "torch", "scikit-learn", "matplotlib", "transformers"]
    before = _versions(python, watched)
    sizes = {}
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # One command set per distinct extra, in the order a reader meeting the chapters would run them.
    seen = set()
    for name in sorted({*colab.CHAPTER_EXTRAS, "04_item_to_item_cf"}, key=colab.extra_of):
        key = (colab.extra_of(name), name in colab.PECOS_CHAPTERS)
        if key in seen:
            continue
        seen.add(key)
        size_before = _folder_size(site)
        t = time.perf_counter()
        for command in colab.install_commands(name, source=f"file://{ROOT}"):
            _pip(python, *command)
        label = f"{name} [{colab.extra_of(name) or 'core'}]"
        timings[label] = time.perf_counter() - t
        sizes[label] = _folder_size(site) - size_before
    return {"python": python, "before": before, "after": _versions(python, watched), "timings": timings,
            "sizes_mb": {k: v / 2**20 for k, v in sizes.items()}}


def _folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def test_installing_the_chapters_keeps_colabs_numpy_torch_and_pandas(colab_env):
    assert colab_env["after"] == colab_env["before"], (
        f"the install cells changed Colab's packages: {colab_env['before']} -> {colab_env['after']}")
    print("install times (s):", {k: round(v) for k, v in colab_env["timings"].items()},
          "added to site-packages (MB):", {k: round(v) for k, v in colab_env["sizes_mb"].items()})


def test_pip_check_reports_only_libpecos_declared_pins(colab_env):
    """libpecos is installed with --no-deps on purpose (its numpy<2 / scipy<1.14 pins, and peft and
    sentencepiece, which the XR-Linear parts the book uses never import); nothing else may be broken."""
    report = _pip(colab_env["python"], "check", check=False).stdout.strip().splitlines()
    others = [line for line in report if not line.startswith("libpecos ")]
    assert not others, "pip check:\n" + "\n".join(report)


def test_colab_packages_still_import(colab_env):
    code = "import pyarrow, datasets, sentence_transformers, transformers, torch_geometric, pecos, iclr_lib.giant"
    run = subprocess.run([str(colab_env["python"]), "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]


# Runs in the numpy-2 environment's interpreter, from the repository root (the kernels run in book/).
RUNNER = """
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from book_helpers import execute_chapter
print(json.dumps({name: execute_chapter(name, Path(sys.argv[1]) / f"{name}.ipynb") for name in sys.argv[2:]}))
"""


@pytest.fixture(scope="module")
def numpy2_runs(colab_env, tmp_path_factory) -> dict:
    """The chapters of NUMPY2_CHAPTERS in quick mode, in the numpy-2 environment."""
    results = Path(os.environ.get("ICLR_LIB_NUMPY2_RESULTS_DIR") or tmp_path_factory.mktemp("np2results"))
    results.mkdir(parents=True, exist_ok=True)
    executed = tmp_path_factory.mktemp("np2executed")
    env = {**os.environ, "ICLR_LIB_QUICK": "1", "ICLR_LIB_RESULTS_DIR": str(results)}
    env.pop("MPLBACKEND", None)
    run = subprocess.run([str(colab_env["python"]), "-c", RUNNER, str(executed), *NUMPY2_CHAPTERS], cwd=ROOT,
                         capture_output=True, text=True, env=env, timeout=3600)
    assert run.returncode == 0, run.stderr[-3000:]
    outcome = json.loads(run.stdout.strip().splitlines()[-1])
    return {name: {**o, "results": results / f"{name}.json"} for name, o in outcome.items()}


@pytest.mark.parametrize("name", NUMPY2_CHAPTERS)
def test_chapter_runs_under_numpy_2_with_the_same_claims(numpy2_runs, name):
    from iclr_lib.book.claims import headline_of, problems
    from iclr_lib.book.dashboard import PENDING

    run = numpy2_runs[name]
    assert run["error"] is None, f"{name} failed under numpy 2: {run['error']}"
    fresh = json.loads(run["results"].read_text())
    recorded = json.loads((ROOT / "book" / "results" / "quick" / f"{name}.json").read_text())
    assert fresh["meta"]["versions"]["numpy"].startswith("2.")
    if name in PENDING:
        assert fresh["results"]["headline"]["claim"] == recorded["results"]["headline"]["claim"]
        ours, pinned = fresh["results"]["headline"]["our_value"], recorded["results"]["headline"]["our_value"]
    else:
        claims = fresh["results"]["claims"]
        assert problems(claims, full=False) == [], problems(claims, full=False)
        assert [c["id"] for c in claims] == [c["id"] for c in recorded["results"]["claims"]]
        ours, pinned = headline_of(claims)["ours"]["mean"], headline_of(recorded["results"]["claims"])["ours"]["mean"]
    print(f"{name}: quick headline under numpy 2 {ours!r} vs pinned {pinned!r}, {run['seconds']:.0f} s")
