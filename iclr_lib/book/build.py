"""The reader's build: execute the chapters (cached), write the dashboard from this build's records, render.

Commands (run from the repository root)::

    python -m iclr_lib.book.build            # the book: every chapter in full mode -> _build/html
    python -m iclr_lib.book.build --quick    # the authors' preview: every chapter in quick mode -> _build/quick/html
    python -m iclr_lib.book.build --chapters 01_cold_brew 08_trans_encoder   # execute only these, no rendering

Three steps, each one visible:

1. **Execute** each chapter of ``_toc.yml`` with papermill, one after the other, with a line per chapter
   (``[3/11] 03_grda (full): executing; 2 done, 0 failed, 31 min 10 s elapsed``) and papermill's bar of
   cells. Full mode has no per-cell time-out (a slow laptop must finish); quick mode keeps one
   (:data:`QUICK_CELL_TIMEOUT_S`) as a hang detector. A failing chapter does not stop the others.
2. **Cache.** An executed chapter is kept in ``_build/<mode>/executed/`` with its record (``RESULTS``)
   and its key: the code cells of the notebook, the mode, the source of every ``iclr_lib`` module the
   chapter imports (directly or through other modules) and the versions of the recorded packages
   (:func:`cache_key`). The next build reuses it while the key is unchanged: a rebuild with nothing
   changed executes nothing, an edit of one chapter re-executes that chapter only, an edit of its
   markdown re-executes nothing (the cached outputs are merged into the current notebook, as
   jupyter-cache does). Quick and full mode never share an entry: they live in different folders and
   the mode is part of the key.
3. **Render.** The book is assembled in ``_build/<mode>/source`` from the executed notebooks, the first
   page's dashboard is written from *this build's* records (so every page of one built book shows the
   same numbers), and ``jupyter-book build -W -n --keep-going`` renders it without executing anything.

At the end a table gives every chapter's status (executed, cached, failed) and run time; the command
exits non-zero when any chapter failed (the site is then not rendered) or the rendering failed.
"""
from __future__ import annotations

import argparse
import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from . import dashboard
from .dashboard import _duration
from .results import installed_versions

MODES = ("full", "quick")
#: Quick mode's hang detector: no quick-mode cell runs anywhere near this long (the longest chapter, 08,
#: takes about 3 minutes in all). Full mode has no per-cell limit.
QUICK_CELL_TIMEOUT_S = 900
#: Bumped when the cache layout or the key's recipe changes (old entries are then re-executed).
CACHE_VERSION = 1
PACKAGE = "iclr_lib"


def cell_timeout(mode: str) -> int | None:
    """Seconds a single cell may run in ``mode``: :data:`QUICK_CELL_TIMEOUT_S` in quick mode, no limit in full."""
    _check_mode(mode)
    return QUICK_CELL_TIMEOUT_S if mode == "quick" else None


