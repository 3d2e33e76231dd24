"""Every chapter in _toc.yml runs top to bottom in quick mode (its reproduction checks are asserts),
then the whole book builds with ``jupyter-book build -W -n --keep-going`` (warnings are errors).

Each chapter is executed with papermill (one test per chapter, with its run time checked against
the quick-mode budget); results go to ``$ICLR_LIB_RESULTS_DIR`` (default: a temporary folder).
The book is then built (warnings are errors) in a temporary copy from those executed notebooks, with
the project's ``_config.yml`` except ``execute_notebooks: off``, so CI runs each chapter once; the
reader's build executes them itself (``test_reader_config_executes_every_chapter``).
"""
from __future__ import annotations

import html as html_lib
import json
import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import yaml
import pytest

from book_helpers import ROOT, chapter_names, execute_chapter

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
    outcome = {}
    for name in CHAPTERS:
        output = tmp_path_factory.mktemp("executed") / f"{name}.ipynb"
        outcome[name] = {**execute_chapter(name, output, "quick", results_dir),
                         "results": Path(results_dir) / f"{name}.json", "notebook": output}
    return outcome


MAX_MACHINE_FACTOR = 3.0   # BOOK.md section 3: a machine three times slower must still build the book

#: The recording machine's time for :func:`cpu_benchmark_seconds`, estimated on the CI machine (a 2-core AMD
#: EPYC with AVX2): it runs the benchmark in 0.055 s (median of 10 measurements, 0.044-0.057) and ran the eleven
#: quick chapters 2.38x slower than the recording machine (the median of fresh / recorded quick times while
#: every record came from that machine, issue 22). The recorded quick times themselves can no longer tell
#: machine speed: since issue 21 some chapters are re-recorded on the CI machine, others not.
REFERENCE_BENCHMARK_S = 0.055 / 2.38


def cpu_benchmark_seconds(repeats: int = 21) -> float:
    """Median seconds of a fixed CPU workload of the chapters' kind (float32 matmuls and convolutions in
    torch, a numpy sort), after one warm-up run."""
    import time

    import numpy as np
    import torch
    import torch.nn.functional as F

    def workload():
        g = torch.Generator().manual_seed(0)
        a = torch.randn(384, 384, generator=g)
        for _ in range(12):
            a = torch.tanh(a @ a / 20.0)
        x, w = torch.randn(32, 16, 32, 32, generator=g), torch.randn(32, 16, 3, 3, generator=g)
        for _ in range(6):
            F.conv2d(x, w, padding=1).relu_().sum()
        np.sort(np.random.default_rng(0).random(400_000))

    workload()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        workload()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def factor_from_benchmark(seconds: float, reference: float = REFERENCE_BENCHMARK_S) -> float:
    """This machine's slowness against the recording machine, clipped to [1, MAX_MACHINE_FACTOR]."""
    return float(min(MAX_MACHINE_FACTOR, max(1.0, seconds / reference)))


@pytest.fixture(scope="session")
def machine_factor(executed) -> float:
    """How much slower this machine is than the one the budgets of BOOK.md section 3 refer to.

    Measured by :func:`cpu_benchmark_seconds` against :data:`REFERENCE_BENCHMARK_S`, clipped to [1, 3]:
    a faster machine never loosens a budget, and a machine more than 3x slower fails every budget it
    misses. The fresh / recorded ratio of each chapter is printed beside it, as a diagnostic only.
    """
    import warnings

    from iclr_lib.book.dashboard import load_recorded

    seconds = cpu_benchmark_seconds()
    factor = factor_from_benchmark(seconds)
    recorded = load_recorded(ROOT / "book" / "results")["quick"]
    ratios = {}
    for name, run in executed.items():
        if run["error"] is None and run["results"].is_file() and name in recorded:
            fresh = json.loads(run["results"].read_text())["meta"]["run_time_s"]
            ratios[name] = fresh / recorded[name]["meta"]["run_time_s"]
    if factor > 1.0:
        warnings.warn(f"this machine runs the CPU benchmark in {seconds:.3f} s, {factor:.2f}x the recording "
                      f"machine's estimated {REFERENCE_BENCHMARK_S:.3f} s; quick-mode budgets are scaled by "
                      f"{factor:.2f} (fresh / recorded quick times: "
                      f"{', '.join(f'{n[:2]}: {r:.2f}' for n, r in sorted(ratios.items()))})", stacklevel=1)
    return factor


def test_machine_factor_is_clipped_to_one_and_three():
    """The scaling rule itself (it must not loosen a budget on a fast machine or hide a very slow one)."""
    assert factor_from_benchmark(0.5 * REFERENCE_BENCHMARK_S) == 1.0
    assert factor_from_benchmark(2.0 * REFERENCE_BENCHMARK_S) == pytest.approx(2.0)
    assert factor_from_benchmark(7.0 * REFERENCE_BENCHMARK_S) == MAX_MACHINE_FACTOR
    assert 0 < cpu_benchmark_seconds(repeats=1) < 60


