"""iclr_lib: the companion package of "Amazon @ ICLR 2022, re-implemented".

One module per chapter (``iclr_lib.item_cf``, ...) plus a few shared helpers:

- :mod:`iclr_lib.runtime`: seeding, device choice, quick mode;
- :mod:`iclr_lib.results`: the ``RESULTS`` recorder that writes ``<chapter>.json``;
- :mod:`iclr_lib.plotting`: the book's matplotlib style;
- :mod:`iclr_lib.data`: the dataset registry and verified fetcher;
- :mod:`iclr_lib.exercises`: self-checks for the coding exercises.

Importing the package is cheap: submodules (and torch) load only when you import them.
"""
__version__ = "0.1.0"

#: Where the book's sources live; Colab install cells install ``git+REPOSITORY_URL@v<version>``.
#: ``tests/test_colab_cells.py`` checks this against ``_config.yml`` and every chapter.
REPOSITORY_URL = "https://github.com/iclr-lib/amazon-iclr2022-book"

__all__ = ["__version__", "REPOSITORY_URL"]