def busy_machine_hint(load: float | None = None, cores: int | None = None,
                      environ: dict[str, str] | None = None) -> str | None:
    """A hint to set ``OMP_WAIT_POLICY=PASSIVE`` when other work already keeps every core busy (the
    1-minute load average is at least the number of cores) and the variable is unset; else ``None``.

    Under such load PyTorch's OpenMP threads lose much of their time spinning while they wait for each
    other: chapter 8's seeds ran 2.8 times faster with ``PASSIVE`` (setup.md). On an idle machine the
    setting costs time, so the build only suggests it and never sets it itself.
    """
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" in environ:
        return None
    try:
        load = os.getloadavg()[0] if load is None else load
    except (AttributeError, OSError):  # no load average (Windows)
        return None
    cores = (os.cpu_count() or 1) if cores is None else cores
    if load < cores:
        return None
    return (f"note: this machine is already busy (load average {load:.1f} on {cores} cores). PyTorch's threads "
            "then waste much of their time waiting; starting the build as `OMP_WAIT_POLICY=PASSIVE python -m "
            "iclr_lib.book.build ...` made chapter 8's seeds about 2.8 times faster under such load (book/setup.md).")


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def toc_files(root: str | os.PathLike) -> list[str]:
    """Every file that ``<root>/_toc.yml`` lists (without suffix), the root page first, in reading order."""
    toc = yaml.safe_load((Path(root) / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    return files


# ----------------------------------------------------------------------------- the cache key
def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def code_cells(notebook: dict[str, Any]) -> list[str]:
    """The sources of a notebook's code cells, in order (what the outputs depend on)."""
    return ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in notebook["cells"] if c["cell_type"] == "code"]


def _parse(source: str) -> ast.AST | None:
    """Python source of a module or a notebook cell (IPython magics and shell lines dropped)."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return None


def _imported(tree: ast.AST | None, module: str, is_package: bool) -> set[str]:
    """Dotted names under ``iclr_lib`` that ``tree`` (the code of ``module``) imports, candidates included:
    ``from iclr_lib import giant`` yields ``iclr_lib`` and ``iclr_lib.giant``."""
    found: set[str] = set()
    for node in ast.walk(tree) if tree is not None else ():
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:      # relative: resolve against the importing module's package
                parts = module.split(".")
                base = parts if is_package else parts[:-1]
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found |= {f"{name}.{alias.name}" for alias in node.names}
    return {name for name in found if name == PACKAGE or name.startswith(PACKAGE + ".")}


def _module_file(root: Path, name: str) -> Path | None:
    path = root.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def package_sources(notebook: dict[str, Any], root: Path) -> dict[str, str]:
    """``{module file (relative to root): sha256}`` of every ``iclr_lib`` module the notebook needs.

    The modules the code cells import, the modules those import (absolute or relative imports, at any
    depth), and every package ``__init__.py`` on the way, since importing ``iclr_lib.x`` runs it.
    """
    todo = set()
    for source in code_cells(notebook):
        todo |= _imported(_parse(source), "__main__", False)
    seen: dict[str, str] = {}
    while todo:
        name = todo.pop()
        todo |= {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}   # its packages
        path = _module_file(root, name)
        if path is None:
            continue
        rel = str(path.relative_to(root))
        if rel in seen:
            continue
        source = path.read_text()
        seen[rel] = _sha(source)
        todo |= _imported(_parse(source), name, path.name == "__init__.py")
    return dict(sorted(seen.items()))


def cache_key(notebook_path: str | os.PathLike, mode: str, root: str | os.PathLike | None = None,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """What an executed chapter depends on; a cached execution is reused only when this is unchanged.

    ``root`` is the folder that holds the ``iclr_lib`` package (default: the one the kernel imports,
    this module's); ``env`` the
    package versions (default: :func:`iclr_lib.book.results.installed_versions`). Markdown is not part of the key: it does not change
    any output.
    """
    _check_mode(mode)
    notebook = json.loads(Path(notebook_path).read_text())
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    return {"cache_version": CACHE_VERSION, "mode": mode, "code": _sha(json.dumps(code_cells(notebook))),
            "package": package_sources(notebook, root), "environment": env if env is not None else installed_versions()}


def key_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Why ``old`` is not ``new``, in words (empty when they are equal)."""
    if old is None:
        return ["not executed yet"]
    changes = []
    for field in ("cache_version", "mode", "code"):
        if old.get(field) != new.get(field):
            changes.append({"code": "its code cells changed"}.get(field, f"{field} changed"))
    if old.get("package") != new.get("package"):
        names = sorted(n for n in set(old.get("package", {})) | set(new["package"])
                       if old.get("package", {}).get(n) != new["package"].get(n))
        changes.append("package code changed: " + ", ".join(names))
    if old.get("environment") != new.get("environment"):
        names = sorted(n for n in new["environment"] if old.get("environment", {}).get(n) != new["environment"][n])
        changes.append("environment changed: " + ", ".join(names))
    return changes


# ----------------------------------------------------------------------------- executing
def execute_chapter(notebook: Path, output: Path, mode: str, results_dir: Path | None,
                    progress_bar: bool = True) -> str | None:
    """Run ``notebook`` top to bottom with papermill in ``mode``; the error, or ``None``.

    The executed notebook is written to ``output`` (also when a cell fails: its traceback is there); the
    chapter's ``RESULTS`` go to ``results_dir`` when given. No per-cell time-out in full mode.
    """
    import papermill

    _check_mode(mode)
    saved = {k: os.environ.get(k) for k in ("ICLR_LIB_QUICK", "ICLR_LIB_RESULTS_DIR")}
    os.environ["ICLR_LIB_QUICK"] = "1" if mode == "quick" else "0"
    if results_dir is None:
        os.environ.pop("ICLR_LIB_RESULTS_DIR", None)
    else:
        os.environ["ICLR_LIB_RESULTS_DIR"] = str(Path(results_dir).resolve())
    try:
        papermill.execute_notebook(str(notebook), str(output), cwd=str(notebook.parent), kernel_name="python3",
                                   progress_bar=progress_bar, execution_timeout=cell_timeout(mode))
        return None
    except papermill.PapermillExecutionError as exc:
        return f"cell {exc.exec_count}: {exc.ename}: {exc.evalue}"
    except Exception as exc:        # a dead kernel, a time-out: still one chapter's failure, not the build's
        return f"{type(exc).__name__}: {exc}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _first_line(text: str, width: int = 300) -> str:
    return text.splitlines()[0][:width] if text else text


def merge_outputs(current: dict[str, Any], executed: dict[str, Any]) -> dict[str, Any]:
    """The current notebook with the outputs of a cached execution of the same code cells."""
    if code_cells(current) != code_cells(executed):
        raise ValueError("the cached execution has other code cells than the notebook")
    merged = json.loads(json.dumps(current))
    runs = iter(c for c in executed["cells"] if c["cell_type"] == "code")
    for cell in merged["cells"]:
        if cell["cell_type"] == "code":
            run = next(runs)
            cell["outputs"], cell["execution_count"] = run.get("outputs", []), run.get("execution_count")
    for key in ("papermill", "widgets"):
        if key in executed.get("metadata", {}):
            merged["metadata"][key] = executed["metadata"][key]
    return merged


@dataclass
class Outcome:
    """One chapter of a build."""

    name: str
    status: str               # "executed", "cached" or "failed"
    seconds: float | None     # wall time of this build's execution (None when cached)
    recorded_s: float | None  # the chapter's own run time (its record's run_time_s)
    error: str | None = None
    why: str = ""             # why it was executed


class Build:
    """A build of the book in one mode, rooted at a checkout (``root``, which holds ``_toc.yml``)."""

    def __init__(self, root: str | os.PathLike = ".", mode: str = "full", out: str | os.PathLike | None = None):
        _check_mode(mode)
        self.root, self.mode = Path(root).resolve(), mode
        self.out = Path(out).resolve() if out is not None else self.root / "_build" / mode
        self.cache = self.out / "executed"
        self.source = self.out / "source"

    # -- chapters
    def chapters(self) -> list[str]:
        """The chapter notebooks of ``_toc.yml``, in reading order (``book/01_cold_brew`` -> ``01_cold_brew``)."""
        return [Path(f).name for f in toc_files(self.root) if (self.root / f"{f}.ipynb").is_file()]

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        return self.cache / f"{name}.ipynb", self.cache / f"{name}.json", self.cache / f"{name}.key.json"

    def cached_key(self, name: str) -> dict[str, Any] | None:
        notebook, record, key = self._paths(name)
        if not (notebook.is_file() and record.is_file() and key.is_file()):
            return None
        return json.loads(key.read_text())

    def record(self, name: str) -> dict[str, Any] | None:
        path = self._paths(name)[1]
        return json.loads(path.read_text()) if path.is_file() else None

    def plan(self, names: list[str] | None = None) -> dict[str, list[str]]:
        """``{chapter: why it must be executed}`` for every chapter (or ``names``); ``[]`` means cached."""
        return {name: why for name, (_, why) in self._plan(names).items()}

    def _plan(self, names: list[str] | None) -> dict[str, tuple[dict[str, Any], list[str]]]:
        """``{chapter: (its current key, why it must be executed)}``."""
        chapters = self.chapters()
        names = names or chapters
        unknown = sorted(set(names) - set(chapters))
        if unknown:
            raise ValueError(f"not chapters of _toc.yml: {unknown}; the chapters are {chapters}")
        keys = {name: cache_key(self.notebook(name), self.mode) for name in names}
        return {name: (key, key_changes(self.cached_key(name), key)) for name, key in keys.items()}

    def notebook(self, name: str) -> Path:
        return self.root / "book" / f"{name}.ipynb"

    def store(self, name: str, executed: Path, record: Path, key: dict[str, Any] | None = None) -> None:
        """Put an executed notebook and its record into the cache under ``key`` (default: the current key)."""
        notebook_out, record_out, key_out = self._paths(name)
        self.cache.mkdir(parents=True, exist_ok=True)
        key_out.unlink(missing_ok=True)
        shutil.copy(executed, notebook_out)
        shutil.copy(record, record_out)
        key = key if key is not None else cache_key(self.notebook(name), self.mode)
        key_out.write_text(json.dumps(key, indent=1, sort_keys=True) + "\n")    # last: marks the entry complete

    def execute(self, names: list[str] | None = None, log=print) -> list[Outcome]:
        """Execute every chapter (or ``names``) whose cache entry is missing or stale; one line per chapter."""
        plan = self._plan(names)
        self.cache.mkdir(parents=True, exist_ok=True)
        start, outcomes = time.perf_counter(), []
        for number, (name, (key, why)) in enumerate(plan.items(), 1):
            notebook = self.notebook(name)
            done = sum(o.status != "failed" for o in outcomes)
            failed = sum(o.status == "failed" for o in outcomes)
            head = f"[{number}/{len(plan)}] {name} ({self.mode})"
            tail = f"{done} done, {failed} failed, {_duration(time.perf_counter() - start)} elapsed"
            if not why:
                record = self.record(name)
                outcomes.append(Outcome(name, "cached", None, record["meta"].get("run_time_s")))
                log(f"{head}: cached, unchanged; {tail}", flush=True)
                continue
            log(f"{head}: executing ({'; '.join(why)}); {tail}; started {time.strftime('%H:%M:%S')}", flush=True)
            outcomes.append(self._execute_one(name, notebook, key, "; ".join(why)))
            last = outcomes[-1]
            log(f"{head}: {last.status} in {_duration(last.seconds)}" + (f": {last.error}" if last.error else ""),
                flush=True)
        return outcomes

    def _execute_one(self, name: str, notebook: Path, key: dict[str, Any], why: str) -> Outcome:
        notebook_out, record_out, key_out = self._paths(name)
        failed_dir = self.out / "failed"
        with tempfile.TemporaryDirectory(dir=self.out) as tmp:
            tmp = Path(tmp)
            began = time.perf_counter()
            error = execute_chapter(notebook, tmp / notebook.name, self.mode, tmp / "results")
            seconds = time.perf_counter() - began
            record = tmp / "results" / f"{name}.json"
            if error is None and not record.is_file():
                error = "the chapter saved no RESULTS (RESULTS.save() in its last cell)"
            if error is not None:
                failed_dir.mkdir(exist_ok=True)
                if (tmp / notebook.name).is_file():
                    shutil.copy(tmp / notebook.name, failed_dir / notebook.name)
                for path in (notebook_out, record_out, key_out):   # a stale entry must not stand in for it
                    path.unlink(missing_ok=True)
                return Outcome(name, "failed", seconds, None, _first_line(error), why)
            (failed_dir / notebook.name).unlink(missing_ok=True)
            self.store(name, tmp / notebook.name, record, key)
        payload = json.loads(record_out.read_text())
        return Outcome(name, "executed", seconds, payload["meta"].get("run_time_s"), None, why)

    # -- rendering
    def recorded(self) -> dict[str, dict[str, dict[str, Any]]]:
        """The records the built book shows: this build's for its mode, the committed ones for the other."""
        committed = dashboard.load_recorded(self.root / "book" / "results")
        built = {name: self.record(name) for name in self.chapters()}
        return {**committed, self.mode: {name: p for name, p in built.items() if p is not None}}

    def differences(self) -> list[str]:
        """Claims whose number in this build differs from the committed record beyond its noise."""
        committed = dashboard.load_recorded(self.root / "book" / "results")
        found = []
        for name in self.chapters():
            fresh, old = self.record(name), committed[self.mode].get(name)
            if fresh is not None and old is not None:
                found += dashboard.number_differences(fresh, old, committed["full"].get(name))
        return found

    def stage(self) -> Path:
        """Assemble the book to render in ``self.source``; files are rewritten only when they change, so
        Sphinx re-reads only the pages that changed."""
        def put(path: Path, data: bytes) -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_bytes() != data:
                path.write_bytes(data)

        book = self.root / "book"
        generated = {Path("intro.md"), Path("images") / "dashboard.svg", *(Path(f"{n}.ipynb") for n in self.chapters())}
        wanted = set(generated)
        for path in sorted(book.rglob("*")):
            rel = path.relative_to(book)
            if (path.is_file() and ".ipynb_checkpoints" not in path.parts and rel.parts[0] != "results"
                    and rel not in generated):
                wanted.add(rel)
                put(self.source / "book" / rel, path.read_bytes())
        for name in self.chapters():
            current = json.loads((book / f"{name}.ipynb").read_text())
            executed = json.loads(self._paths(name)[0].read_text())
            put(self.source / "book" / f"{name}.ipynb", json.dumps(merge_outputs(current, executed), indent=1).encode())
        recorded = self.recorded()
        intro = (book / "intro.md").read_text()
        intro = dashboard.render_intro(intro, dashboard.chapter_table(recorded))
        if self.mode == "quick":
            intro = intro.replace(dashboard.START_MARKER, QUICK_NOTE + "\n" + dashboard.START_MARKER)
        put(self.source / "book" / "intro.md", intro.encode())
        with tempfile.TemporaryDirectory() as tmp:
            put(self.source / "book" / "images" / "dashboard.svg",
                dashboard.headline_figure(recorded, Path(tmp) / "dashboard.svg").read_bytes())
        for path in sorted((self.source / "book").rglob("*"), reverse=True):       # files removed from the book
            rel = path.relative_to(self.source / "book")
            if path.is_file() and rel not in wanted:
                path.unlink()
        config = yaml.safe_load((self.root / "_config.yml").read_text())
        config["execute"]["execute_notebooks"] = "off"    # executed above, with its progress and its cache
        put(self.source / "_config.yml", yaml.safe_dump(config, sort_keys=False).encode())
        put(self.source / "_toc.yml", (self.root / "_toc.yml").read_bytes())
        return self.source

    def site(self) -> Path:
        """Where the rendered site lands: ``_build/html`` for the book, ``_build/quick/html`` for the preview."""
        return self.root / "_build" / "html" if self.mode == "full" else self.out / "html"

    def render(self, log=print) -> int:
        """Render the staged book (warnings are errors) and copy the site to :meth:`site`; the return code."""
        source = self.stage()
        cli = Path(sys.executable).with_name("jupyter-book")
        command = [str(cli) if cli.exists() else "jupyter-book", "build", str(source), "-W", "-n", "--keep-going",
                   "--path-output", str(self.out / "render")]
        env = {k: v for k, v in os.environ.items() if k not in ("ICLR_LIB_RESULTS_DIR", "MPLBACKEND")}
        log(f"rendering: {' '.join(command[1:])}", flush=True)
        done = subprocess.run(command, env=env)
        if done.returncode != 0:
            return done.returncode
        html, site = self.out / "render" / "_build" / "html", self.site()
        if site.exists():
            shutil.rmtree(site)
        shutil.copytree(html, site)
        return 0


QUICK_NOTE = """:::{note}
This is the **quick preview** (`python -m iclr_lib.book.build --quick`): every chapter ran in quick mode
(fewer seeds, epochs and samples), so the chapters' numbers are quick-mode numbers. The tables below
show the recorded full-mode runs of `book/results/full/`, as the book does, beside this build's quick
verdicts.
:::
"""


def summary(outcomes: list[Outcome], mode: str) -> str:
    """The per-chapter table printed at the end of a build."""
    lines = [f"{'chapter':<30} {'status':<9} {'this build':>12} {'its run time':>13}  note"]
    for o in outcomes:
        note = o.error or o.why
        lines.append(f"{o.name:<30} {o.status:<9} {_duration(o.seconds):>12} {_duration(o.recorded_s):>13}  {note}")
    counts = {s: sum(o.status == s for o in outcomes) for s in ("executed", "cached", "failed")}
    total = sum(o.seconds or 0.0 for o in outcomes)
    lines.append(f"{len(outcomes)} chapters ({mode} mode): {counts['executed']} executed, {counts['cached']} cached, "
                 f"{counts['failed']} failed; executing took {_duration(total)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iclr_lib.book.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the authors' preview: every chapter in quick mode")
    parser.add_argument("--chapters", nargs="+", metavar="NAME",
                        help="execute only these chapters (e.g. 08_trans_encoder) and do not render")
    parser.add_argument("--root", default=".", help="the checkout (default: the current folder)")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    build = Build(args.root, mode)
    began = time.perf_counter()
    hint = busy_machine_hint()
    if hint:
        print(hint, file=sys.stderr)
    mismatch = dashboard.installed_version_problems(dashboard.pinned_versions(build.root / "requirements.txt"))
    if mismatch:
        print("note: this environment is not the pinned one of requirements.txt; the book's numbers may differ "
              "from the recorded ones\n- " + "\n- ".join(mismatch), file=sys.stderr)
    try:
        outcomes = build.execute(args.chapters)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print("\n" + summary(outcomes, mode), flush=True)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        print(f"\n{len(failed)} chapter(s) failed; the site is not rendered. Their executed notebooks, with the "
              f"traceback, are in {build.out / 'failed'}:\n" + "\n".join(f"- {o.name}: {o.error}" for o in failed),
              file=sys.stderr)
        return 1
    if args.chapters:
        print(f"executed the chapters asked for; render the book with `python -m iclr_lib.book.build"
              f"{' --quick' if args.quick else ''}` (cached chapters are reused)")
        return 0
    for line in build.differences():
        print(f"note: {line}", file=sys.stderr)
    code = build.render()
    total = _duration(time.perf_counter() - began)
    if code:
        print(f"the rendering failed (exit {code}) after {total}", file=sys.stderr)
        return code
    print(f"built the book ({mode} mode) in {total}: {build.site() / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
