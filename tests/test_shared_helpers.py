"""Seeding, quick mode, the results recorder, the plotting style and the shared network block."""
from __future__ import annotations

import json
import random
import subprocess
import sys

import numpy as np
import pytest

from iclr_lib.book.results import Results, load_results
from iclr_lib.runtime import median_seconds, quick_mode, seed_everything


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_quick_mode_reads_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv("ICLR_LIB_QUICK", value)
    assert quick_mode() is expected


def test_quick_mode_rejects_garbage(monkeypatch):
    monkeypatch.setenv("ICLR_LIB_QUICK", "maybe")
    with pytest.raises(ValueError, match="ICLR_LIB_QUICK"):
        quick_mode()


def test_seeding_makes_random_numbers_repeat():
    import torch

    def draw():
        rng = seed_everything(123)
        return random.random(), np.random.rand(), torch.rand(1).item(), rng.random()

    assert draw() == draw()
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_results_are_saved_as_json(tmp_path, monkeypatch):
    monkeypatch.setenv("ICLR_LIB_RESULTS_DIR", str(tmp_path))
    results = Results("04_item_to_item_cf", quick=True)
    results["hr"] = np.float32(0.5)
    results["table"] = {"a": np.arange(3), "b": float("nan")}
    path = results.save()
    data = load_results(path)
    assert path.name == "04_item_to_item_cf.json"
    assert data["results"] == {"hr": 0.5, "table": {"a": [0, 1, 2], "b": None}}
    assert data["meta"]["mode"] == "quick" and data["meta"]["run_time_s"] >= 0
    monkeypatch.delenv("ICLR_LIB_RESULTS_DIR")
    assert Results("x", quick=False).save() is None
    json.dumps(data)


def test_importing_the_package_is_light():
    code = "import sys, iclr_lib; print(sorted(m for m in ('torch', 'matplotlib', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_book_style_applies():
    import matplotlib as mpl

    from iclr_lib.plotting import use_book_style

    use_book_style()
    assert mpl.rcParams["axes.spines.top"] is False


def test_median_seconds_calls_the_function_repeats_times_and_takes_the_median():
    calls = []
    assert median_seconds(lambda: calls.append(1), repeats=5) >= 0.0 and len(calls) == 5
    with pytest.raises(ValueError, match="repeats"):
        median_seconds(lambda: None, repeats=0)


def test_basic_block_shapes_and_identity_shortcut():
    import torch

    from iclr_lib.nets import BasicBlock

    same, down = BasicBlock(4, 4, 1), BasicBlock(4, 8, 2)
    x = torch.randn(2, 4, 8, 8)
    assert same(x).shape == (2, 4, 8, 8) and down(x).shape == (2, 8, 4, 4)
    assert isinstance(same.shortcut, torch.nn.Identity) and not isinstance(down.shortcut, torch.nn.Identity)
    assert (down(x) >= 0).all()                        # ends with a ReLU