@pytest.mark.chapters
@pytest.mark.parametrize("name", CHAPTERS)
def test_chapter_runs_in_quick_mode_within_budget(executed, machine_factor, name):
    run = executed[name]
    assert run["error"] is None, f"{name} failed in quick mode: {run['error']}"
    assert run["results"].is_file(), f"{name} did not save its RESULTS (call RESULTS.save())"
    budget = QUICK_BUDGET_S.get(name, 90)
    assert run["seconds"] <= budget * machine_factor, (
        f"{name} took {run['seconds']:.0f} s in quick mode (budget {budget} s on the recording machine, "
        f"x {machine_factor:.2f} for this machine)")


@pytest.fixture(scope="session")
def quick_build(executed, book_copy):
    """The reader's build (:class:`iclr_lib.book.build.Build`) of the book's copy in quick mode, its cache
    filled with the chapters that the papermill runs above executed, so CI runs each chapter once."""
    from iclr_lib.book.build import Build

    assert all(run["error"] is None for run in executed.values()), "a chapter failed; see its own test"
    (book_copy / "requirements.txt").write_text((ROOT / "requirements.txt").read_text())
    build = Build(book_copy, "quick")
    for name, run in executed.items():
        build.store(name, run["notebook"], run["results"])
    return build


@pytest.fixture(scope="session")
def built_html(quick_build) -> Path:
    """Render the book (quick mode, warnings are errors) the reader's way, once; the folder of its HTML.

    :meth:`Build.render` assembles the executed chapters, writes the first page's dashboard from this
    build's records and runs ``jupyter-book build -W -n --keep-going`` with ``execute_notebooks: off``.
    """
    code = quick_build.render(log=lambda *a, **kw: None)    # (it drops MPLBACKEND: figures render inline)
    assert code == 0, "jupyter-book build failed (its log is above, in the captured output)"
    html = quick_build.site()
    artifacts = os.environ.get("ICLR_LIB_BOOK_ARTIFACTS")
    if artifacts:
        shutil.copytree(html, artifacts, dirs_exist_ok=True)
    return html


@pytest.mark.chapters
def test_a_rebuild_with_nothing_changed_executes_nothing(quick_build):
    """The populated cache is complete and current: the reader's next build would execute no chapter, and
    a full-mode build of the same checkout would never reuse these quick-mode entries."""
    from iclr_lib.book.build import Build

    assert quick_build.plan() == {name: [] for name in CHAPTERS}
    full = Build(quick_build.root, "full").plan()
    assert all(why == ["not executed yet"] for why in full.values()), full


