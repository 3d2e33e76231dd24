"""Get a registered data file onto local disk, verified.

Lookup order for every file (BOOK.md, section 4):

1. the cache, ``$ICLR_LIB_DATA`` (default ``~/.cache/iclr_lib``): used when its sha256 matches;
   a corrupted cached file is deleted and fetched again;
2. an offline mirror, ``$ICLR_LIB_DATA_MIRROR``: a folder laid out like the book's ``shared/data``
   (``<mirror>/<dataset>/<path>``), copied into the cache;
3. the canonical public URL in the registry (a plain file, or a member of a ``.zip``/``.tar.gz``);
4. otherwise :class:`DataUnavailableError`, naming the dataset, the URL and both variables.

Every copy and download is written to a temporary file next to its target, its sha256 checked,
and only then renamed into place, so an interrupted or corrupted transfer never leaves a partial
file in the cache.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Iterable

from .registry import DATASETS, DataFile, Dataset

CACHE_ENV = "ICLR_LIB_DATA"
MIRROR_ENV = "ICLR_LIB_DATA_MIRROR"
_CHUNK = 1 << 20


class DataUnavailableError(RuntimeError):
    """No source (cache, mirror, download) could provide a verified copy of a data file."""


def cache_dir() -> Path:
    """The cache root: ``$ICLR_LIB_DATA``, else ``$XDG_CACHE_HOME/iclr_lib``, else ``~/.cache/iclr_lib``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "iclr_lib"


def mirror_dir() -> Path | None:
    """The offline mirror root from ``$ICLR_LIB_DATA_MIRROR``, or ``None`` when unset."""
    value = os.environ.get(MIRROR_ENV)
    return Path(value).expanduser() if value else None


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def get_dataset(name: str) -> Dataset:
    """The registry entry called ``name`` (see :data:`iclr_lib.data.DATASETS`)."""
    if not isinstance(name, str) or name not in DATASETS:
        known = ", ".join(sorted(DATASETS))
        raise KeyError(f"dataset={name!r} is not registered; known datasets: {known}")
    return DATASETS[name]


def fetch(dataset: str | Dataset, files: Iterable[str] | None = None, *, verbose: bool = True) -> Path:
    """Make ``files`` of ``dataset`` (default: all of them) present and verified in the cache.

    Args:
        dataset: a registered name such as ``"movielens"``, or a :class:`Dataset`.
        files: paths relative to the dataset folder (e.g. ``["ml-100k/u.data"]``), or a folder
            prefix such as ``"ml-100k/"`` to take every file below it.
        verbose: print one line per file that is copied or downloaded.

    Returns:
        The dataset's folder in the cache; ``fetch(...) / path`` is the verified file.
    """
    ds = get_dataset(dataset) if isinstance(dataset, str) else dataset
    if not isinstance(ds, Dataset):
        raise TypeError(f"dataset must be a registered name or a Dataset, got {type(dataset).__name__}")
    wanted = ds.select(files)
    target_root = cache_dir() / ds.name
    archives: dict[str, Path] = {}
    with tempfile.TemporaryDirectory(prefix="iclr_lib_archives_") as archive_tmp:
        for entry in wanted:
            _ensure(ds, entry, target_root, archives, Path(archive_tmp), verbose)
    return target_root


def _ensure(ds: Dataset, entry: DataFile, root: Path, archives: dict[str, Path],
            archive_tmp: Path, verbose: bool) -> None:
    target = root / entry.path
    if target.exists():
        if sha256_of(target) == entry.sha256:
            return
        if verbose:
            print(f"[iclr_lib.data] {ds.name}/{entry.path}: cached copy is corrupted; fetching it again")
        target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []

    mirror = mirror_dir()
    if mirror is not None:
        source = mirror / ds.name / entry.path
        if source.is_file():
            try:
                _install(target, entry, lambda out: shutil.copyfile(source, out))
                if verbose:
                    print(f"[iclr_lib.data] {ds.name}/{entry.path}: copied from the mirror {mirror}")
                return
            except (OSError, ValueError) as exc:
                failures.append(f"mirror {source}: {exc}")
        else:
            failures.append(f"mirror {source}: no such file")
    else:
        failures.append(f"mirror: ${MIRROR_ENV} is not set")

    if entry.url:
        try:
            if entry.member is None:
                _install(target, entry, lambda out: _download(entry.url, out))
            else:
                archive = _archive(entry.url, archives, archive_tmp)
                _install(target, entry, lambda out: _extract(archive, entry.member, out))
            if verbose:
                print(f"[iclr_lib.data] {ds.name}/{entry.path}: downloaded from {entry.url}")
            return
        except (OSError, ValueError, urllib.error.URLError, zipfile.BadZipFile, tarfile.TarError, KeyError) as exc:
            failures.append(f"download {entry.url}: {exc}")
    else:
        failures.append(f"download: no public URL is registered ({ds.note or 'see the registry'})")

    raise DataUnavailableError(
        f"Could not get {entry.path!r} of dataset {ds.name!r} ({ds.title}).\n"
        f"  canonical URL: {entry.url or '(none)'}\n"
        f"  tried:\n    - " + "\n    - ".join(failures) + "\n"
        f"  Fix: connect to the internet, or point ${MIRROR_ENV} at a folder that holds "
        f"{ds.name}/{entry.path} (laid out like the book's shared/data), or place the verified file at "
        f"{target} (the cache, ${CACHE_ENV})."
    )


def _install(target: Path, entry: DataFile, write) -> None:
    """Write via ``write(temp_path)``, verify size and sha256, then rename into ``target``."""
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(handle)
    temp = Path(temp_name)
    try:
        write(temp)
        size = temp.stat().st_size
        if size != entry.size:
            raise ValueError(f"size {size} bytes, expected {entry.size} (truncated or wrong file)")
        digest = sha256_of(temp)
        if digest != entry.sha256:
            raise ValueError(f"sha256 {digest} does not match the registered {entry.sha256}")
        os.replace(temp, target)
    finally:
        if temp.exists():
            temp.unlink()


def _download(url: str, out: Path, timeout: float = 60.0) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "iclr_lib"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(out, "wb") as handle:
        shutil.copyfileobj(response, handle, _CHUNK)


def _archive(url: str, archives: dict[str, Path], archive_tmp: Path) -> Path:
    """Download an archive once per :func:`fetch` call (kept in a temporary folder)."""
    if url not in archives:
        path = archive_tmp / f"archive_{len(archives)}_{Path(url).name}"
        _download(url, path)
        archives[url] = path
    return archives[url]


def _extract(archive: Path, member: str, out: Path) -> None:
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf, zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
        return
    with tarfile.open(archive) as tf:
        src = tf.extractfile(member)
        if src is None:
            raise ValueError(f"{member!r} in {archive.name} is not a regular file")
        with src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)


__all__ = ["CACHE_ENV", "MIRROR_ENV", "DataUnavailableError", "cache_dir", "mirror_dir", "fetch",
           "get_dataset", "sha256_of"]
