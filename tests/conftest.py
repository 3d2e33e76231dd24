"""Shared fixtures. The offline mirror (``$ICLR_LIB_DATA_MIRROR``) defaults to ``../shared/data``."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    default_mirror = ROOT.parent / "shared" / "data"
    if not os.environ.get("ICLR_LIB_DATA_MIRROR") and default_mirror.is_dir():
        os.environ["ICLR_LIB_DATA_MIRROR"] = str(default_mirror)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A fresh, empty data cache for one test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ICLR_LIB_DATA", str(cache))
    return cache


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline mirror; required in CI, skipped (with the reason) for readers without one."""
    value = os.environ.get("ICLR_LIB_DATA_MIRROR")
    if not value or not Path(value).is_dir():
        if os.environ.get("CI"):
            pytest.fail("CI must set ICLR_LIB_DATA_MIRROR to the offline data (../shared/data)")
        pytest.skip("no offline mirror: set ICLR_LIB_DATA_MIRROR to test against it")
    return Path(value)