def test_reader_config_executes_every_chapter():
    """A plain `jupyter-book build .` (not the README's way) still executes every chapter, with no
    per-cell time-out; the README's build executes them itself and renders with execution off."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert config["execute"]["execute_notebooks"] in {"force", "cache", "auto"}
    assert config["execute"]["raise_on_error"] is True
    assert config["execute"]["timeout"] == -1


@pytest.mark.chapters
def test_the_book_builds_without_warnings_in_quick_mode(built_html):
    for name in CHAPTERS:
        page = (built_html / "book" / f"{name}.html").read_text()
        assert "<img" in page and "_images/" in page, f"{name}: no figures rendered"
        assert "colab.research.google.com" in page, f"{name}: no Colab launch link"
        assert "Traceback (most recent call last)" not in page and "output traceback" not in page, (
            f"{name}: the rendered page shows an error output")
        assert "cdn.jsdelivr.net/npm/mathjax" not in page, f"{name}: MathJax must be served with the book"
    assert (built_html / "_static" / "mathjax" / "tex-mml-chtml.js").is_file()


@pytest.mark.chapters
def test_recorded_results_match_the_chapters(executed):
    """The dashboard's records come from the current chapters: the same claims (ids, headline, metrics)
    as the fresh quick-mode run, or, for chapters not yet under the protocol, the same headline."""
    from iclr_lib.book.dashboard import PENDING, load_recorded

    def signature(results, name):
        if name in PENDING:
            head = results["headline"]
            return [(head["claim"], head["metric"])]
        return [(c["id"], c["headline"], c["ours_only"], c["kind"], c["metric"], c["paper"]) for c in results["claims"]]

    recorded = load_recorded(ROOT / "book" / "results")
    for name in CHAPTERS:
        fresh = signature(json.loads(executed[name]["results"].read_text())["results"], name)
        for mode in ("full", "quick"):
            assert name in recorded[mode], (f"{name}: no recorded {mode}-mode results; run "
                                            f"`python -m iclr_lib.book.dashboard run --mode {mode} --chapters {name}`")
            old = signature(recorded[mode][name]["results"], name)
            assert old == fresh, f"{name}: the recorded {mode}-mode claims are stale; rerun the dashboard's `run`"


@pytest.mark.chapters
def test_recorded_numbers_match_the_chapters_within_their_noise(executed):
    """The committed quick-mode records hold the numbers the chapters compute now: every claim's mean of
    the fresh run within its noise of the recorded one (:func:`iclr_lib.book.dashboard.number_differences`,
    4 standard errors of the difference, the noise estimated from the seeds of both quick runs and of
    the full-mode record). On the recording machine the two runs agree exactly."""
    from iclr_lib.book.dashboard import load_recorded, number_differences

    recorded = load_recorded(ROOT / "book" / "results")
    found = []
    for name in CHAPTERS:
        fresh = json.loads(executed[name]["results"].read_text())
        found += number_differences(fresh, recorded["quick"][name], recorded["full"].get(name))
    assert not found, ("numbers differ from the quick-mode records (re-record with `python -m "
                       "iclr_lib.book.dashboard run --mode quick --chapters ...`):\n" + "\n".join(found))


# ----------------------------------------------------------------------------- a real browser
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=20000"]

# Injected by the test server (never part of the book): once the page and MathJax are done, write a
# JSON report into the DOM for `chromium --dump-dom` to return.
PROBE = """<script>
window.addEventListener("load", async () => {
  if (window.MathJax && MathJax.startup) { await MathJax.startup.promise; }
  const local = [...document.images].filter(i => i.src.startsWith(location.origin));
  const report = {
    typeset: document.querySelectorAll("mjx-container").length,
    untypeset: [...document.querySelectorAll(".math")].filter(e => !e.querySelector("mjx-container")).length,
    figures: local.filter(i => i.complete && i.naturalWidth > 0).length,
    broken: local.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src),
    colab: [...document.querySelectorAll("a")].some(a => a.href.startsWith("https://colab.research.google.com/github/")),
    errors: document.querySelectorAll(".output.traceback, .output.error, .output.stderr").length
            + (document.body.innerText.includes("Traceback (most recent call last)") ? 1 : 0),
  };
  const pre = document.createElement("pre");
  pre.id = "iclr-probe";
  pre.textContent = JSON.stringify(report);
  document.body.appendChild(pre);
});
</script>"""


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="session")
def served_html(built_html):
    """Serve the built book on 127.0.0.1; pages requested with ``?probe`` get the PROBE script."""
    import functools
    import http.server
    import threading

    class Handler(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            path, _, query = self.path.partition("?")
            if query == "probe" and path.endswith(".html"):
                body = (built_html / path.lstrip("/")).read_text().replace("</body>", PROBE + "</body>").encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Handler, directory=str(built_html)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.chapters
@pytest.mark.parametrize("page", ["book/intro", *[f"book/{name}" for name in CHAPTERS]])
def test_pages_in_a_real_browser(served_html, page, tmp_path):
    """Headless Chromium shows every page with its figures, typeset math (offline), the Colab link
    and no error output; a screenshot of each page is kept as a CI artefact."""
    chromium = _chromium()
    if chromium is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs Chromium for the browser test (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium: `apt-get install chromium` to run the browser test")
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--dump-dom", f"{served_html}/{page}.html?probe"],
                         capture_output=True, text=True, timeout=120).stdout
    probe = re.search(r'<pre id="iclr-probe"[^>]*>(.*?)</pre>', dom, re.DOTALL)   # the theme may add attributes
    assert probe, f"{page}: the page did not finish loading in Chromium"
    report = json.loads(html_lib.unescape(probe.group(1)))
    assert report["broken"] == [], f"{page}: images that did not load: {report['broken']}"
    assert report["figures"] >= 1, f"{page}: no figure shown"
    assert report["errors"] == 0, f"{page}: error output on the page"
    if page != "book/intro":
        assert report["colab"], f"{page}: no Colab launch link"
        assert report["typeset"] > 0 and report["untypeset"] == 0, f"{page}: math not typeset: {report}"
    screenshots = Path(os.environ.get("ICLR_LIB_SCREENSHOTS", tmp_path / "screenshots"))
    screenshots.mkdir(parents=True, exist_ok=True)
    shot = screenshots / f"{Path(page).name}.png"
    subprocess.run([chromium, *CHROMIUM_FLAGS, *profile, "--window-size=1280,3600", f"--screenshot={shot}",
                    f"{served_html}/{page}.html"], capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, f"{page}: no (or a blank) screenshot"
