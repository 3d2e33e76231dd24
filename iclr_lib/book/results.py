"""The ``RESULTS`` recorder: every number a chapter reports, saved as JSON for the book's dashboard."""
from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

RESULTS_ENV = "ICLR_LIB_RESULTS_DIR"
#: The packages whose versions every record stores (the dashboard compares them with requirements.txt).
RECORDED_PACKAGES = ("numpy", "scipy", "scikit-learn", "pandas", "matplotlib", "torch", "torch-geometric",
                     "libpecos", "transformers", "sentence-transformers", "onnx", "pillow")


def _plain(value: Any) -> Any:
    """Convert numpy scalars/arrays and tuples to JSON-friendly Python objects."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def installed_versions(missing: str | None = "not installed") -> dict[str, str]:
    """Python's version and the installed version of each of :data:`RECORDED_PACKAGES`; a package that
    is not installed gets ``missing``, or is left out when ``missing`` is ``None``."""
    import importlib.metadata as md

    versions = {"python": platform.python_version()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = md.version(name)
        except md.PackageNotFoundError:
            if missing is not None:
                versions[name] = missing
    return versions


class Results(dict):
    """A dict of a chapter's results that knows its chapter, mode and start time.

    >>> RESULTS = Results("04_item_to_item_cf", quick=True)
    >>> RESULTS["hr@10"] = 0.7
    >>> path = RESULTS.save()   # writes $ICLR_LIB_RESULTS_DIR/04_item_to_item_cf.json when set
    """

    def __init__(self, chapter: str, quick: bool, **initial: Any) -> None:
        if not chapter or not isinstance(chapter, str):
            raise ValueError(f"chapter must be a non-empty string such as '04_item_to_item_cf', got {chapter!r}")
        super().__init__(**initial)
        self.chapter = chapter
        self.quick = bool(quick)
        self._started = time.perf_counter()

    def metadata(self) -> dict[str, Any]:
        versions = installed_versions(missing=None)
        from .. import __version__

        versions["iclr_lib"] = __version__
        return {"chapter": self.chapter, "mode": "quick" if self.quick else "full",
                "run_time_s": round(time.perf_counter() - self._started, 2),
                "versions": versions, "platform": sys.platform}

    def save(self, directory: str | os.PathLike | None = None) -> Path | None:
        """Write ``<directory>/<chapter>.json`` (``directory`` defaults to ``$ICLR_LIB_RESULTS_DIR``).

        Returns the path written, or ``None`` when no directory is given or configured.
        """
        directory = directory if directory is not None else os.environ.get(RESULTS_ENV)
        if not directory:
            return None
        path = Path(directory) / f"{self.chapter}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"meta": self.metadata(), "results": _plain(dict(self))}
        path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
        return path


def load_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a JSON file written by :meth:`Results.save`."""
    return json.loads(Path(path).read_text())
